"""Operations settings from PHALANX_* env vars: lease timing, identity, endpoints, logs."""

from __future__ import annotations

import os

import pytest

from controller.settings import Settings, SettingsError


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.upper().startswith("PHALANX_"):
            monkeypatch.delenv(key)
    return monkeypatch


def refusal(env: pytest.MonkeyPatch, name: str, value: str) -> str:
    """What Settings.load() says with PHALANX_<name>=value set."""
    env.setenv(f"PHALANX_{name}", value)
    with pytest.raises(SettingsError) as err:
        Settings.load()
    return str(err.value)


def test_the_defaults_follow_kubernetes_leader_election() -> None:
    settings = Settings.load()
    assert (settings.lease_name, settings.lease_namespace) == (
        "phalanx-controller",
        "phalanx-system",
    )
    timing = (
        settings.lease_duration_seconds,
        settings.renew_deadline_seconds,
        settings.retry_period_seconds,
    )
    assert timing == (15, 10.0, 2.0)
    assert settings.leader_elect
    assert (settings.health_host, settings.health_port, settings.log_level) == (
        "0.0.0.0",
        8080,
        "info",
    )


def test_each_replica_gets_its_own_identity() -> None:
    assert Settings.load().identity != Settings.load().identity


def test_env_vars_set_the_lease_and_endpoints(env: pytest.MonkeyPatch) -> None:
    env.setenv("PHALANX_LEASE_NAMESPACE", "batch")
    env.setenv("PHALANX_IDENTITY", "pod-1")
    env.setenv("PHALANX_HEALTH_PORT", "9090")
    env.setenv("PHALANX_LOG_LEVEL", "DEBUG")
    settings = Settings.load()
    assert (settings.lease_namespace, settings.identity) == ("batch", "pod-1")
    assert (settings.health_port, settings.log_level) == (9090, "debug")


def test_a_retry_period_that_does_not_fit_the_deadline_is_refused(
    env: pytest.MonkeyPatch,
) -> None:
    env.setenv("PHALANX_RETRY_PERIOD_SECONDS", "9")
    with pytest.raises(SettingsError, match=r"^PHALANX_RETRY_PERIOD_SECONDS: times 1\.2 must"):
        Settings.load()


def test_an_unknown_log_level_is_refused(env: pytest.MonkeyPatch) -> None:
    env.setenv("PHALANX_LOG_LEVEL", "verbose")
    with pytest.raises(SettingsError, match=r"^PHALANX_LOG_LEVEL: .*'verbose'"):
        Settings.load()


@pytest.mark.parametrize(
    ("setting", "value", "limit", "shown"),
    [
        ("RENEW_DEADLINE_SECONDS", "15", "LEASE_DURATION_SECONDS", "15"),
        ("WEBHOOK_RENEW_BEFORE_DAYS", "365", "WEBHOOK_CERT_DAYS", "365.0"),
        ("WEBHOOK_CA_RENEW_BEFORE_DAYS", "4000", "WEBHOOK_CA_DAYS", "3650.0"),
    ],
)
def test_a_margin_not_shorter_than_what_it_is_taken_from_is_refused(
    env: pytest.MonkeyPatch, setting: str, value: str, limit: str, shown: str
) -> None:
    assert refusal(env, setting, value) == (
        f"PHALANX_{setting}: must be shorter than PHALANX_{limit} ({shown}), got {float(value)}"
    )


def test_a_ca_renewed_before_its_serving_certificate_could_expire_is_refused(
    env: pytest.MonkeyPatch,
) -> None:
    assert refusal(env, "WEBHOOK_CERT_DAYS", "800") == (
        "PHALANX_WEBHOOK_CA_RENEW_BEFORE_DAYS: must be longer than PHALANX_WEBHOOK_CERT_DAYS "
        "(800.0), so a serving certificate signed by the old CA expires before the CA does; "
        "got 730.0"
    )
