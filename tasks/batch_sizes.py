"""Batches sized by work: each Prefect task carries seconds, not hours, whatever the table.

The planner cuts the pending Monte Carlo units at ``--batch-fits`` fits (``plan_segments``);
a fit's cost, though, ranges from a millisecond (a batched logistic regression on a
small table) to seconds (XGBoost on tens of thousands of rows). ``BatchSizer`` cuts those
segments further, as the run goes: the first batches are small, so the first progress
line and a rate come within seconds, and each finished batch's seconds per unit size the
next ones to about ``target_s`` seconds (growing at most 4x at a time). With several
workers, batches near the end shrink to at most 1/(2 x workers) of the units still to
hand out (never below 2 s of work), so the workers finish together instead of one
waiting on the other's last batch (a 1M-row logreg run on two Dask workers: 16 batches
in 111 s, workers busy 75% of it). Which units a batch holds changes no result (every unit draws from its own stream), only how often the
flow commits and reports.
"""

from __future__ import annotations

import math
from collections import deque

TARGET_SECONDS = 20.0  # per batch: progress at least this often per worker, overhead (~3-100 ms) < 1%
_FIRST_SHARE = 8  # first batches: 1/8 of a planned segment
TAIL_FLOOR_S = 2.0  # the last batches shrink, but not below this much work


class BatchSizer:
    def __init__(self, segments: list[range], target_s: float = TARGET_SECONDS, workers: int = 1):
        self.segments = deque(r for r in segments if len(r))
        self.left = sum(len(r) for r in self.segments)
        self.workers = max(1, int(workers))
        self.max_units = max((len(r) for r in self.segments), default=1)
        self.size = max(1, self.max_units // _FIRST_SHARE)
        self.target_s = target_s
        self.unit_seconds: float | None = None

    def next(self) -> range | None:
        """The next batch of units, or None when every segment is handed out."""
        if not self.segments:
            return None
        segment = self.segments.popleft()
        size = self.size
        if self.workers > 1 and self.unit_seconds is not None:
            # never below TAIL_FLOOR_S of work: on a small table a batch of a few units would
            # cost more in task and commit overhead than the wait it saves
            floor = max(1, math.ceil(TAIL_FLOOR_S / max(self.unit_seconds, 1e-9)))
            size = min(size, max(floor, -(-self.left // (2 * self.workers))))
        batch = range(segment.start, min(segment.stop, segment.start + size))
        self.left -= len(batch)
        if batch.stop < segment.stop:
            self.segments.appendleft(range(batch.stop, segment.stop))
        return batch

    def observe(self, units: int, seconds: float) -> None:
        """A batch of ``units`` took ``seconds`` of worker time: resize the next ones."""
        if units <= 0 or seconds <= 0:
            return
        per_unit = seconds / units
        self.unit_seconds = per_unit if self.unit_seconds is None else 0.5 * (self.unit_seconds + per_unit)
        wanted = int(self.target_s / self.unit_seconds)
        self.size = max(1, min(self.max_units, wanted, 4 * self.size))
