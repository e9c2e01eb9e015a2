"""How long the event loop was kept from running other tasks (the longest stall).

aiokafka heartbeats the consumer group from a task on the same event loop as the batches, so
any stretch of work that does not yield holds the heartbeats back; once that stretch passes the
session timeout the broker drops the instance from the group. A monitor task sleeps a short
interval and records how late it woke: its lateness is how long the loop could not run it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable


class LoopMonitor:
    """Measures the event loop's stalls; the longest over the run and over a recent window.

    ``observe`` is called with every lateness measured (for a histogram) and ``publish`` with
    the longest of the last ``window_s`` seconds (for a gauge that falls back once a stall is
    old news).
    """

    def __init__(
        self,
        interval_s: float = 0.05,
        window_s: float = 60.0,
        observe: Callable[[float], None] | None = None,
        publish: Callable[[float], None] | None = None,
    ) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        self._observe = observe
        self._publish = publish
        #: the longest stall since the monitor started, in seconds
        self.longest_s = 0.0
        # (monotonic time, lateness) in decreasing lateness: the front is the window's longest
        self._recent: deque[tuple[float, float]] = deque()

    def record(self, lateness_s: float, now: float) -> None:
        """One measurement: the loop ran the monitor ``lateness_s`` late at ``now``."""
        self.longest_s = max(self.longest_s, lateness_s)
        while self._recent and self._recent[-1][1] <= lateness_s:
            self._recent.pop()  # never the longest again while this one is in the window
        self._recent.append((now, lateness_s))
        while self._recent[0][0] < now - self.window_s:
            self._recent.popleft()
        if self._observe is not None:
            self._observe(lateness_s)
        if self._publish is not None:
            self._publish(self.recent_longest_s)

    @property
    def recent_longest_s(self) -> float:
        """The longest stall of the last ``window_s`` seconds."""
        return self._recent[0][1] if self._recent else 0.0

    async def run(self) -> None:
        """Measure until cancelled."""
        while True:
            asleep_at = time.monotonic()
            await asyncio.sleep(self.interval_s)
            woke_at = time.monotonic()
            self.record(max(0.0, woke_at - asleep_at - self.interval_s), woke_at)
