"""The Grafana dashboard and the Prometheus alerts read only what the controller really
exports: every phalanx_ series they name, and every label they select on, is in the
exposition of a controller's Metrics that has seen one of each event."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.engine.model import Queue
from controller.kube.backoff import Backoff
from controller.kube.informer import Informer
from controller.kube.metrics import Metrics
from controller.kube.resources import PODS
from tests.builders import cluster, engine, gang, gpu_quota
from tests.deploy.render import DEPLOY, find, kustomize

DASHBOARD = DEPLOY / "dashboards" / "phalanx.json"
SERIES = re.compile(r"\b(phalanx_[a-z_]+)\b(\{[^}]*\})?")
SELECTOR_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


@functools.cache
def exported() -> dict[str, frozenset[str]]:
    """Sample name -> its label names, from a controller that saw one of each event."""
    queues = (
        Queue("org"),
        Queue("team-a", "org", gpu_quota(4)),
        Queue("team-b", "org", gpu_quota(4)),
    )
    state = cluster(nodes=1, gpus_per_node=8, queues=queues)
    state.add_gang(gang("big", pods=1, gpus=6, queue="team-a"))
    state.add_gang(gang("late", pods=1, gpus=8, queue="team-b"))
    result = engine(state).cycle()
    result.ledger.commit_all()
    metrics = Metrics()
    metrics.watch_state(state)
    metrics.watch_informers(lambda: {"pods": Informer(None, PODS, backoff=Backoff())})  # type: ignore[arg-type]
    metrics.cycle_done(result, 0.01, 0.02)
    metrics.admission("admitted")
    metrics.gang_bound(1.5)
    metrics.preempted("team-a")
    metrics.api_error("PATCH", 500)
    metrics.leader_changed(True)
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return {k: frozenset(v) for k, v in names.items()}


def dashboard_expressions() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", ())]
    exprs += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    return exprs


def alert_expressions() -> list[str]:
    rule = find(kustomize("prometheus"), "PrometheusRule", "phalanx-controller")
    return [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]


def unknown_series(expression: str) -> list[str]:
    """The phalanx_ series of a PromQL expression that are not exported, and the labels it
    selects on that the series does not have."""
    problems = []
    for name, selector in SERIES.findall(expression):
        if name not in exported():
            problems.append(f"{name} is not exported")
            continue
        for label in SELECTOR_LABEL.findall(selector or ""):
            if label not in exported()[name] | {"__name__"}:
                problems.append(f"{name} has no label {label}")
    return problems


def test_the_exposition_has_the_series_the_checks_below_rely_on() -> None:
    assert {
        "phalanx_pending_gangs",
        "phalanx_queue_usage",
        "phalanx_queue_nominal",
        "phalanx_queue_borrowed",
        "phalanx_queue_headroom",
        "phalanx_admission_latency_seconds_bucket",
        "phalanx_cycle_duration_seconds_bucket",
        "phalanx_preemptions_total",
        "phalanx_api_errors_total",
        "phalanx_leader",
    } <= set(exported())


@pytest.mark.parametrize("expression", dashboard_expressions())
def test_every_dashboard_query_reads_exported_series(expression: str) -> None:
    assert SERIES.search(expression)
    assert unknown_series(expression) == []


@pytest.mark.parametrize("expression", alert_expressions())
def test_every_alert_reads_exported_series(expression: str) -> None:
    assert SERIES.search(expression)
    assert unknown_series(expression) == []


def test_a_misspelt_series_or_label_is_caught() -> None:
    assert unknown_series('sum(phalanx_pending_gang{queue="a"})') == [
        "phalanx_pending_gang is not exported"
    ]
    assert unknown_series('phalanx_leader{queue="a"}') == ["phalanx_leader has no label queue"]


def test_the_alerts_cover_what_an_operator_must_hear_about() -> None:
    rule = find(kustomize("prometheus"), "PrometheusRule", "phalanx-controller")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "PhalanxNoLeader",
        "PhalanxApiErrors",
        "PhalanxGangsPendingTooLong",
        "PhalanxQueueAtQuota",
    } <= alerts


def test_the_dashboard_shows_the_views_the_issue_asks_for() -> None:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    titles = " / ".join(p["title"] for p in board["panels"])
    for view in (
        "Pending gangs",
        "nominal and borrowed",
        "Admission latency",
        "Preemptions",
        "cycle time",
    ):
        assert view in titles
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
