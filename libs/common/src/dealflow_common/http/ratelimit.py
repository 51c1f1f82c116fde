"""A per-caller request rate limit: a token bucket for each `sub`, in this process.

Each process of a service keeps its own buckets in memory, so with N replicas a caller
may make up to N times the rate; the limit protects one process from one caller, it is
not a quota. Buckets of callers unseen for long are dropped (at most `max_callers` are
kept), which at worst gives such a caller a full bucket again.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self,
        *,
        per_second: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_callers: int = 100_000,
    ) -> None:
        if per_second <= 0:
            raise ValueError("a rate limit needs a positive rate")
        self.per_second = per_second
        self.burst = burst
        self._clock = clock
        self._max_callers = max_callers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def retry_after(self, caller: str) -> float:
        """0 when `caller` may make this request now (and it is counted); otherwise the
        seconds until it may, and nothing is counted."""
        now = self._clock()
        tokens, updated = self._buckets.pop(caller, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - updated) * self.per_second)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.per_second
        self._buckets[caller] = (tokens, now)
        if len(self._buckets) > self._max_callers:
            self._buckets.popitem(last=False)
        return wait
