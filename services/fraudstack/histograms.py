"""Many observations of a Prometheus histogram, written in one go.

Each ``Histogram.observe`` of the client library takes a lock and, in multiprocess mode, writes
a memory-mapped file: a few µs, paid per request by the inference service and per event by the
aggregator. A :class:`Tally` counts the observations in plain Python instead, and
:meth:`Tally.write` adds them to the histogram with one write per bucket touched.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from prometheus_client import Histogram


class Tally:
    """Observations of one histogram (or one labelled child) not written to it yet."""

    __slots__ = ("bounds", "buckets", "count", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        #: the histogram's bucket upper bounds, ascending, without +Inf
        self.bounds = bounds
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * (len(bounds) + 1)  # the last one is +Inf

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.buckets[bisect_left(self.bounds, value)] += 1

    def write(self, histogram: Histogram) -> None:
        """Add the observations to ``histogram`` (a child, if it has labels).

        The client library has no public call for this; its histogram children keep one value
        per bucket (``_buckets``, not cumulative) and the sum (``_sum``), as they have for years.
        The services' tests read the scraped buckets back, so a change there would not go
        unnoticed.
        """
        histogram._sum.inc(self.total)
        for index, hits in enumerate(self.buckets):
            if hits:
                histogram._buckets[index].inc(hits)
