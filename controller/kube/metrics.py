"""Prometheus metrics of the controller (`phalanx_*`), in a registry of their own.

The decision loop reports events through a small recorder API; `Recorder` does nothing
(the default, and what tests of other parts use), `Metrics` records. What is state
rather than an event (pending gangs, queue usage, watch restarts, leadership) is read at
scrape time from the objects that hold it, so it is never stale and costs the loop
nothing. Scrapes run on the controller's event loop, between its steps, so they see
a consistent state.

Units are Prometheus base units: seconds, and cpu in cores; other resources as the
engine counts them (bytes, pods, devices).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.engine.cycle import CycleResult, Outcome
from controller.engine.state import ClusterState

if TYPE_CHECKING:
    from controller.kube.informer import Informer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
"""Admission latency: from sub-second on an idle cluster to an hour in a busy queue."""
CYCLE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Recorder:
    """What the controller reports; this base records nothing."""

    def cycle_done(self, result: CycleResult, decided: float, seconds: float) -> None:
        """An admission cycle ended: its decide step took `decided` seconds, the whole
        cycle (decide, then the commit point of each admission) `seconds`. Gangs it left
        pending count as attempts with outcome `pending` (admitted ones are reported by
        `admission`, once their commit point is written or lost)."""

    def admission(self, outcome: str) -> None:
        """One gang's admission attempt ended: `admitted`, `conflict` (commit point lost
        the race), `error`, ..."""

    def gang_bound(self, latency: float) -> None:
        """Every pod of an admitted gang is bound, `latency` seconds after the gang was
        last queued (see `Metrics.latency`)."""

    def preempted(self, queue: str, gangs: int = 1) -> None:
        """Whole gangs of `queue` evicted to make room."""

    def api_error(self, verb: str, code: int) -> None:
        """A request the API server refused (`code` 0: no answer at all)."""

    def leader_changed(self, leading: bool) -> None:
        """Leadership gained or lost (fits `LeaderElector.subscribe`)."""

    def webhook_review(self, webhook: str, outcome: str, seconds: float) -> None:
        """The admission webhook answered one review: `allowed`, `mutated`, `denied`,
        `unavailable`, `bad-request` or `error`."""


NO_METRICS = Recorder()


class Metrics(Recorder):
    """The controller's metrics; `exposition()` is what /metrics serves."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.attempts = Counter(
            "phalanx_admission_attempts",
            "Gang admission attempts by outcome.",
            ["outcome"],
            registry=reg,
        )
        self.latency = Histogram(
            "phalanx_admission_latency_seconds",
            "From when the gang was last queued to all its pods bound: for a GangJob the "
            "lastTransitionTime of its Queued condition (its creation if it was admitted "
            "before being marked Queued), for a foreign gang its last pod's creation. "
            "Start times are the API's whole-second timestamps.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.cycles = Histogram(
            "phalanx_cycle_duration_seconds",
            "Duration of one whole admission cycle: decide, then the commit point of each "
            "admission it made.",
            buckets=CYCLE_BUCKETS,
            registry=reg,
        )
        self.decides = Histogram(
            "phalanx_cycle_decide_seconds",
            "Duration of the decide step of one admission cycle (the engine alone, no I/O).",
            buckets=CYCLE_BUCKETS,
            registry=reg,
        )
        self.preemptions = Counter(
            "phalanx_preemptions", "Gangs evicted by preemption.", ["queue"], registry=reg
        )
        self.api_errors = Counter(
            "phalanx_api_errors",
            "Requests the API server refused, by verb and HTTP status (0: no answer).",
            ["verb", "code"],
            registry=reg,
        )
        self.leader = Gauge(
            "phalanx_leader", "1 while this replica holds the leader lease.", registry=reg
        )
        self.webhook_reviews = Counter(
            "phalanx_webhook_reviews",
            "Admission reviews answered, by webhook and outcome.",
            ["webhook", "outcome"],
            registry=reg,
        )
        self.webhook_latency = Histogram(
            "phalanx_webhook_review_duration_seconds",
            "Time to answer one admission review, by webhook.",
            ["webhook"],
            buckets=CYCLE_BUCKETS,
            registry=reg,
        )

    # ---- events -----------------------------------------------------------------------
    def cycle_done(self, result: CycleResult, decided: float, seconds: float) -> None:
        self.decides.observe(decided)
        self.cycles.observe(seconds)
        pending = sum(1 for d in result.decisions if d.outcome is Outcome.PENDING)
        if pending:
            self.attempts.labels("pending").inc(pending)

    def admission(self, outcome: str) -> None:
        self.attempts.labels(outcome).inc()

    def gang_bound(self, latency: float) -> None:
        self.latency.observe(latency)

    def preempted(self, queue: str, gangs: int = 1) -> None:
        self.preemptions.labels(queue).inc(gangs)

    def api_error(self, verb: str, code: int) -> None:
        self.api_errors.labels(verb.lower(), str(code)).inc()

    def leader_changed(self, leading: bool) -> None:
        self.leader.set(1 if leading else 0)

    def webhook_review(self, webhook: str, outcome: str, seconds: float) -> None:
        self.webhook_reviews.labels(webhook, outcome).inc()
        self.webhook_latency.labels(webhook).observe(seconds)

    # ---- state read at scrape time ----------------------------------------------------
    def watch_state(self, state: ClusterState) -> None:
        """Export pending gangs and quota usage per queue from `state`."""
        self.registry.register(_StateCollector(state))

    def watch_informers(self, informers: Callable[[], Mapping[str, Informer]]) -> None:
        """Export the informers' watch restarts (`informers()` is read at each scrape, so
        caches made later are included)."""
        self.registry.register(_InformerCollector(informers))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _value(resource: str, amount: int) -> float:
    return amount / 1000 if resource == "cpu" else float(amount)


