"""csjd's own Prometheus metrics, on a registry that belongs to one app.

Each ``create_app`` gets its own ``CollectorRegistry`` (shared with the HTTP
instrumentation), so several apps in one process never collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.core.job import JobState

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
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
            "csjd_retries_deferred", "Retries postponed", ["target", "reason"], registry=r
        )

    def set_job_counts(self, counts: dict[JobState, int]) -> None:
        for state, count in counts.items():
            self.jobs.labels(state=state.value).set(count)
