"""The policy registry: selection by name, parameter checks, and plug-ins by entry point."""

from __future__ import annotations

import json
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Literal

import pytest

from controller.engine.errors import InvalidInput
from controller.engine.policy import BinPack, FifoWithinPriority, NoPreemption
from policies import registry, routing
from policies.registry import PolicyRef, UnknownPolicy
from policies.routing import PolicySelection
from tests.builders import cluster, engine, gang
from tests.wide_cli import invoke


@dataclass
class Capped:
    """Priority order, at most `limit` gangs per cycle (a test-local policy)."""

    name = "test-capped"
    limit: int = 10
    weight: float = 1.0
    mode: Literal["strict", "lax"] = "lax"
    levels: tuple[float, ...] = (1.0,)
    _seen: list[str] = field(default_factory=list, init=False)

    def __post_init__(self):
        if self.limit < 0:
            raise ValueError(f"limit must be >= 0, got {self.limit}")

    def order(self, ctx, queue=None):
        for i, g in enumerate(ctx.state.pending_in_order(queue)):
            if i >= self.limit:
                return
            yield g

    def observe(self, gang, admitted):
        self._seen.append(gang.uid)


@dataclass
class NeedsThreshold:
    """A policy with a parameter that has no default."""

    name = "test-needs"
    threshold: float

    def order(self, ctx, queue=None):
        return ctx.state.pending_in_order(queue)

    def observe(self, gang, admitted):
        return None


class FifoAlias(FifoWithinPriority):
    name = "test-fifo"


class NoneAlias(NoPreemption):
    name = "test-none"


class BinPackAlias(BinPack):
    name = "test-bin-pack"


LOCAL = (Capped, NeedsThreshold, FifoAlias, NoneAlias, BinPackAlias)


@pytest.fixture
def local(monkeypatch):
    """Test-local policies registered as built-ins for one test."""
    for cls in LOCAL:
        monkeypatch.setitem(registry._builtin[registry.kind_of(cls)], cls.name, cls)


# The built-ins other modules register ------------------------------------------------


@pytest.mark.parametrize(
    "kind, name",
    [
        ("ordering", "priority"),
        ("ordering", "strict-fifo"),
        ("ordering", "drf"),
        ("preemption", "none"),
        ("preemption", "priority"),
        ("placement", "bin-pack"),
        ("placement", "spread"),
    ],
)
def test_builtin_policy_is_selectable_by_name(kind, name):
    assert type(registry.create(kind, name)).name == name


# PolicyRef ---------------------------------------------------------------------------


def test_parse_takes_a_bare_name():
    assert PolicyRef.parse("drf", "x") == PolicyRef("drf", {})


def test_parse_takes_name_and_params():
    ref = PolicyRef.parse({"name": "las", "params": {"thresholds": [1, 2]}}, "x")
    assert ref == PolicyRef("las", {"thresholds": [1, 2]})


def test_parse_takes_name_without_params():
    assert PolicyRef.parse({"name": "drf"}, "x") == PolicyRef("drf", {})


@pytest.mark.parametrize(
    "value, message",
    [
        ("", "expected a policy name or {name, params}, got ''"),
        (3, "expected a policy name or {name, params}, got 3"),
        ({"params": {}}, "expected a policy name or {name, params}"),
        ({"name": "drf", "parameters": {}}, "got keys ['name', 'parameters']"),
        ({"name": "drf", "params": [1]}, "got keys ['name', 'params']"),
    ],
    ids=["empty", "number", "no-name", "misspelt-params", "params-not-a-map"],
)
def test_parse_rejects_other_shapes_naming_where(value, message):
    with pytest.raises(UnknownPolicy, match=r"^settings\.ordering: ") as err:
        PolicyRef.parse(value, "settings.ordering")
    assert message in str(err.value)


# Names and parameters ----------------------------------------------------------------


def test_unknown_name_lists_every_policy_of_that_kind(local):
    with pytest.raises(UnknownPolicy) as err:
        registry.create("ordering", "test-cappd", "scenario.ordering")
    message = str(err.value)
    assert message.startswith(
        "scenario.ordering: no ordering policy named 'test-cappd'; available: "
    )
    names = message.split("available: ")[1].split(", ")
    assert {"test-capped", "test-needs", "test-fifo"} <= set(names)
    assert names == sorted(names)


