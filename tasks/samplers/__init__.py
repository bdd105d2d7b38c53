"""Monte Carlo samplers of marginal contributions (see base.py for the unit contract)."""

from __future__ import annotations

from amortval.tasks.config import SamplingConfig
from amortval.tasks.samplers.base import SampleBatch, Sampler, sampled_points, unit_rng
from amortval.tasks.samplers.distributional import DistributionalSampler
from amortval.tasks.samplers.independent import IndependentSampler
from amortval.tasks.samplers.msr import MSRSampler
from amortval.tasks.samplers.permutation import PermutationSampler
from amortval.tasks.samplers.shared import SharedSampler
from amortval.tasks.semivalues import size_distribution

__all__ = ["SampleBatch", "Sampler", "unit_rng", "make_sampler", "plan_segments", "sampled_points"]


def make_sampler(sampling: SamplingConfig, n: int) -> Sampler:
    """The sampler the config names, for a training set of n points, sampling the rows
    ``--points`` resolves to (coalitions are always drawn from all n)."""
    points = sampled_points(sampling.seed, n, sampling.n_sampled(n))
    if sampling.sampler_name == "msr":
        return MSRSampler(n, points)
    if sampling.sampler_name == "distributional":
        return DistributionalSampler(n, sampling.min_size, sampling.max_size, points)
    pmf = size_distribution(sampling.method, n - 1, alpha=sampling.alpha, beta=sampling.beta,
                            min_size=sampling.min_size, max_size=sampling.max_size)
    if sampling.sampler_name == "permutation":
        return PermutationSampler(n, pmf, points)
    if sampling.sampler_name == "shared":
        return SharedSampler(n, pmf, points)
    return IndependentSampler(n, pmf, points)


def plan_segments(sampler: Sampler, samples: int, batch_fits: int,
                  done: list[tuple[int, int]] = ()) -> list[range]:
    """Unit ranges still to evaluate for a budget of ``samples``, each about ``batch_fits`` fits.

    ``done`` holds the (start, stop) unit ranges already stored (any grouping, from any
    earlier budget or batch size): only the units of [0, n_units) not covered are planned,
    cut at multiples of the batch size so a re-run plans the same batches.
    """
    per_batch = max(1, int(batch_fits // sampler.fits_per_unit))
    total = sampler.n_units(samples)
    covered = sorted((int(a), int(b)) for a, b in done)
    gaps, cursor = [], 0
    for start, stop in covered:
        if start > cursor:
            gaps.append((cursor, min(start, total)))
        cursor = max(cursor, stop)
        if cursor >= total:
            break
    if cursor < total:
        gaps.append((cursor, total))
    segments = []
    for start, stop in gaps:
        edge = start
        while edge < stop:
            cut = min(stop, (edge // per_batch + 1) * per_batch)
            segments.append(range(edge, cut))
            edge = cut
    return [s for s in segments if len(s)]

