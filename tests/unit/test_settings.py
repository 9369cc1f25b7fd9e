"""Controller settings: policies chosen by env var, checked against the registry at load."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from controller.engine.policy import BinPack, FifoWithinPriority, NoPreemption
from controller.settings import Settings, SettingsError
from policies import registry
from policies.registry import PolicyRef
from policies.routing import PolicySelection


@dataclass
class Weighted(FifoWithinPriority):
    """A test-local ordering with parameters."""

    name = "test-weighted"
    weight: float = 1.0
    mode: str = "a"


class NoneAlias(NoPreemption):
    name = "test-none"


class BinPackAlias(BinPack):
    name = "test-bin-pack"


@pytest.fixture(autouse=True)
def env(monkeypatch):
    """No PHALANX_* variables but the test's own; test-local policies for every kind."""
    for key in list(os.environ):
        if key.upper().startswith("PHALANX_"):
            monkeypatch.delenv(key)
    for cls in (Weighted, NoneAlias, BinPackAlias):
        monkeypatch.setitem(registry._builtin[registry.kind_of(cls)], cls.name, cls)
    monkeypatch.setenv("PHALANX_ORDERING", "test-weighted")
    monkeypatch.setenv("PHALANX_PREEMPTION", "test-none")
    monkeypatch.setenv("PHALANX_PLACEMENT", "test-bin-pack")
    return monkeypatch


def test_the_defaults_are_priority_no_preemption_and_bin_pack(env):
    for kind in ("ORDERING", "PREEMPTION", "PLACEMENT"):
        env.delenv(f"PHALANX_{kind}")
    settings = Settings.load()
    assert settings.policy_selection() == PolicySelection(
        PolicyRef("priority"), PolicyRef("none"), PolicyRef("bin-pack")
    )
    assert settings.search_bound == 8


def test_env_selects_a_builtin_policy_by_name(env):
    env.setenv("PHALANX_ORDERING", "drf")
    assert Settings.load().ordering == PolicyRef("drf")


def test_env_selects_a_policy_by_name():
    settings = Settings.load()
    assert settings.policy_selection() == PolicySelection(
        PolicyRef("test-weighted"), PolicyRef("test-none"), PolicyRef("test-bin-pack")
    )


def test_env_selects_a_policy_with_params_as_json(env):
    env.setenv("PHALANX_ORDERING", '{"name": "test-weighted", "params": {"weight": 2}}')
    assert Settings.load().ordering == PolicyRef("test-weighted", {"weight": 2})


def test_env_selects_a_policy_through_nested_variables(env):
    env.delenv("PHALANX_ORDERING")
    env.setenv("PHALANX_ORDERING__NAME", "test-weighted")
    env.setenv("PHALANX_ORDERING__PARAMS", '{"mode": "b"}')
    assert Settings.load().ordering == PolicyRef("test-weighted", {"mode": "b"})


def test_search_bound_comes_from_env(env):
    env.setenv("PHALANX_SEARCH_BOUND", "3")
    assert Settings.load().search_bound == 3


def test_values_given_in_code_win_over_env():
    assert Settings.load(ordering={"name": "test-weighted"}).ordering == PolicyRef("test-weighted")


def test_an_unknown_name_fails_at_load_with_the_list_of_what_exists(env):
    env.setenv("PHALANX_PLACEMENT", "test-bin-pak")
    with pytest.raises(SettingsError) as err:
        Settings.load()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        "PHALANX_PLACEMENT: no placement policy named 'test-bin-pak'; available: "
    )
    assert "test-bin-pack" in message.split("available: ")[1].split(", ")


@pytest.mark.parametrize(
    "variable, value, message",
    [
        (
            "PHALANX_ORDERING",
            '{"name": "test-weighted", "params": {"weight": "x"}}',
            "PHALANX_ORDERING: ordering policy 'test-weighted': weight: input should be a "
            "valid number (got 'x')",
        ),
        (
            "PHALANX_ORDERING",
            '{"name": "test-weighted", "params": {"wieght": 2}}',
            "PHALANX_ORDERING: ordering policy 'test-weighted': unknown parameter 'wieght'; "
            "its parameters: weight: float = 1.0, mode: str = 'a'",
        ),
        (
            "PHALANX_ORDERING",
            '{"name": "test-weighted"',
            "PHALANX_ORDERING: not valid JSON: ",
        ),
        (
            "PHALANX_PREEMPTION",
            '{"policy": "test-none"}',
            "PHALANX_PREEMPTION: expected a policy name or {name, params}, got {'policy': ",
        ),
        ("PHALANX_PREEMPTION", "", "PHALANX_PREEMPTION: expected a policy name or {name, params}"),
        (
            "PHALANX_SEARCH_BOUND",
            "0",
            "PHALANX_SEARCH_BOUND: input should be greater than or equal to 1 (got '0')",
        ),
    ],
    ids=["bad-param-type", "unknown-param", "bad-json", "bad-shape", "empty", "bound-below-1"],
)
def test_a_bad_setting_fails_at_load_naming_the_variable(env, variable, value, message):
    env.setenv(variable, value)
    with pytest.raises(SettingsError) as err:
        Settings.load()
    assert str(err.value).startswith(message)


def test_every_bad_setting_is_reported(env):
    env.setenv("PHALANX_ORDERING", "nope")
    env.setenv("PHALANX_PREEMPTION", "nope")
    with pytest.raises(SettingsError) as err:
        Settings.load()
    assert [line.split(":")[0] for line in str(err.value).splitlines()] == [
        "PHALANX_ORDERING",
        "PHALANX_PREEMPTION",
    ]
