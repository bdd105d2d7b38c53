"""Progress of a long valuation: done/total, rate, ETA, logged at ~5% steps."""

from __future__ import annotations

import time
from typing import Callable


class BatchProgress:
    def __init__(self, total: int, already_done: int = 0, log: Callable[..., None] = print, steps: int = 20):
        self.total = total
        self.done = already_done
        self.start_done = already_done
        self.samples = 0
        self.fits = 0
        self.fallbacks = 0
        self.log = log
        self.every = max(1, total // steps)
        self.started = time.perf_counter()

    def update(self, samples: int, fits: int, fallbacks: int) -> None:
        self.done += 1
        self.samples += samples
        self.fits += fits
        self.fallbacks += fallbacks
        if self.done % self.every and self.done != self.total:
            return
        elapsed = time.perf_counter() - self.started
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        self.log(
            f"batches {self.done}/{self.total} ({self.done / self.total:.0%}): "
            f"{self.samples:,} samples, {self.fits:,} fits ({self.fits / max(elapsed, 1e-9):,.0f}/s), "
            f"{self.fallbacks:,} of them fallback fits (degenerate subsets); elapsed {elapsed:.1f} s, ETA {eta:.1f} s"
        )