def test_a_name_of_another_kind_is_unknown(local):
    with pytest.raises(UnknownPolicy, match="no preemption policy named 'test-capped'"):
        registry.create("preemption", "test-capped")


def test_params_are_applied(local):
    policy = registry.create(
        "ordering", PolicyRef("test-capped", {"limit": 2, "mode": "strict", "levels": [1, 2.5]})
    )
    assert (policy.limit, policy.mode, policy.levels) == (2, "strict", (1.0, 2.5))


def test_omitted_params_take_their_defaults(local):
    policy = registry.create("ordering", "test-capped")
    assert (policy.limit, policy.weight, policy.mode) == (10, 1.0, "lax")


def test_unknown_param_lists_the_parameters_with_defaults(local):
    with pytest.raises(UnknownPolicy) as err:
        registry.create("ordering", PolicyRef("test-capped", {"limt": 2}), "ordering")
    assert str(err.value) == (
        "ordering: ordering policy 'test-capped': unknown parameter 'limt'; its parameters: "
        "limit: int = 10, weight: float = 1.0, mode: Literal['strict', 'lax'] = 'lax', "
        "levels: tuple[float, ...] = (1.0,)"
    )


def test_private_state_and_name_are_not_parameters(local):
    for key in ("_seen", "name"):
        with pytest.raises(UnknownPolicy, match=f"unknown parameter '{key}'"):
            registry.create("ordering", PolicyRef("test-capped", {key: []}))


@pytest.mark.parametrize(
    "params, message",
    [
        ({"limit": "3"}, "limit: input should be a valid integer (got '3')"),
        ({"limit": True}, "limit: input should be a valid integer (got True)"),
        ({"limit": 2.5}, "limit: input should be a valid integer (got 2.5)"),
        ({"weight": "heavy"}, "weight: input should be a valid number (got 'heavy')"),
        ({"mode": "loose"}, "mode: input should be 'strict' or 'lax' (got 'loose')"),
        ({"levels": [1, "x"]}, "levels.1: input should be a valid number (got 'x')"),
    ],
    ids=[
        "string-for-int",
        "bool-for-int",
        "fraction-for-int",
        "string-for-float",
        "literal",
        "item",
    ],
)
def test_bad_param_type_names_the_param_and_value(local, params, message):
    with pytest.raises(UnknownPolicy) as err:
        registry.create("ordering", PolicyRef("test-capped", params), "queue a: policies.ordering")
    assert str(err.value) == f"queue a: policies.ordering: ordering policy 'test-capped': {message}"


def test_every_bad_param_is_reported_at_once(local):
    with pytest.raises(UnknownPolicy) as err:
        registry.create("ordering", PolicyRef("test-capped", {"limit": "x", "weight": "y"}))
    assert "limit: input should be a valid integer" in str(err.value)
    assert "weight: input should be a valid number" in str(err.value)


def test_an_int_is_accepted_for_a_float_param(local):
    assert registry.create("ordering", PolicyRef("test-capped", {"weight": 2})).weight == 2.0


def test_the_class_own_checks_are_reported(local):
    with pytest.raises(UnknownPolicy) as err:
        registry.create("ordering", PolicyRef("test-capped", {"limit": -1}))
    assert str(err.value) == "policy: ordering policy 'test-capped': limit must be >= 0, got -1"


def test_a_required_param_must_be_given(local):
    with pytest.raises(
        UnknownPolicy, match=r"missing parameter 'threshold'; its parameters: threshold: float$"
    ):
        registry.create("ordering", "test-needs")
    assert registry.create("ordering", PolicyRef("test-needs", {"threshold": 1})).threshold == 1


def test_a_policy_without_fields_takes_no_params(local):
    assert isinstance(registry.create("preemption", "test-none"), NoneAlias)
    with pytest.raises(UnknownPolicy, match="preemption policy 'test-none' takes no parameters"):
        registry.create("preemption", PolicyRef("test-none", {"x": 1}))


def test_params_of_shows_defaults_and_required(local):
    assert registry.params_of(NeedsThreshold) == {"threshold": "required"}
    assert registry.params_of(Capped)["limit"] == "10"


# What a policy class must be -----------------------------------------------------------


