"""Copies of the aggregates a process changed last, to skip the read before the next
change of one of them.

A change in one-write mode (`one_write`) reads its aggregate, applies a command and
ends with one statement whose `WHERE version = ...` refuses it if anyone changed the row
since the read. The read is then only a guess of what the write will find, and the
state this process itself wrote last is as good a guess, without a round trip: a deal
is moved three times in a row by the same people, and each move reads what the one
before wrote.

A copy is a guess, never the truth:

- the versioned write that ends the change refuses a copy that is out of date (another
  replica or a consumer changed the row), and the change runs again from a read;
- a refusal decided on a copy (a stage move not allowed, a 412 for a version named in
  If-Match, a 404 for someone taken off the deal) is decided again on a read, so a copy
  never gives an answer that a read would not (`one_write.StaleCopy`);
- a change that writes nothing has no write to check its copy against: it runs again
  from a read as well.

What goes wrong with copies is therefore only cost: a refused copy costs the refused
write and a read more than reading at once. Where most copies are out of date (replicas
behind a load balancer that spreads one deal's calls over them), a run of refusals
turns the copies off for a while (`RecentCopies.take`).

The unit of work that was served a copy turns a refusal into `StaleCopy` and forgets
the copy (`UnitOfWork.served_copy`).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry

from dealflow_common.metrics import LoopCounter

K = TypeVar("K", bound=Hashable)
A = TypeVar("A")

WINDOW = 64
"""Copies served between two looks at how many of them were refused."""
PAUSE = 1_024
"""Changes that read instead after a window in which more than a quarter were refused."""


_counters: weakref.WeakKeyDictionary[CollectorRegistry, LoopCounter] = weakref.WeakKeyDictionary()


def _outcomes_in(registry: CollectorRegistry) -> LoopCounter:
    """The registry's one counter of copies, which every kind of copy shares."""
    counter = _counters.get(registry)
    if counter is None:
        counter = _counters[registry] = LoopCounter(
            "dealflow_recent_copies",
            "Changes that skipped their read with a copy of what this process wrote "
            "last (served), and those the write or a rule refused (refused)",
            ["kind", "outcome"],
            registry=registry,
        )
    return counter


class RecentCopies(Generic[K, A]):
    """The aggregates this process committed last, by id, at most `capacity` of them
    (the least recently used go first). Each is kept and handed out as a copy of its
    own, so that no change sees another's edits."""

    def __init__(
        self,
        capacity: int,
        copy: Callable[[A], A],
        version: Callable[[A], int],
        registry: CollectorRegistry | None = None,
        kind: str = "aggregate",
    ) -> None:
        self._capacity = capacity
        self._copy = copy
        self._version = version
        self._kept: OrderedDict[K, A] = OrderedDict()
        self._served_in_window = 0
        self._refused_in_window = 0
        self._paused = 0
        # Each outcome's child of the counter, looked up once: `labels` validates and
        # looks up its arguments on every call, and a copy is served on most changes.
        outcomes = _outcomes_in(registry) if registry is not None else None
        self._counted = (
            {outcome: outcomes.labels(kind, outcome) for outcome in ("served", "refused")}
            if outcomes is not None
            else {}
        )

    def take(self, key: K) -> A | None:
        """A copy of what this process last committed of `key`, or None: none kept, or
        copies paused after too many refusals."""
        if self._paused:
            self._paused -= 1
            return None
        kept = self._kept.get(key)
        if kept is None:
            return None
        self._kept.move_to_end(key)
        self._served_in_window += 1
        if self._served_in_window >= WINDOW:
            if self._refused_in_window * 4 > self._served_in_window:
                self._paused = PAUSE
            self._served_in_window = self._refused_in_window = 0
        self._count("served")
        return self._copy(kept)

    def keep(self, key: K, aggregate: A) -> None:
        """Remember `aggregate` as committed (a copy of it). A change that committed
        earlier but finished later does not replace a newer version. While copies are
        paused, nothing is copied, and what was kept of `key` is out of date: forgotten."""
        if self._paused:
            self._kept.pop(key, None)
            return
        kept = self._kept.get(key)
        if kept is not None and self._version(kept) > self._version(aggregate):
            return
        self._kept[key] = self._copy(aggregate)
        self._kept.move_to_end(key)
        if len(self._kept) > self._capacity:
            self._kept.popitem(last=False)

    def refused(self, key: K) -> None:
        """The copy of `key` served to a change was refused: forget it."""
        self._kept.pop(key, None)
        self._refused_in_window += 1
        self._count("refused")

    def forget(self, key: K) -> None:
        self._kept.pop(key, None)

    def __len__(self) -> int:
        return len(self._kept)

    def _count(self, outcome: str) -> None:
        counted = self._counted.get(outcome)
        if counted is not None:
            counted.inc()
