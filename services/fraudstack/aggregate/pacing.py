"""How many records one step of the aggregation loop takes: as many as fit a CPU budget.

A poll may hand over tens of thousands of records; applied as one batch, their parsing and
feature computation ran on the event loop without a break (more than 10 s of CPU on a hot
terminal), so the consumer's heartbeats stopped and the group dropped the instance. The loop
now applies a poll in steps; each step's size is the records the last steps applied per second
of CPU times the budget, so a step costs about the budget whatever a record costs today.
"""

from __future__ import annotations


class StepSizer:
    """Sizes the steps from the CPU time the previous ones took.

    Starts small (``first``) because nothing is known about the records' cost yet; shrinks at
    once when a step ran over the budget and grows at most twofold a step, so one cheap step
    (all duplicates, say) cannot make the next one many times the budget.
    """

    def __init__(
        self, budget_s: float, first: int = 500, smallest: int = 50, largest: int = 50_000
    ) -> None:
        if budget_s <= 0:
            raise ValueError("the step budget must be positive")
        self.budget_s = budget_s
        self.smallest = smallest
        self.largest = largest
        self.size = max(smallest, min(first, largest))

    def record(self, records: int, cpu_s: float) -> None:
        """A step of ``records`` took ``cpu_s`` seconds of CPU."""
        if records <= 0:
            return
        # under a clock tick the measure is noise: count it as half of one
        per_record = max(cpu_s, 0.0005) / records
        fits = int(self.budget_s / per_record)
        self.size = max(self.smallest, min(fits, 2 * self.size, self.largest))
