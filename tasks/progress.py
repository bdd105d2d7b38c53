"""Progress of long work: Monte Carlo units and amortization epochs, with rate and ETA.

One class for both. On a terminal it draws a rich progress bar (done/planned, rate,
elapsed, ETA) on stderr; everywhere it also sends milestone lines to ``log`` (a Prefect
logger in the flow, ``print`` in benchmarks), at 10% steps and at least every
``every_s`` seconds, so a deployment's log and a piped terminal show progress within the
first minute too. While a bar is drawn the milestone lines go to ``log`` only at the
end, so they do not tear through it.

The ETA extrapolates the pace since the first work finished (units, which cost about the
same each): the time before it is start-up (workers loading the problem, the first batch
filling the pipeline), paid once, and counting it made the first ETA of a 1M-row run on
one Dask worker 24 minutes for a sampling that took 10.5. Work stored by an earlier run
is counted as done but not in the pace.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

# AMORTVAL_PROGRESS=off: no bar even on a terminal (lines only); =bar: a bar even when
# stderr is not a terminal (for recording a demo).
_SETTING = "AMORTVAL_PROGRESS"


def bar_wanted() -> bool:
    setting = os.environ.get(_SETTING, "").lower()
    if setting in ("off", "0", "no", "false"):
        return False
    return setting == "bar" or sys.stderr.isatty()


def duration(seconds: float) -> str:
    """Wall time as people read it: '45 s', '3 min 05 s', '2 h 10 min'."""
    if seconds != seconds or seconds == float("inf"):
        return "unknown"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """done/total of ``what`` (e.g. "sampling", in Monte Carlo "units")."""

    def __init__(self, what: str, total: int, *, unit: str, already_done: int = 0,
                 log: Callable[[str], None] = print, steps: int = 10, every_s: float = 30.0,
                 bar: bool | None = None):
        self.what, self.unit, self.total, self.log = what, unit, max(int(total), 0), log
        self.done = self.start_done = int(already_done)
        self.counts: dict[str, int] = {}
        self.step = max(1, self.total // steps)
        self.every_s = every_s
        self.started = self.last_line = time.perf_counter()
        self.next_mark = self.done + self.step
        self._first: tuple[float, int] | None = None  # (time, done) when work first finished
        self._bar = self._task = None
        if bar if bar is not None else bar_wanted():
            self._start_bar()

    # -- updates -------------------------------------------------------------------------
    def update(self, done: int, **counts: int) -> None:
        """``done`` more units finished; ``counts`` (samples=, fits=, ...) add up."""
        if self._first is None and done > 0:
            self._first = (time.perf_counter(), self.done + int(done))
        self.done += int(done)
        for name, value in counts.items():
            self.counts[name] = self.counts.get(name, 0) + int(value)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=self._rate_text())
        now = time.perf_counter()
        if self.done >= self.next_mark or self.done >= self.total or now - self.last_line >= self.every_s:
            self.next_mark = (self.done // self.step + 1) * self.step
            self._line(now)

    def heartbeat(self) -> None:
        """Called while waiting: a line if nothing was said for ``every_s`` seconds."""
        now = time.perf_counter()
        if now - self.last_line >= self.every_s:
            self._line(now)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            self.log(self.line())

    # -- text ----------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def eta(self) -> float:
        """Seconds left at the pace since the first work finished; at the pace since the
        start while only that first work is done; NaN (unknown) before."""
        if self.done <= self.start_done:
            return float("nan")
        since, done_then = self._first
        if self.done > done_then:
            return (self.total - self.done) * (time.perf_counter() - since) / (self.done - done_then)
        return (self.total - self.done) * self.elapsed() / (self.done - self.start_done)

    def line(self) -> str:
        counts = ", ".join(f"{value:,} {name.replace('_', ' ')}" for name, value in self.counts.items())
        rate = self._rate_text()
        return (f"{self.what}: {self.done:,}/{self.total:,} {self.unit} ({self.done / max(self.total, 1):.0%})"
                + (f": {counts}" if counts else "") + (f" ({rate})" if rate else "")
                + f"; elapsed {duration(self.elapsed())}, ETA {duration(self.eta())}")

    def _rate_text(self) -> str:
        fits = self.counts.get("fits")
        elapsed = self.elapsed()
        return f"{fits / elapsed:,.0f} fits/s" if fits and elapsed > 0 else ""

    def _line(self, now: float) -> None:
        self.last_line = now
        if self._bar is None:
            self.log(self.line())

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, \
            TimeElapsedColumn, TimeRemainingColumn

        self._bar = Bar(TextColumn(f"{self.what}"), BarColumn(), MofNCompleteColumn(), TextColumn(self.unit),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                        TimeRemainingColumn(), console=Console(stderr=True), transient=False)
        self._task = self._bar.add_task(self.what, total=self.total, completed=self.done, rate="")
        self._bar.start()