class _StateCollector(Collector):
    def __init__(self, state: ClusterState) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        state, quota = self.state, self.state.quota
        pending = GaugeMetricFamily(
            "phalanx_pending_gangs", "Gangs waiting for admission, by queue.", labels=["queue"]
        )
        for queue in sorted(
            {*(q for q in quota.names() if quota.is_leaf(q)), *state.pending_queues()}
        ):
            pending.add_metric([queue], len(state.pending_index(queue)))
        usage = GaugeMetricFamily(
            "phalanx_queue_usage",
            "Quota used by admitted gangs in the queue's subtree (cpu in cores).",
            labels=["queue", "resource"],
        )
        borrowed = GaugeMetricFamily(
            "phalanx_queue_borrowed",
            "Usage above the queue's own quota, taken from its parent's pool.",
            labels=["queue", "resource"],
        )
        nominal = GaugeMetricFamily(
            "phalanx_queue_nominal",
            "Quota the queue's subtree provides (its nominal plus what its children lend); "
            "usage above it is borrowed.",
            labels=["queue", "resource"],
        )
        headroom = GaugeMetricFamily(
            "phalanx_queue_headroom",
            "How much more a leaf queue may take now, along its whole path (0: at quota); "
            "only for resources its tree manages.",
            labels=["queue", "resource"],
        )
        for queue in quota.names():
            used = quota.subtree_usage(queue)
            for resource in sorted({*used, *quota.pool_usage(queue)}):
                usage.add_metric([queue, resource], _value(resource, used.get(resource, 0)))
                taken = quota.borrowed(queue, resource)
                borrowed.add_metric([queue, resource], _value(resource, taken))
            for resource in sorted(quota.managed(queue)):
                provided = quota.subtree_quota(queue, resource)
                nominal.add_metric([queue, resource], _value(resource, provided))
                if quota.is_leaf(queue):
                    room, _ = quota.headroom(queue, resource)
                    if room is not None:
                        headroom.add_metric([queue, resource], _value(resource, room))
        return [pending, usage, borrowed, nominal, headroom]


class _InformerCollector(Collector):
    def __init__(self, informers: Callable[[], Mapping[str, Informer]]) -> None:
        self.informers = informers

    def collect(self) -> Iterator[Metric]:
        restarts = CounterMetricFamily(
            "phalanx_watch_restarts",
            "Watches restarted, by resource and reason: expired (410, re-synced), "
            "silent (no event within the inactivity timeout), error (failed, backed off).",
            labels=["resource", "reason"],
        )
        for plural, informer in sorted(self.informers().items()):
            stats = informer.stats
            restarts.add_metric([plural, "expired"], stats.resyncs)
            restarts.add_metric([plural, "silent"], stats.inactive)
            restarts.add_metric([plural, "error"], stats.errors)
        yield restarts
