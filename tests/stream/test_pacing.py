"""The step sizer and the loop monitor's window, on numbers (no server involved)."""

from __future__ import annotations

import pytest

from fraudstack.aggregate.loop_monitor import LoopMonitor
from fraudstack.aggregate.pacing import StepSizer


def test_steps_grow_at_most_twofold_and_shrink_to_the_budget_at_once() -> None:
    sizer = StepSizer(budget_s=0.2, first=500, largest=50_000)
    sizer.record(500, 0.01)  # 20 µs a record: 10,000 would fit, but one step at a time
    assert sizer.size == 1_000
    sizer.record(1_000, 0.02)
    assert sizer.size == 2_000
    sizer.record(2_000, 2.0)  # 1 ms a record now (a hot terminal): 200 fit the budget
    assert sizer.size == 200
    sizer.record(200, 0.0)  # under a clock tick: not taken as free
    assert sizer.size == 400
    for _ in range(20):
        sizer.record(sizer.size, 0.0)
    assert sizer.size == 50_000  # never beyond the largest batch


def test_a_step_is_never_empty() -> None:
    sizer = StepSizer(budget_s=0.2, smallest=50)
    sizer.record(10, 60.0)
    assert sizer.size == 50
    with pytest.raises(ValueError):
        StepSizer(budget_s=0)


def test_the_monitor_keeps_the_longest_stall_of_the_window_and_of_the_run() -> None:
    published: list[float] = []
    monitor = LoopMonitor(window_s=60.0, publish=published.append)
    monitor.record(0.001, now=0.0)
    monitor.record(3.0, now=10.0)
    monitor.record(0.5, now=20.0)
    assert monitor.recent_longest_s == 3.0
    monitor.record(0.002, now=71.0)  # the 3 s stall is older than the window now
    assert monitor.recent_longest_s == 0.5
    monitor.record(0.002, now=81.0)
    assert monitor.recent_longest_s == 0.002
    assert monitor.longest_s == 3.0
    assert published == [0.001, 3.0, 3.0, 0.5, 0.002]