class OrderWithoutObserve:
    name = "x"

    def order(self, ctx, queue=None):
        return []


class OrderAndVictims(OrderWithoutObserve):
    def observe(self, gang, admitted):
        return None

    def victims(self, ctx, gang, reason):
        return ()


class Nameless:
    def order(self, ctx, queue=None):
        return []

    def observe(self, gang, admitted):
        return None


@pytest.mark.parametrize(
    "cls, message",
    [
        (OrderWithoutObserve, "ordering policies must also implement observe"),
        (OrderAndVictims, "must implement exactly one of order (ordering), victims"),
        (Nameless, "needs a class attribute `name`"),
    ],
    ids=["missing-method", "two-kinds", "no-name"],
)
def test_a_class_that_is_not_one_policy_is_refused(cls, message):
    with pytest.raises(InvalidInput) as err:
        registry.kind_of(cls)
    assert message in str(err.value)
    assert cls.__qualname__ in str(err.value)


def test_kind_follows_from_the_methods():
    assert [registry.kind_of(c) for c in (FifoAlias, NoneAlias, BinPackAlias)] == [
        "ordering",
        "preemption",
        "placement",
    ]


# Plug-ins through entry-point metadata -------------------------------------------------

PLUGIN = '''
"""A third-party policy package, as a user would ship it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ReverseFifo:
    """Newest first (or oldest first when newest_first is false).

    Used by the registry tests as an installed plug-in.
    """

    name = "reverse-fifo"
    newest_first: bool = True

    def order(self, ctx, queue=None):
        gangs = list(ctx.state.pending_in_order(queue))
        return reversed(gangs) if self.newest_first else iter(gangs)

    def observe(self, gang, admitted):
        return None


class NotAPolicy:
    name = "nothing"
'''


