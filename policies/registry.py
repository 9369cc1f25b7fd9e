"""Policies by name: the built-ins and any installed under the `phalanx.policies` group.

A policy is a dataclass whose fields are its parameters, with a class attribute `name`;
its kind (ordering, preemption, placement) follows from the methods it has. A third
party ships one as its own distribution:

    [project.entry-points."phalanx.policies"]
    my-order = "my_package.module:MyOrdering"

and selects it by name like a built-in. Parameters are validated (types, unknown keys,
the class's own `__post_init__` checks) and every error names the policy and what exists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Literal, TypeVar, cast

import pydantic

from controller.engine.errors import InvalidInput
from controller.engine.policy import OrderingPolicy, PlacementPolicy, PreemptionPolicy

Kind = Literal["ordering", "preemption", "placement"]
KINDS: tuple[Kind, ...] = ("ordering", "preemption", "placement")
ENTRY_POINT_GROUP = "phalanx.policies"
_METHODS: dict[Kind, str] = {
    "ordering": "order",
    "preemption": "victims",
    "placement": "node_candidates",
}

T = TypeVar("T", bound=type)

_builtin: dict[Kind, dict[str, type]] = {k: {} for k in KINDS}
_external: dict[Kind, dict[str, type]] | None = None


class UnknownPolicy(InvalidInput):
    """A policy name or parameter that does not exist or does not validate."""


@dataclass(frozen=True)
class PolicyRef:
    """A policy chosen by name, with parameters (as written in settings, Queue or scenario)."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @staticmethod
    def parse(value: object, where: str) -> PolicyRef:
        """Accept `"drf"` or `{"name": "drf", "params": {...}}`."""
        if isinstance(value, PolicyRef):
            return value
        if isinstance(value, str) and value:
            return PolicyRef(value)
        if isinstance(value, Mapping) and isinstance(value.get("name"), str):
            extra = sorted(set(value) - {"name", "params"})
            params = value.get("params") or {}
            if extra or not isinstance(params, Mapping):
                raise UnknownPolicy(where, f"expected {{name, params}}, got keys {sorted(value)}")
            return PolicyRef(value["name"], dict(params))
        raise UnknownPolicy(where, f"expected a policy name or {{name, params}}, got {value!r}")


def kind_of(cls: type) -> Kind:
    """The kind a policy class implements, from its methods."""
    found = [k for k in KINDS if callable(getattr(cls, _METHODS[k], None))]
    if len(found) != 1:
        raise InvalidInput(
            f"policy class {cls.__module__}.{cls.__qualname__}",
            "must implement exactly one of order (ordering), victims (preemption), "
            f"node_candidates (placement); found {found or 'none'}",
        )
    return found[0]


def builtin(cls: T) -> T:
    """Class decorator: register a built-in policy under its `name`."""
    _builtin[kind_of(cls)][cls.name] = cls  # type: ignore[attr-defined]
    return cls


def _load_external() -> dict[Kind, dict[str, type]]:
    global _external
    if _external is None:
        found: dict[Kind, dict[str, type]] = {k: {} for k in KINDS}
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            where = f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP})"
            try:
                cls = ep.load()
            except Exception as exc:  # a broken plug-in must name itself, not crash us
                raise InvalidInput(where, f"cannot be loaded: {exc}") from exc
            if not isinstance(cls, type):
                raise InvalidInput(where, "must name a class")
            found[kind_of(cls)][ep.name] = cls
        _external = found
    return _external


def refresh() -> None:
    """Forget loaded entry points (after installing a plug-in into a running process)."""
    global _external
    _external = None


def _ensure_builtins() -> None:
    import policies.ordering
    import policies.placement
    import policies.preemption  # noqa: F401


def available(kind: Kind) -> dict[str, type]:
    """Every selectable policy of `kind` by name; built-ins win over plug-ins."""
    _ensure_builtins()
    return {**_load_external()[kind], **_builtin[kind]}


def params_of(cls: type) -> dict[str, str]:
    """A policy's parameters and their defaults, for help texts and errors."""
    out = {}
    for f in dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ():
        if not f.init or f.name.startswith("_"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        out[f.name] = repr(default)
    return out


def create(kind: Kind, ref: PolicyRef | str, where: str = "policy") -> Any:
    """Build the policy `ref` names; errors list the policies or parameters that exist."""
    ref = PolicyRef.parse(ref, where)
    choices = available(kind)
    cls = choices.get(ref.name)
    if cls is None:
        raise UnknownPolicy(
            f"{where}: {ref.name}",
            f"no {kind} policy of that name; available: {', '.join(sorted(choices))}",
        )
    if not dataclasses.is_dataclass(cls):
        if ref.params:
            raise UnknownPolicy(f"{where}: {ref.name}", "takes no parameters")
        return cls()
    known = params_of(cls)
    unknown = sorted(set(ref.params) - set(known))
    if unknown:
        listed = ", ".join(f"{k} (default {v})" for k, v in known.items()) or "none"
        raise UnknownPolicy(
            f"{where}: {ref.name}",
            f"unknown parameter {', '.join(unknown)}; parameters: {listed}",
        )
    try:
        return pydantic.TypeAdapter(cls).validate_python(dict(ref.params))
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in exc.errors()
        )
        raise UnknownPolicy(f"{where}: {ref.name}", problems) from None


def create_ordering(ref: PolicyRef | str, where: str = "ordering") -> OrderingPolicy:
    return cast(OrderingPolicy, create("ordering", ref, where))


def create_preemption(ref: PolicyRef | str, where: str = "preemption") -> PreemptionPolicy:
    return cast(PreemptionPolicy, create("preemption", ref, where))


def create_placement(ref: PolicyRef | str, where: str = "placement") -> PlacementPolicy:
    return cast(PlacementPolicy, create("placement", ref, where))


CREATORS: dict[Kind, Callable[..., Any]] = {
    "ordering": create_ordering,
    "preemption": create_preemption,
    "placement": create_placement,
}
