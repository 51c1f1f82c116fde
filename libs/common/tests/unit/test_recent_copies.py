"""The copies a process keeps of what it wrote last (`recent`)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from dealflow_common.recent import PAUSE, WINDOW, RecentCopies


@dataclass
class Deal:
    version: int
    owners: list[str] = field(default_factory=list)


def kept(capacity: int = 3, registry: CollectorRegistry | None = None) -> RecentCopies[str, Deal]:
    return RecentCopies(capacity, copy.deepcopy, lambda deal: deal.version, registry, kind="deal")


def test_each_change_gets_a_copy_of_its_own() -> None:
    recent = kept()
    deal = Deal(1, ["alice"])
    recent.keep("a", deal)
    deal.owners.append("bob")  # the caller goes on with its object: the copy is apart
    first, second = recent.take("a"), recent.take("a")
    assert first is not None
    assert second is not None
    first.owners.append("carol")
    assert (first.owners, second.owners) == (["alice", "carol"], ["alice"])
    assert recent.take("b") is None


def test_the_least_recently_used_goes_first() -> None:
    recent = kept(capacity=2)
    recent.keep("a", Deal(1))
    recent.keep("b", Deal(1))
    assert recent.take("a") is not None  # `a` is used again: `b` is now the oldest
    recent.keep("c", Deal(1))
    assert (recent.take("a") is not None, recent.take("b"), len(recent)) == (True, None, 2)


def test_a_change_that_finished_later_does_not_replace_a_newer_version() -> None:
    recent = kept()
    recent.keep("a", Deal(3))
    recent.keep("a", Deal(2))
    assert recent.take("a") == Deal(3)


def test_a_refused_copy_is_forgotten_and_counted() -> None:
    registry = CollectorRegistry()
    recent = kept(registry=registry)
    recent.keep("a", Deal(1))
    assert recent.take("a") is not None
    recent.refused("a")
    assert recent.take("a") is None
    counts = {
        outcome: registry.get_sample_value(
            "dealflow_recent_copies_total", {"kind": "deal", "outcome": outcome}
        )
        for outcome in ("served", "refused")
    }
    assert counts == {"served": 1, "refused": 1}


def test_copies_pause_after_a_window_in_which_more_than_a_quarter_were_refused() -> None:
    """Replicas that take one deal's calls in turn: most copies are out of date, and each
    costs a refused write; reading at once is cheaper for a while."""
    recent = kept(capacity=WINDOW)
    for key in range(WINDOW):
        recent.keep(str(key), Deal(1))
    refused = WINDOW // 4 + 1
    for key in range(WINDOW - 1):
        assert recent.take(str(key)) is not None
        if key < refused:
            recent.refused(str(key))
            recent.keep(str(key), Deal(2))  # the read that followed, written again
    assert recent.take(str(WINDOW - 1)) is not None  # the window's last: it pauses now
    recent.keep("1", Deal(3))  # paused: not copied, and the copy kept of it is out of date
    assert all(
        recent.take(str(key)) is None for key in range(WINDOW) for _ in range(PAUSE // WINDOW)
    )
    assert recent.take("0") == Deal(2)
    assert recent.take("1") is None


def test_a_quarter_refused_keeps_the_copies() -> None:
    recent = kept(capacity=WINDOW)
    recent.keep("a", Deal(1))
    for served in range(WINDOW):
        assert recent.take("a") is not None
        if served < WINDOW // 4:
            recent.refused("a")
            recent.keep("a", Deal(1))
    assert recent.take("a") is not None
