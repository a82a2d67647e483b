"""csjd's own Prometheus metrics, on a registry that belongs to one app.

Each ``Gateway`` gets its own ``CollectorRegistry`` (shared with the HTTP
instrumentation), so several apps in one process never collide. A deleted
target's series are removed (``forget_target``), so ``/metrics`` only names
targets that exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from app.core.job import JobState

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


@dataclass(slots=True)
class TargetMetrics:
    """One target's series, looked up once: ``labels()`` on every delivery is not free."""

    name: str
    accepted: Counter
    #: the labelled family; one child per outcome is looked up on first use
    deliveries: Counter
    delivery_duration: Histogram
    inflight: Gauge
    breaker_state: Gauge
    concurrency_limit: Gauge
    by_outcome: dict[str, Counter] = field(default_factory=dict)

    def delivered(self, outcome: str, duration_s: float) -> None:
        counter = self.by_outcome.get(outcome)
        if counter is None:
            counter = self.deliveries.labels(target=self.name, outcome=outcome)
            self.by_outcome[outcome] = counter
        counter.inc()
        self.delivery_duration.observe(duration_s)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._targets: dict[str, TargetMetrics] = {}
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs_accepted = Counter(
            "csjd_jobs_accepted",
            "Jobs accepted at intake (replays excluded)",
            ["target"],
            registry=r,
        )
        self.deliveries = Counter(
            "csjd_deliveries", "Delivery attempts by outcome", ["target", "outcome"], registry=r
        )
        self.delivery_duration = Histogram(
            "csjd_delivery_duration_seconds",
            "Time from request start to the last byte read",
            ["target"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.jobs = Gauge("csjd_jobs", "Jobs by state", ["state"], registry=r)
        self.inflight = Gauge("csjd_inflight", "Deliveries in flight", ["target"], registry=r)
        self.breaker_state = Gauge(
            "csjd_breaker_state",
            "Circuit breaker state (0 closed, 1 half-open, 2 open)",
            ["target"],
            registry=r,
        )
        self.concurrency_limit = Gauge(
            "csjd_concurrency_limit", "Current adaptive concurrency limit", ["target"], registry=r
        )
        self.retries_deferred = Counter(
            "csjd_retries_deferred",
            "Claims that left due retries waiting",
            ["target", "reason"],
            registry=r,
        )
        #: every family labelled by target, with its label names in order
        self._by_target: list[tuple[MetricWrapperBase, tuple[str, ...]]] = [
            (self.jobs_accepted, ("target",)),
            (self.deliveries, ("target", "outcome")),
            (self.delivery_duration, ("target",)),
            (self.inflight, ("target",)),
            (self.breaker_state, ("target",)),
            (self.concurrency_limit, ("target",)),
            (self.retries_deferred, ("target", "reason")),
        ]

    def target(self, name: str) -> TargetMetrics:
        series = self._targets.get(name)
        if series is None:
            series = self._targets[name] = TargetMetrics(
                name=name,
                accepted=self.jobs_accepted.labels(target=name),
                deliveries=self.deliveries,
                delivery_duration=self.delivery_duration.labels(target=name),
                inflight=self.inflight.labels(target=name),
                breaker_state=self.breaker_state.labels(target=name),
                concurrency_limit=self.concurrency_limit.labels(target=name),
            )
        return series

    def forget_target(self, name: str) -> None:
        """Remove every series labelled with target ``name`` (it was deleted); a target
        made again under that name starts new ones."""
        self._targets.pop(name, None)
        for family, labels in self._by_target:
            for metric in family.collect():
                children = {
                    tuple(sample.labels[label] for label in labels)
                    for sample in metric.samples
                    if sample.labels.get("target") == name
                }
                for values in children:
                    family.remove(*values)

    def set_job_counts(self, counts: dict[JobState, int]) -> None:
        for state, count in counts.items():
            self.jobs.labels(state=state.value).set(count)
