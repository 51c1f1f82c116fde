"""What the saga dashboard plots about deals (deploy/grafana/saga.json)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from dealflow_common.contracts.base import EventPayload
from dealflow_common.contracts.opportunity import OpportunityStageChanged, Stage
from dealflow_common.metrics import LoopCounter, LoopHistogram


class DealMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.stage_moves = LoopCounter(
            "dealflow_opportunity_stage_moves",
            "Deals moved from one stage to another (committed moves only)",
            ["from_stage", "to_stage"],
            registry=registry,
        )
        self.accept_to_won = LoopHistogram(
            "dealflow_saga_accept_to_won_seconds",
            "From the customer's acceptance of a quote (the quote service's request) to "
            "the deal won by it, committed in the opportunity service",
            registry=registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )

        # Each move's child of the counter, found once (at most 36 of them): `labels()`
        # validates and looks up its arguments on every call, and every move counts.
        self._moves: dict[tuple[Stage, Stage], Any] = {}

    def committed(self, events: tuple[EventPayload, ...]) -> None:
        for event in events:
            if isinstance(event, OpportunityStageChanged):
                move = (event.from_stage, event.to_stage)
                counted = self._moves.get(move)
                if counted is None:
                    counted = self._moves[move] = self.stage_moves.labels(
                        event.from_stage.value, event.to_stage.value
                    )
                counted.inc()
