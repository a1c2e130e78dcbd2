"""Prometheus metrics of the exchange flow, on a registry owned by one app.

Labels are department ids, outcomes, stages and reason codes: bounded sets,
never subject keys or field values.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["STAGES", "ExchangeMetrics"]

STAGES = ("auth", "decide", "fetch", "translate", "release", "audit", "total")
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ExchangeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.exchanges = Counter(
            "accord_exchanges",
            "Exchanges by outcome, consumer and provider",
            ["outcome", "consumer", "provider"],
            registry=self.registry,
        )
        self.denials = Counter(
            "accord_denials", "Denials by reason code", ["reason"], registry=self.registry
        )
        self.auth_failures_folded = Counter(
            "accord_auth_failures_folded",
            "Failed authentications recorded in a folded audit entry, by problem code",
            ["code"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "accord_exchange_stage_seconds",
            "Latency of each exchange stage",
            ["stage"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.connector_up = Gauge(
            "accord_connector_up",
            "1 when the provider's connector last answered, 0 when it failed",
            ["provider", "dataset"],
            registry=self.registry,
        )
        self.policy_engine = Gauge(
            "accord_policy_engine",
            "1 for the engine, evaluator (vm, interpreter, server) and policy version deciding",
            ["engine", "evaluator", "version"],
            registry=self.registry,
        )

    def show_policy_engine(self, engine: str, evaluator: str, version: str | None) -> None:
        """Set the engine gauge to exactly one series (called when metrics are scraped)."""
        self.policy_engine.clear()
        self.policy_engine.labels(engine, evaluator, version or "none").set(1)
