"""Policies by name: the built-ins and any installed under the `phalanx.policies` group.

A policy is a dataclass whose fields are its parameters, with a class attribute `name`;
its kind (ordering, preemption, placement) follows from the methods it has. A third
party ships one as its own distribution:

    [project.entry-points."phalanx.policies"]
    my-order = "my_package.module:MyOrdering"

and selects it by name like a built-in. Parameters are validated (JSON types, strictly:
`"3"` is not an int; unknown keys; the class's own `__post_init__` checks) and every
error names the policy and lists what exists. A plug-in that fails to load does not
break the others: selecting it reports why it failed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
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
"""The method that tells a policy's kind."""
_REQUIRED: dict[Kind, tuple[str, ...]] = {
    "ordering": ("order", "observe"),
    "preemption": ("could_help", "victims"),
    "placement": ("for_gang", "topology", "node_candidates", "order_domains"),
}
"""Every method the engine calls on a policy of each kind (the Protocols in engine.policy)."""

T = TypeVar("T", bound=type)

_builtin: dict[Kind, dict[str, type]] = {k: {} for k in KINDS}


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
        if isinstance(value, Mapping) and isinstance(value.get("name"), str) and value["name"]:
            extra = sorted(set(value) - {"name", "params"})
            params = value.get("params") or {}
            if extra or not isinstance(params, Mapping):
                raise UnknownPolicy(where, f"expected {{name, params}}, got keys {sorted(value)}")
            return PolicyRef(value["name"], dict(params))
        raise UnknownPolicy(where, f"expected a policy name or {{name, params}}, got {value!r}")


@dataclass(frozen=True)
class Param:
    """One parameter of a policy, for help texts and errors."""

    name: str
    type: str
    default: Any = dataclasses.MISSING

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    def __str__(self) -> str:
        return f"{self.name}: {self.type}" + ("" if self.required else f" = {self.default!r}")


@dataclass(frozen=True)
class PolicyInfo:
    """What `phalanx policies` lists: one selectable policy."""

    kind: Kind
    name: str
    params: tuple[Param, ...]
    summary: str
    origin: str


def kind_of(cls: type) -> Kind:
    """The kind a policy class implements, from its methods; all the kind's methods and a
    `name` must be there, so a plug-in fails at load, not in the middle of a cycle."""
    where = f"policy class {cls.__module__}.{cls.__qualname__}"
    found = [k for k in KINDS if callable(getattr(cls, _METHODS[k], None))]
    if len(found) != 1:
        raise InvalidInput(
            where,
            "must implement exactly one of order (ordering), victims (preemption), "
            f"node_candidates (placement); found {found or 'none'}",
        )
    kind = found[0]
    missing = [m for m in _REQUIRED[kind] if not callable(getattr(cls, m, None))]
    if missing:
        raise InvalidInput(where, f"{kind} policies must also implement {', '.join(missing)}")
    if not isinstance(getattr(cls, "name", None), str):
        raise InvalidInput(where, "needs a class attribute `name` (a string)")
    return kind


def builtin(cls: T) -> T:
    """Class decorator: register a built-in policy under its `name`."""
    _builtin[kind_of(cls)][cls.name] = cls  # type: ignore[attr-defined]
    return cls


@dataclass
class _Plugins:
    """Policies found under the entry-point group, and entry points that failed."""

    found: dict[Kind, dict[str, type]]
    origin: dict[type, str]
    problems: dict[str, str]


def _origin(ep: EntryPoint) -> str:
    dist = ep.dist
    return f"{ep.value}" + (f" ({dist.name} {dist.version})" if dist is not None else "")


def _scan() -> _Plugins:
    out = _Plugins({k: {} for k in KINDS}, {}, {})
    by_name: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        by_name.setdefault(ep.name, []).append(ep)
    for name in sorted(by_name):
        eps = by_name[name]
        where = f"entry point {name} = {eps[0].value} ({ENTRY_POINT_GROUP})"
        if len({ep.value for ep in eps}) > 1:
            values = ", ".join(sorted({_origin(ep) for ep in eps}))
            out.problems[name] = f"entry point {name} is declared more than once: {values}"
            continue
        try:
            cls = eps[0].load()
            if not isinstance(cls, type):
                raise InvalidInput(where, f"must name a class, not {type(cls).__name__}")
            kind = kind_of(cls)
        except InvalidInput as exc:
            out.problems[name] = str(exc) if exc.where == where else f"{where}: {exc}"
            continue
        except Exception as exc:  # a broken plug-in must name itself, not crash us
            out.problems[name] = f"{where} cannot be loaded: {type(exc).__name__}: {exc}"
            continue
        if name in _builtin[kind]:
            out.problems[name] = f"{where} is shadowed by the built-in {kind} policy {name}"
            continue
        out.found[kind][name] = cls
        out.origin[cls] = _origin(eps[0])
    return out


_plugins: _Plugins | None = None


def _load_external() -> _Plugins:
    global _plugins
    if _plugins is None:
        _ensure_builtins()
        _plugins = _scan()
    return _plugins


def refresh() -> None:
    """Forget loaded entry points (after installing a plug-in into a running process)."""
    global _plugins
    _plugins = None


def _ensure_builtins() -> None:
    import policies.ordering
    import policies.placement
    import policies.preemption  # noqa: F401


def available(kind: Kind) -> dict[str, type]:
    """Every selectable policy of `kind` by name, sorted; plug-ins never shadow built-ins."""
    _ensure_builtins()
    merged = {**_load_external().found[kind], **_builtin[kind]}
    return dict(sorted(merged.items()))


def problems() -> dict[str, str]:
    """Entry points that could not be registered (not loadable, not a policy, a clash)."""
    return dict(_load_external().problems)


