"""Counters and histograms for what every request, statement and event counts.

prometheus_client's `Counter` and `Histogram` take a lock on every increment and check
on every call that they may be changed; a request counts itself, its latency, each
statement and its commit, and an event its outcome and its publication. Counted with
`make bench-instructions` (6 December 2026): the deal's requests spent 1.7 % of their
instructions incrementing metrics, half of it in the locks.

`LoopCounter` and `LoopHistogram` keep plain numbers, changed without a lock, and turn
them into the same samples as prometheus_client's own (the `_total`, `_bucket`, `_count`,
`_sum` and `_created` series, by the same names and labels) when the registry is
collected. That holds because a service changes them on its event loop's thread only,
and collects them there too (`GET /metrics` is an async route): threads of its own
(`asyncio.to_thread`) count nothing. A metric changed from another thread, or rarely
(a gauge, a failure), stays prometheus_client's.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import INF, floatToGoString


def _created_series() -> bool:
    """Whether `_created` series are exposed: prometheus_client's own rule, so that every
    metric of a registry does the same."""
    disabled = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False")
    return disabled.lower() not in ("true", "1", "t")


class LoopCount:
    """One series of a `LoopCounter` (one set of label values)."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        """Add `amount`. A negative one is refused, as prometheus_client refuses it: a
        counter only grows, and a rate over one that fell reads as a reset. One
        comparison, next to the attribute write it guards."""
        if amount < 0:
            raise ValueError(f"a counter only grows: {amount} refused")
        self.value += amount


class LoopObservations:
    """One series of a `LoopHistogram`: a count per bucket, not cumulated, and the sum."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0.0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        # A bucket counts what is at most its bound: the first bound not below it.
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1.0
        self.sum += amount


Series = TypeVar("Series", LoopCount, LoopObservations)
Sample = tuple[str, dict[str, str], float]
"""A sample of one series: the suffix of the metric's name, labels of its own, the value."""


class _LoopMetric(Collector, Generic[Series]):
    """What both kinds share: the name, the labels, the series by label values, and the
    registry's collector protocol."""

    kind = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], Series] = {}
        # A metric without labels has its one series from the start, as prometheus_client's.
        self._unlabelled: Series | None = None if self.labelnames else self.labels()
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> Series:
        """The series of these label values, made at first use (a hot path keeps it)."""
        series = self._series.get(values)
        if series is None:
            key = tuple(str(value) for value in values)  # as prometheus_client's labels()
            series = self._series.get(key)
            if series is None:
                if len(key) != len(self.labelnames):
                    raise ValueError(f"{self.name}: {len(self.labelnames)} label values expected")
                series = self._series[key] = self._new()
        return series

    def _the_series(self) -> Series:
        """The one series of a metric that has no labels."""
        if self._unlabelled is None:
            raise ValueError(f"{self.name}: label values are required")
        return self._unlabelled

    def _new(self) -> Series:
        raise NotImplementedError

    def _samples(self, series: Series) -> Iterable[Sample]:
        raise NotImplementedError

    def describe(self) -> list[Metric]:
        """The metric's name, for the registry to refuse a second one by that name."""
        return [Metric(self.name, self.documentation, self.kind)]

    def collect(self) -> list[Metric]:
        metric = Metric(self.name, self.documentation, self.kind)
        created = _created_series()
        # A copy: a request may add a series while the exposition is being written.
        for values, series in list(self._series.items()):
            labels = dict(zip(self.labelnames, values, strict=True))
            for suffix, extra, value in self._samples(series):
                if suffix == "_created" and not created:
                    continue
                metric.add_sample(self.name + suffix, {**labels, **extra}, value)
        return [metric]


class LoopCounter(_LoopMetric[LoopCount]):
    """A Prometheus counter changed on the event loop only (the module's docstring)."""

    kind = "counter"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: CollectorRegistry | None,
    ) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames, registry)

    def inc(self, amount: float = 1.0) -> None:
        """Add `amount` to a counter that has no labels."""
        self._the_series().inc(amount)

    def _new(self) -> LoopCount:
        return LoopCount()

    def _samples(self, series: LoopCount) -> Iterable[Sample]:
        return (("_total", {}, series.value), ("_created", {}, series.created))


class LoopHistogram(_LoopMetric[LoopObservations]):
    """A Prometheus histogram observed on the event loop only (the module's docstring)."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry | None,
    ) -> None:
        bounds = sorted(float(bound) for bound in buckets)
        if not bounds or bounds[-1] != INF:
            bounds.append(INF)
        self._bounds = tuple(bounds)
        # Each bound as prometheus_client writes it in `le` ("0.005", "1.0", "+Inf").
        self._les = tuple(floatToGoString(bound) for bound in bounds)  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry)

    def observe(self, amount: float) -> None:
        """Observe `amount` on a histogram that has no labels."""
        self._the_series().observe(amount)

    def _new(self) -> LoopObservations:
        return LoopObservations(self._bounds)

    def _samples(self, series: LoopObservations) -> Iterable[Sample]:
        cumulated = 0.0
        for le, count in zip(self._les, series.counts, strict=True):
            cumulated += count
            yield "_bucket", {"le": le}, cumulated
        yield "_count", {}, cumulated
        yield "_sum", {}, series.sum
        yield "_created", {}, series.created
