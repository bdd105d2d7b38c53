"""Monte Carlo samplers of marginal contributions (see base.py for the row contract)."""

from __future__ import annotations

from amortval.tasks.config import ValuationConfig
from amortval.tasks.samplers.base import SampleBatch, Sampler, batch_rng
from amortval.tasks.samplers.independent import IndependentSampler
from amortval.tasks.samplers.msr import MSRSampler
from amortval.tasks.samplers.permutation import PermutationSampler
from amortval.tasks.semivalues import size_distribution

__all__ = ["SampleBatch", "Sampler", "batch_rng", "make_sampler"]


def make_sampler(config: ValuationConfig, n: int) -> Sampler:
    """The sampler the config names, sized so a batch is about ``batch_fits`` fits."""
    if config.sampler == "msr":
        return MSRSampler(n, config.samples, config.batch_fits)
    pmf = size_distribution(config.method, n - 1, alpha=config.alpha, beta=config.beta)
    if config.sampler == "permutation":
        return PermutationSampler(n, config.samples, pmf, config.batch_fits)
    return IndependentSampler(n, config.samples, pmf, config.batch_fits)