def _type_name(hint: object) -> str:
    """`Literal['a', 'b']`, `float | None`, `int`: a parameter's type as a user reads it."""
    if isinstance(hint, str):
        return hint
    if typing.get_origin(hint) is typing.Annotated:
        return _type_name(typing.get_args(hint)[0])
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return repr(hint).replace("typing.", "")


def _param_fields(cls: type) -> list[dataclasses.Field[Any]]:
    if not dataclasses.is_dataclass(cls):
        return []
    return [
        f
        for f in dataclasses.fields(cls)
        if f.init and not f.name.startswith("_") and f.name != "name"
    ]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Parameter annotations resolved in the class's module (aliases such as `Scope`
    become what they stand for). Only parameter fields are resolved: a policy's private
    state may be typed with names imported only for type checking."""
    fields = _param_fields(cls)
    holder = type(cls.__name__, (), {"__annotations__": {f.name: f.type for f in fields}})
    module = sys.modules.get(cls.__module__)
    try:
        return typing.get_type_hints(
            holder,
            globalns=vars(module) if module else {},
            localns=dict(vars(cls)),
            include_extras=True,
        )
    except Exception as exc:
        raise InvalidInput(
            f"policy class {cls.__module__}.{cls.__qualname__}",
            f"cannot resolve its parameter types: {type(exc).__name__}: {exc}",
        ) from None


def parameters(cls: type) -> tuple[Param, ...]:
    """A policy's parameters with their types and defaults."""
    try:
        hints: dict[str, Any] = _hints(cls)
    except InvalidInput:
        hints = {}
    out = []
    for f in _param_fields(cls):
        default: Any = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        out.append(Param(f.name, _type_name(hints.get(f.name, f.type)), default))
    return tuple(out)


def params_of(cls: type) -> dict[str, str]:
    """A policy's parameters and their defaults (`required` where there is none)."""
    return {p.name: "required" if p.required else repr(p.default) for p in parameters(cls)}


@functools.cache
def _adapters(cls: type) -> dict[str, pydantic.TypeAdapter[Any]]:
    """One validator per parameter, from its resolved annotation."""
    try:
        return {name: pydantic.TypeAdapter(hint) for name, hint in _hints(cls).items()}
    except pydantic.PydanticSchemaGenerationError as exc:
        raise InvalidInput(
            f"policy class {cls.__module__}.{cls.__qualname__}",
            f"a parameter type cannot be validated: {exc}",
        ) from None


def _validate(cls: type, params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Parameters as the class's field types want them, strictly as JSON would carry them."""
    values: dict[str, Any] = {}
    errors: list[str] = []
    for key, adapter in _adapters(cls).items():
        if key not in params:
            continue
        raw = params[key]
        try:
            try:
                text = json.dumps(raw)
            except (TypeError, ValueError):  # a Python object given in code, not config
                values[key] = adapter.validate_python(raw, strict=True)
            else:
                values[key] = adapter.validate_json(text, strict=True)
        except pydantic.ValidationError as exc:
            for e in exc.errors():
                path = ".".join([key, *(str(p) for p in e["loc"])])
                errors.append(f"{path}: {e['msg'].lower()} (got {e['input']!r})")
    return values, errors


def _describe_params(cls: type) -> str:
    return ", ".join(str(p) for p in parameters(cls)) or "none"


def create(kind: Kind, ref: PolicyRef | str, where: str = "policy") -> Any:
    """Build the policy `ref` names; errors list the policies or parameters that exist."""
    ref = PolicyRef.parse(ref, where)
    choices = available(kind)
    cls = choices.get(ref.name)
    if cls is None:
        broken = _load_external().problems.get(ref.name)
        if broken is not None:
            raise UnknownPolicy(where, f"{kind} policy {ref.name!r} is unusable: {broken}")
        raise UnknownPolicy(
            where,
            f"no {kind} policy named {ref.name!r}; available: {', '.join(choices) or 'none'}",
        )
    if not dataclasses.is_dataclass(cls):
        if ref.params:
            raise UnknownPolicy(where, f"{kind} policy {ref.name!r} takes no parameters")
        return cls()
    required = [p.name for p in parameters(cls) if p.required and p.name not in ref.params]
    unknown = sorted(set(ref.params) - {p.name for p in parameters(cls)})
    if unknown or required:
        problem = (
            f"unknown parameter {', '.join(map(repr, unknown))}"
            if unknown
            else f"missing parameter {', '.join(map(repr, required))}"
        )
        raise UnknownPolicy(
            where,
            f"{kind} policy {ref.name!r}: {problem}; its parameters: {_describe_params(cls)}",
        )
    values, errors = _validate(cls, ref.params)
    if errors:
        raise UnknownPolicy(where, f"{kind} policy {ref.name!r}: {'; '.join(errors)}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:  # the class's own __post_init__ checks
        raise UnknownPolicy(where, f"{kind} policy {ref.name!r}: {exc}") from None


def _summary(cls: type) -> str:
    """The docstring's first sentence (docstrings wrap, so a first line may stop mid-way)."""
    doc = (cls.__doc__ or "").strip()
    if dataclasses.is_dataclass(cls) and doc.startswith(f"{cls.__name__}("):
        return ""  # the signature dataclasses put there, not a description
    paragraph = " ".join(doc.split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


def describe() -> list[PolicyInfo]:
    """Every selectable policy, by kind then name."""
    plugins = _load_external()
    out = []
    for kind in KINDS:
        for name, cls in available(kind).items():
            origin = plugins.origin.get(cls, "built-in")
            out.append(PolicyInfo(kind, name, parameters(cls), _summary(cls), origin))
    return out


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
