"""The purge agent's Prometheus metrics (names are part of the operators' contract)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class PurgeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter(
            "dealflow_purge_runs",
            "Purge runs finished, by outcome (succeeded, failed, interrupted) and dry_run",
            ["outcome", "dry_run"],
            registry=registry,
        )
        self.quotes_purged = Counter(
            "dealflow_purge_quotes_purged", "Quotes purged", registry=registry
        )
        self.opportunities_purged = Counter(
            "dealflow_purge_opportunities_purged", "Opportunities purged", registry=registry
        )
        self.failures = Counter(
            "dealflow_purge_failures",
            "Deals whose purge step failed (each is retried), by step",
            ["step"],
            registry=registry,
        )
        self.backlog = Gauge(
            "dealflow_purge_backlog",
            "Closed deals past retention, not on hold, not yet under way",
            registry=registry,
        )
        self.run_duration = Histogram(
            "dealflow_purge_run_duration_seconds",
            "Duration of finished purge runs",
            registry=registry,
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
        )
        self.last_success = Gauge(
            "dealflow_purge_last_success_timestamp_seconds",
            "When the last purge run that purged without failure finished (Unix time)",
            registry=registry,
        )
