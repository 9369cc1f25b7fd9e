"""Controller metrics, read back from the Prometheus exposition text."""

from __future__ import annotations

from inspect import signature

from prometheus_client.parser import text_string_to_metric_families

from controller.engine.model import Queue
from controller.kube.backoff import Backoff
from controller.kube.informer import Informer
from controller.kube.metrics import NO_METRICS, Metrics, Recorder
from controller.kube.resources import NODES, PODS
from tests.builders import cluster, engine, gang, gpu_quota


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition by (name, labels)."""
    text = metrics.exposition().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def test_every_metric_name_has_the_phalanx_prefix() -> None:
    metrics = Metrics()
    metrics.watch_state(cluster())
    names = {name for name, _ in samples(metrics)}
    assert names
    assert all(name.startswith("phalanx_") for name in names)


def test_each_metrics_object_has_its_own_registry() -> None:
    one, other = Metrics(), Metrics()
    one.admission("admitted")
    assert value(one, "phalanx_admission_attempts_total", outcome="admitted") == 1
    assert value(other, "phalanx_admission_attempts_total", outcome="admitted") is None


def test_admissions_count_by_outcome_and_bound_gangs_observe_latency() -> None:
    metrics = Metrics()
    metrics.admission("admitted")
    metrics.admission("admitted")
    metrics.admission("conflict")
    metrics.gang_bound(0.3)
    metrics.gang_bound(40.0)
    assert value(metrics, "phalanx_admission_attempts_total", outcome="admitted") == 2
    assert value(metrics, "phalanx_admission_attempts_total", outcome="conflict") == 1
    assert value(metrics, "phalanx_admission_latency_seconds_count") == 2
    assert value(metrics, "phalanx_admission_latency_seconds_bucket", le="0.5") == 1
    assert value(metrics, "phalanx_admission_latency_seconds_sum") == 40.3


def test_a_cycle_observes_its_durations_and_counts_gangs_left_pending() -> None:
    state = cluster(nodes=1, gpus_per_node=8)
    state.add_gang(gang("fits", pods=1, gpus=8))
    state.add_gang(gang("too-big", pods=2, gpus=8))
    result = engine(state).cycle()
    metrics = Metrics()
    metrics.cycle_done(result, 0.002, 0.02)
    assert value(metrics, "phalanx_cycle_duration_seconds_count") == 1
    assert value(metrics, "phalanx_cycle_duration_seconds_bucket", le="0.025") == 1
    assert value(metrics, "phalanx_cycle_duration_seconds_bucket", le="0.01") == 0
    assert value(metrics, "phalanx_cycle_decide_seconds_bucket", le="0.0025") == 1
    assert value(metrics, "phalanx_cycle_decide_seconds_bucket", le="0.001") == 0
    assert value(metrics, "phalanx_admission_attempts_total", outcome="pending") == 1
    assert value(metrics, "phalanx_admission_attempts_total", outcome="admitted") is None


def test_pending_gangs_are_read_per_leaf_queue_at_scrape_time() -> None:
    state = cluster(queues=(Queue("team-a"), Queue("team-b")))
    metrics = Metrics()
    metrics.watch_state(state)
    assert value(metrics, "phalanx_pending_gangs", queue="team-a") == 0
    state.add_gang(gang("g1", queue="team-a"))
    state.add_gang(gang("g2", queue="team-a"))
    assert value(metrics, "phalanx_pending_gangs", queue="team-a") == 2
    assert value(metrics, "phalanx_pending_gangs", queue="team-b") == 0


def team_a_borrowing_two_gpus() -> Metrics:
    """Metrics of two 4-GPU teams under one parent, team-a running a 6-GPU gang."""
    queues = (
        Queue("org"),
        Queue("team-a", "org", gpu_quota(4)),
        Queue("team-b", "org", gpu_quota(4)),
    )
    state = cluster(nodes=1, gpus_per_node=8, queues=queues)
    state.add_gang(gang("big", pods=1, gpus=6, queue="team-a", cpu=2))
    engine(state).cycle().ledger.commit_all()
    metrics = Metrics()
    metrics.watch_state(state)
    return metrics


def test_queue_usage_and_borrowing_per_resource_with_cpu_in_cores() -> None:
    metrics = team_a_borrowing_two_gpus()
    assert value(metrics, "phalanx_queue_usage", queue="team-a", resource="devices/gpu") == 6
    assert value(metrics, "phalanx_queue_usage", queue="team-a", resource="cpu") == 2.0
    assert value(metrics, "phalanx_queue_usage", queue="org", resource="devices/gpu") == 6
    assert value(metrics, "phalanx_queue_borrowed", queue="team-a", resource="devices/gpu") == 2
    assert value(metrics, "phalanx_queue_borrowed", queue="org", resource="devices/gpu") == 0


def test_queue_nominal_quota_and_leaf_headroom_per_managed_resource() -> None:
    metrics = team_a_borrowing_two_gpus()
    assert value(metrics, "phalanx_queue_nominal", queue="team-a", resource="devices/gpu") == 4
    assert value(metrics, "phalanx_queue_nominal", queue="org", resource="devices/gpu") == 8
    assert value(metrics, "phalanx_queue_headroom", queue="team-a", resource="devices/gpu") == 2
    assert value(metrics, "phalanx_queue_headroom", queue="team-b", resource="devices/gpu") == 2
    assert value(metrics, "phalanx_queue_headroom", queue="org", resource="devices/gpu") is None
    assert value(metrics, "phalanx_queue_nominal", queue="team-a", resource="cpu") is None


def test_preemptions_and_api_errors_are_counted_by_their_labels() -> None:
    metrics = Metrics()
    metrics.preempted("team-a", gangs=2)
    metrics.api_error("PUT", 409)
    metrics.api_error("PUT", 409)
    metrics.api_error("WATCH", 0)
    assert value(metrics, "phalanx_preemptions_total", queue="team-a") == 2
    assert value(metrics, "phalanx_api_errors_total", verb="put", code="409") == 2
    assert value(metrics, "phalanx_api_errors_total", verb="watch", code="0") == 1


def test_watch_restarts_come_from_the_informer_counters() -> None:
    informers = {
        plural: Informer(None, res, backoff=Backoff())  # type: ignore[arg-type]
        for plural, res in (("pods", PODS), ("nodes", NODES))
    }
    informers["pods"].stats.resyncs = 2
    informers["pods"].stats.inactive = 1
    informers["nodes"].stats.errors = 4
    metrics = Metrics()
    metrics.watch_informers(lambda: informers)
    assert value(metrics, "phalanx_watch_restarts_total", resource="pods", reason="expired") == 2
    assert value(metrics, "phalanx_watch_restarts_total", resource="pods", reason="silent") == 1
    assert value(metrics, "phalanx_watch_restarts_total", resource="nodes", reason="error") == 4
    informers["pods"].stats.resyncs = 3
    assert value(metrics, "phalanx_watch_restarts_total", resource="pods", reason="expired") == 3


def test_leader_status_follows_leadership_changes() -> None:
    metrics = Metrics()
    assert value(metrics, "phalanx_leader") == 0
    metrics.leader_changed(True)
    assert value(metrics, "phalanx_leader") == 1
    metrics.leader_changed(False)
    assert value(metrics, "phalanx_leader") == 0


def test_webhook_reviews_are_counted_by_outcome_and_timed() -> None:
    metrics = Metrics()
    metrics.webhook_review("gangjob", "denied", 0.002)
    metrics.webhook_review("gangjob", "allowed", 0.001)
    metrics.webhook_review("gangjob", "denied", 0.003)
    assert value(metrics, "phalanx_webhook_reviews_total", webhook="gangjob", outcome="denied") == 2
    assert value(metrics, "phalanx_webhook_review_duration_seconds_count", webhook="gangjob") == 3


def test_the_default_recorder_offers_every_event_metrics_records() -> None:
    events = [n for n, f in vars(Recorder).items() if callable(f) and not n.startswith("_")]
    assert type(NO_METRICS) is Recorder
    assert events == [
        "cycle_done",
        "admission",
        "gang_bound",
        "preempted",
        "api_error",
        "leader_changed",
        "webhook_review",
    ]
    for name in events:
        assert signature(getattr(Metrics, name)) == signature(getattr(Recorder, name)), name