def install(root, dist, entry_points, module=None, source=""):
    """A distribution as pip would leave it: a module plus its .dist-info metadata."""
    if module is not None:
        (root / module).mkdir()
        (root / module / "__init__.py").write_text(textwrap.dedent(source))
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[phalanx.policies]\n{entry_points}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh directory on sys.path; the registry rescans entry points on the way in and out."""
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.refresh()
    yield tmp_path
    for module in ("ext_policy_pkg",):
        sys.modules.pop(module, None)
    registry.refresh()


@pytest.fixture
def plugin(site):
    install(
        site,
        "ext_policy_pkg",
        "reverse-fifo = ext_policy_pkg:ReverseFifo",
        "ext_policy_pkg",
        PLUGIN,
    )
    registry.refresh()
    return site


def test_an_installed_plugin_is_selected_by_name_with_params(plugin):
    policy = registry.create("ordering", PolicyRef("reverse-fifo", {"newest_first": False}))
    assert type(policy).__module__ == "ext_policy_pkg"
    assert policy.newest_first is False
    with pytest.raises(
        UnknownPolicy, match="unknown parameter 'newest'; its parameters: newest_first: bool = True"
    ):
        registry.create("ordering", PolicyRef("reverse-fifo", {"newest": True}))


def test_an_installed_plugin_is_listed_with_where_it_comes_from(plugin):
    (info,) = [i for i in registry.describe() if i.name == "reverse-fifo"]
    assert (info.kind, info.summary) == (
        "ordering",
        "Newest first (or oldest first when newest_first is false).",
    )
    assert info.origin == "ext_policy_pkg:ReverseFifo (ext_policy_pkg 0.1)"
    assert [str(p) for p in info.params] == ["newest_first: bool = True"]


@pytest.mark.parametrize("newest_first, admitted", [(True, "new"), (False, "old")])
def test_an_installed_plugin_orders_an_engine_cycle(local, plugin, newest_first, admitted):
    policies = routing.build(
        PolicySelection(
            PolicyRef("reverse-fifo", {"newest_first": newest_first}),
            PolicyRef("test-none"),
            PolicyRef("test-bin-pack"),
        )
    )
    state = cluster(nodes=1)
    state.add_gang(gang("old", gpus=8, created=0))
    state.add_gang(gang("new", gpus=8, created=1))
    eng = engine(state, **vars(policies))
    assert type(eng.ordering).__name__ == "ReverseFifo"
    assert [d.gang_uid for d in eng.cycle().admitted] == [admitted]


def test_a_broken_entry_point_is_named_when_selected_and_spares_the_others(plugin):
    install(plugin, "broken_pkg", "broken-order = no_such_module:Policy")
    install(plugin, "odd_pkg", "not-a-policy = ext_policy_pkg:NotAPolicy")
    registry.refresh()
    with pytest.raises(UnknownPolicy) as err:
        registry.create("ordering", "broken-order", "settings.ordering")
    assert str(err.value) == (
        "settings.ordering: ordering policy 'broken-order' is unusable: entry point "
        "broken-order = no_such_module:Policy (phalanx.policies) cannot be loaded: "
        "ModuleNotFoundError: No module named 'no_such_module'"
    )
    assert "must implement exactly one of" in registry.problems()["not-a-policy"]
    assert registry.create("ordering", "reverse-fifo").newest_first is True


def test_a_plugin_cannot_shadow_a_builtin(local, site):
    install(
        site, "ext_policy_pkg", "test-capped = ext_policy_pkg:ReverseFifo", "ext_policy_pkg", PLUGIN
    )
    registry.refresh()
    assert type(registry.create("ordering", "test-capped")) is Capped
    assert (
        "shadowed by the built-in ordering policy test-capped" in registry.problems()["test-capped"]
    )


# phalanx policies ----------------------------------------------------------------------


def run_cli(*args):
    result = invoke(["policies", *args], columns=200)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_json_lists_every_policy_with_parameters_and_defaults(local, plugin):
    install(plugin, "broken_pkg", "broken-order = no_such_module:Policy")
    registry.refresh()
    listed = json.loads(run_cli("--json"))
    by_name = {(p["kind"], p["name"]): p for p in listed["policies"]}
    assert by_name["ordering", "test-capped"] == {
        "kind": "ordering",
        "name": "test-capped",
        "summary": "Priority order, at most `limit` gangs per cycle (a test-local policy).",
        "origin": "built-in",
        "params": [
            {"name": "limit", "type": "int", "required": False, "default": 10},
            {"name": "weight", "type": "float", "required": False, "default": 1.0},
            {
                "name": "mode",
                "type": "Literal['strict', 'lax']",
                "required": False,
                "default": "lax",
            },
            {"name": "levels", "type": "tuple[float, ...]", "required": False, "default": [1.0]},
        ],
    }
    assert by_name["ordering", "test-needs"]["params"] == [
        {"name": "threshold", "type": "float", "required": True}
    ]
    assert by_name["ordering", "reverse-fifo"]["origin"] == (
        "ext_policy_pkg:ReverseFifo (ext_policy_pkg 0.1)"
    )
    assert [k for k, _ in by_name] == sorted(
        (k for k, _ in by_name), key=["ordering", "preemption", "placement"].index
    )
    assert "No module named 'no_such_module'" in listed["problems"]["broken-order"]


def test_cli_table_shows_kind_name_parameters_and_summary(local, plugin):
    install(plugin, "broken_pkg", "broken-order = no_such_module:Policy")
    registry.refresh()
    out = run_cli()
    row = next(line for line in out.splitlines() if " test-capped " in line)
    assert "ordering" in row and "limit: int = 10" in row and "Priority order, at most" in row
    assert "mode: Literal['strict', 'lax'] = 'lax'" in out
    assert "reverse-fifo" in out and "newest_first: bool = True" in out
    assert "plug-in broken-order is unusable: entry point broken-order" in out


def test_a_name_two_distributions_declare_is_refused_naming_both(site):
    install(
        site,
        "ext_policy_pkg",
        "reverse-fifo = ext_policy_pkg:ReverseFifo",
        "ext_policy_pkg",
        PLUGIN,
    )
    install(site, "other_pkg", "reverse-fifo = ext_policy_pkg:NotAPolicy")
    registry.refresh()
    with pytest.raises(UnknownPolicy) as err:
        registry.create("ordering", "reverse-fifo")
    assert str(err.value) == (
        "policy: ordering policy 'reverse-fifo' is unusable: entry point reverse-fifo is "
        "declared more than once: ext_policy_pkg:NotAPolicy (other_pkg 0.1), "
        "ext_policy_pkg:ReverseFifo (ext_policy_pkg 0.1)"
    )
