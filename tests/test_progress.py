"""Batches sized by work and the progress lines a long run prints."""

from __future__ import annotations

import re

import pytest

from amortval.tasks.batch_sizes import BatchSizer
from amortval.tasks.progress import Progress


def drain(sizer: BatchSizer, seconds_per_unit: float) -> list[range]:
    out = []
    while (batch := sizer.next()) is not None:
        out.append(batch)
        sizer.observe(len(batch), len(batch) * seconds_per_unit)
    return out


@pytest.mark.parametrize("workers", [1, 2, 5])
@pytest.mark.parametrize("seconds_per_unit", [1e-4, 0.5, 30.0])
def test_batches_cover_every_pending_unit_once_in_order(seconds_per_unit, workers):
    segments = [range(0, 64), range(100, 164), range(200, 210)]
    batches = drain(BatchSizer(segments, target_s=20.0, workers=workers), seconds_per_unit)
    units = [u for b in batches for u in b]
    assert units == [u for s in segments for u in s]
    assert all(any(b.start >= s.start and b.stop <= s.stop for s in segments) for b in batches), "never across a gap"


def test_first_batches_are_small_then_sized_to_the_target():
    sizer = BatchSizer([range(0, 800)], target_s=20.0)
    first = sizer.next()
    assert len(first) == 100  # 1/8 of the planned segment: a rate and a line come early
    sizer.observe(len(first), 100 * 0.01)  # 10 ms a unit: 2,000 units would take 20 s...
    assert len(sizer.next()) == 400  # ...but growth is at most 4x per batch
    sizer.observe(400, 400 * 0.01)
    assert len(sizer.next()) == 300  # capped at the planned segment (what is left of it)


def test_with_two_workers_the_last_batches_shrink_so_both_finish_together():
    sizer = BatchSizer([range(0, 1_000)], target_s=20.0, workers=2)
    sizes = [len(b) for b in drain(sizer, seconds_per_unit=0.1)]  # 200 units fit the target
    assert sum(sizes) == 1_000
    left = 1_000 - sizes[0]
    for size in sizes[1:]:
        assert size <= max(20, -(-left // 4)), (size, left)  # a quarter of what is left, at least 2 s
        left -= size
    assert sizes[-1] <= 20 and len(sizes) > 1_000 // 200
    one = [len(b) for b in drain(BatchSizer([range(0, 1_000)], target_s=20.0), seconds_per_unit=0.1)]
    assert all(size in (125, 200) for size in one[:-1]), "one worker: sized by time only"
    fast = [len(b) for b in drain(BatchSizer([range(0, 1_000)], target_s=20.0, workers=2), seconds_per_unit=1e-4)]
    assert fast == [125, 500, 375], "units of 0.1 ms: no batch of under 2 s of work"


def test_slow_units_get_batches_of_one():
    sizer = BatchSizer([range(0, 10)], target_s=20.0)
    sizer.observe(1, 120.0)  # a unit takes two minutes
    assert len(sizer.next()) == 1


def test_progress_lines_count_rate_and_eta():
    lines = []
    progress = Progress("sampling", 100, unit="units", already_done=20, log=lines.append, bar=False, steps=4)
    progress.update(25, samples=500, fits=250)
    assert lines, "a 25% step prints a line"
    assert re.search(r"sampling: 45/100 units \(45%\): 500 samples, 250 fits \([\d,]+ fits/s\); "
                     r"elapsed \d+ s, ETA ", lines[-1]), lines[-1]
    assert progress.eta() == pytest.approx(55 / 25 * progress.elapsed(), rel=0.5)


def test_eta_follows_the_pace_after_start_up(monkeypatch):
    """A 1M-row run on one Dask worker: 20 s of start-up (the worker loads the problem)
    before the first batch, then 10 units a second. The ETA is the pace after start-up,
    not the start-up spread over the work."""
    clock = [0.0]
    monkeypatch.setattr("amortval.tasks.progress.time.perf_counter", lambda: clock[0])
    progress = Progress("sampling", 1_000, unit="units", log=lambda line: None, bar=False)
    assert progress.eta() != progress.eta(), "unknown before any work"
    clock[0] = 20.0
    progress.update(10)
    assert progress.eta() == pytest.approx(990 * 20.0 / 10), "one batch: the only pace there is"
    for _ in range(30):
        clock[0] += 1.0
        progress.update(10)
    assert progress.done == 310
    assert progress.eta() == pytest.approx(69.0), "690 units left at 10/s"
    assert progress.elapsed() * (1_000 - 310) / 310 > 100, "the whole-run pace would say over 100 s"


def test_a_heartbeat_line_while_nothing_finishes():
    lines = []
    progress = Progress("sampling", 10, unit="units", log=lines.append, bar=False, every_s=0.0)
    progress.heartbeat()
    assert lines and "0/10 units" in lines[-1] and "ETA unknown" in lines[-1]


def test_the_plan_warns_when_one_unit_is_a_long_chain():
    from types import SimpleNamespace

    from amortval.tasks.config import RunConfig
    from amortval.tasks.run_plan import describe
    from amortval.tasks.samplers import make_sampler

    def plan(n: int, **options):
        config = RunConfig.from_options(**options)
        sampler = make_sampler(config.sampling, n)
        return SimpleNamespace(config=config, sampler=sampler, n_points=n, n_sampled=config.sampling.n_sampled(n),
                               samples=config.sampling.samples, n_units=sampler.n_units(config.sampling.samples))

    big = plan(36_000, samples=2)
    line = describe(big, [range(0, big.n_units)])
    assert "20,000 fits" in line and "--method distributional" in line, line
    small = plan(500)
    assert "distributional" not in describe(small, [range(0, small.n_units)])
    blocks = plan(36_000, samples=2, method="distributional")
    assert "distributional" not in describe(blocks, [range(0, blocks.n_units)])
