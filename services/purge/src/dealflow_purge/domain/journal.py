"""The purge journal: what one run did to each deal, one JSON object a line.

Like the purge log of Sterling's purge agents: with the policy's `journal` flag on, a
real run writes `purge-run-<run id>.jsonl` when it finishes (and a run interrupted by
a stopped process gets its journal from the run that takes over), one line per deal
it purged, skipped or failed. Dry runs write none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from dealflow_purge.domain.runs import ItemOutcome


@dataclass(frozen=True)
class JournalEntry:
    run_id: UUID
    opportunity_id: UUID
    outcome: ItemOutcome
    closed_at: datetime | None
    quotes_purged: int
    reason: str | None
    """Why it was skipped (`on_hold`) or what failed; null when purged."""
    at: datetime
    """When the deal reached this outcome."""

    def document(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "opportunity_id": str(self.opportunity_id),
            "outcome": self.outcome.value,
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
            "quotes_purged": self.quotes_purged,
            "reason": self.reason,
            "at": self.at.isoformat(),
        }


def journal_file_name(run_id: UUID) -> str:
    return f"purge-run-{run_id}.jsonl"


class RunJournal(Protocol):
    """Where journals are kept (an adapter implements it; the domain stays pure)."""

    def write(self, run_id: UUID, entries: Sequence[JournalEntry]) -> str:
        """Write (or replace) the run's journal whole; answers where it is. OSError on failure."""
        ...
