"""Anytime valuation: stopping rules, their composition, the round schedule and the
error estimate that drives them (tasks/stopping.py, tasks/error_estimate.py)."""

from __future__ import annotations

import numpy as np
import pytest

from amortval.errors import ConfigError
from amortval.tasks.config import RunConfig
from amortval.tasks.error_estimate import (
    estimate_error,
    network_error,
    true_variance,
    true_variance_se,
)
from amortval.tasks.stopping import (MaxSamples, Round, TargetError, TimeBudget, UntilStable, first_samples,
                                     lowest_rows, next_samples, overlap, parse, rule_of, stop_reason)


def rnd(index=1, samples=2, nmse=0.5, se=0.0, seconds=10.0, sampling=8.0, amortize=2.0, lowest=frozenset()):
    return Round(index=index, samples=samples, fits=samples * 100, seconds=seconds, sampling_seconds=sampling,
                 amortize_seconds=amortize, estimated_nmse=nmse, estimated_nmse_se=se, lowest=frozenset(lowest))


def test_target_error_counts_one_standard_error():
    rule = TargetError(0.2)
    assert rule.reason([rnd(nmse=0.15, se=0.04)]) is not None  # 0.19 <= 0.2
    assert rule.reason([rnd(nmse=0.15, se=0.06)]) is None  # 0.21 > 0.2: not sure enough yet
    assert rule.reason([rnd(nmse=float("inf"))]) is None  # no signal told from noise: never met


def test_or_stops_at_either_and_needs_both():
    low, stable = TargetError(0.2), UntilStable(0.9)
    same = frozenset(range(10))
    rounds_low_unstable = [rnd(lowest=same), rnd(2, 4, nmse=0.1, lowest=frozenset(range(5, 15)))]
    rounds_high_stable = [rnd(lowest=same), rnd(2, 4, nmse=0.9, lowest=same)]
    rounds_both = [rnd(lowest=same), rnd(2, 4, nmse=0.1, lowest=same)]
    assert (low | stable).reason(rounds_low_unstable) and (low | stable).reason(rounds_high_stable)
    assert (low & stable).reason(rounds_low_unstable) is None
    assert (low & stable).reason(rounds_high_stable) is None
    assert "and" in (low & stable).reason(rounds_both)


def test_until_stable_reads_the_overlap_of_the_lowest_rows():
    a, b = frozenset(range(10)), frozenset(range(1, 11))
    assert overlap(a, b) == pytest.approx(0.9)
    assert UntilStable(0.9).reason([rnd(lowest=a), rnd(2, 4, lowest=b)]) is not None
    assert UntilStable(0.95).reason([rnd(lowest=a), rnd(2, 4, lowest=b)]) is None
    assert UntilStable(0.9).reason([rnd(lowest=a)]) is None  # one round: nothing to compare
    assert lowest_rows(np.array([5.0, -1.0, 3.0, -2.0, 0.0, 9.0, 8.0, 7.0, 6.0, 4.0])) == frozenset({3})


def test_rule_text_round_trips_and_groups():
    rule = TargetError(0.1) & UntilStable(0.8) | TimeBudget(600)
    assert repr(rule) == "(target_error(0.1) & until_stable(0.8)) | time_budget(600)"
    assert repr(parse(repr(rule))) == repr(rule)
    nested = TargetError(0.1) & (UntilStable() | MaxSamples(20))
    assert repr(parse(repr(nested))) == "target_error(0.1) & (until_stable(0.9) | max_samples(20))"


@pytest.mark.parametrize("text, fragment", [
    ("__import__('os').system('true')", "is not a rule"),
    ("target_error(0.1) &", "is not a rule"),
    ("target_error(-1)", "positive"),
    ("until_stable(1.5)", "(0, 1]"),
    ("max_samples(2.5)", "whole number"),
    ("time_budget('1h')", "is not a rule"),
])
def test_bad_rules_are_one_clear_error(text, fragment):
    with pytest.raises(ConfigError, match="--rule") as error:
        RunConfig.from_options(rule=text)
    assert fragment in str(error.value)


def test_flags_join_with_or_and_the_cap_always_applies():
    config = RunConfig.from_options(samples=8, target_error=0.1, time_budget="20m", until_stable=True)
    assert repr(rule_of(config)) == "target_error(0.1) | time_budget(1200) | until_stable(0.9)"
    assert stop_reason(config, [rnd(samples=8, nmse=0.9)]) == "cap of 8 samples per point reached"
    assert stop_reason(config, [rnd(samples=4, nmse=0.9)]) is None
    off = RunConfig.from_options(samples=8, target_error=None)
    assert rule_of(off) is None and first_samples(off) == 8  # no rule: one round at the cap
    assert first_samples(config) == 2


@pytest.mark.parametrize("text, seconds", [("20m", 1200), ("1h30m", 5400), ("90s", 90), ("45", 45), ("1.5h", 5400)])
def test_time_budget_takes_durations(text, seconds):
    assert RunConfig.from_options(time_budget=text).stopping.time_budget == seconds


def test_rounds_double_up_to_the_cap():
    config = RunConfig.from_options(samples=50)
    assert next_samples(config, [rnd(samples=2)]) == 4
    assert next_samples(config, [rnd(samples=32)]) == 50


def test_time_budget_sizes_the_last_round_to_fit():
    # 2 -> 4 samples took 8 s of sampling (4 s per added sample) and 2 s to amortize (which
    # grows with the samples). 15 s left of a 55 s budget: doubling to 8 would take
    # 16 + 4 = 20 s; 6 takes 8 + 3 = 11 s.
    rounds = [rnd(1, 2, seconds=20), rnd(2, 4, seconds=40, sampling=8.0, amortize=2.0)]
    assert next_samples(RunConfig.from_options(samples=100, time_budget=70), rounds) == 8
    assert next_samples(RunConfig.from_options(samples=100, time_budget=55), rounds) == 6
    assert TimeBudget(55).reason(rounds) is None
    assert TimeBudget(40).reason(rounds) is not None  # spent
    assert TimeBudget(45).reason(rounds) is not None  # one more sample per point does not fit


def test_error_estimate_recovers_a_known_error():
    """Simulated values phi ~ N(0, 1), samples phi + N(0, 3^2), a 'network' with error N(0, 0.5^2):
    the paired estimate of its nMSE (true 0.25) is within two standard errors."""
    rng = np.random.default_rng(0)
    n, m = 4000, 8
    phi = rng.normal(size=n)
    net = phi + rng.normal(scale=0.5, size=n)
    held = phi + rng.normal(scale=3.0, size=n)  # one held-out sample per point
    train = phi[:, None] + rng.normal(scale=3.0, size=(n, m))
    count, mc = np.full(n, float(m)), train.mean(axis=1)
    sample_var = train.var(axis=1, ddof=1)
    variance = true_variance(count, mc, sample_var)
    assert variance == pytest.approx(1.0, rel=0.15)
    constant = train.mean()
    e, se = network_error(variance, (net - held) ** 2 - (constant - held) ** 2)
    assert abs(e / variance - 0.25) < 2 * se / variance
    estimate = estimate_error(count, mc, sample_var, np.zeros(n), e, se)
    assert estimate.nmse == pytest.approx(e / variance)
    assert np.isnan(estimate.nmse_unsampled)


@pytest.mark.parametrize("tails,m,scale", [("normal", 4, 2.0), ("heavy", 4, 2.0), ("normal", 64, 1.0)])
def test_standard_errors_match_the_spread_over_repeated_samplings(tails, m, scale):
    """200 independent samplings of the same values: the spread of the true-variance and
    nMSE estimates across them matches the standard errors one sampling reports (within
    30%). The network is shrunk toward the mean (0.3 phi, true nMSE 0.49), as networks
    trained on very noisy samples are: the held-out comparison then varies little and the
    true values' variance carries much of the uncertainty, which a standard error without
    it understates. Heavy tails: most samples exactly 0, as XGBoost's. Many samples of
    little noise: the values' own spread must not count as noise (the variance is these
    points' variance), or the error would be 3x too large."""
    rng = np.random.default_rng(3)
    n = 2000
    phi = rng.normal(scale=0.5, size=n)
    net = 0.3 * phi
    variances, variance_ses, nmses, nmse_ses, without = [], [], [], [], []
    for _ in range(200):
        noise = rng.normal(scale=scale, size=(n, m + 1))
        if tails == "heavy":  # the same variance in 10% of the samples, 0 elsewhere
            noise *= (rng.random((n, m + 1)) < 0.1) * np.sqrt(10)
        samples = phi[:, None] + noise
        train, held = samples[:, :m], samples[:, m]
        count, mc, sample_var = np.full(n, float(m)), train.mean(axis=1), train.var(axis=1, ddof=1)
        variance = true_variance(count, mc, sample_var)
        e, se = network_error(variance, (net - held) ** 2 - (train.mean() - held) ** 2)
        variance_ses.append(true_variance_se(count, mc, sample_var))
        estimate = estimate_error(count, mc, sample_var, np.zeros(n), e, se, variance_ses[-1])
        variances.append(variance)
        nmses.append(estimate.nmse)
        nmse_ses.append(estimate.nmse_se)
        without.append(estimate_error(count, mc, sample_var, np.zeros(n), e, se).nmse_se)
    assert np.std(variances) == pytest.approx(np.median(variance_ses), rel=0.3)
    assert np.std(nmses) == pytest.approx(np.median(nmse_ses), rel=0.3)
    if m == 4:
        assert np.median(without) < 0.65 * np.std(nmses)  # teeth: the variance term matters here
    else:  # teeth: the terms' plain standard error counts the values' own spread as noise
        terms = (mc - mc.mean()) ** 2 - sample_var / m
        assert np.std(terms) / np.sqrt(n) > 2.5 * np.std(variances)
    assert np.median(nmses) == pytest.approx(0.49, rel=0.15)  # the estimate itself: 0.7^2


def test_noise_only_is_infinite_error_not_zero():
    """Samples with no signal at all: the true values' variance cannot be told from 0, so
    the estimated error is infinite (no target met), never a flattering 0."""
    rng = np.random.default_rng(1)
    n, m = 500, 4
    train, held = rng.normal(size=(n, m)), rng.normal(size=n)
    net = rng.normal(scale=0.1, size=n)  # a network that learned nothing
    count, mc, sample_var = np.full(n, float(m)), train.mean(axis=1), train.var(axis=1, ddof=1)
    variance = true_variance(count, mc, sample_var)
    e, se = network_error(variance, (net - held) ** 2 - (train.mean() - held) ** 2)
    estimate = estimate_error(count, mc, sample_var, np.zeros(n), e, se)
    assert estimate.nmse + estimate.nmse_se > 0.5  # never passes a 0.2 target


def test_the_summary_never_prints_an_unmeasurable_error_as_a_bare_number():
    """One sample per point: the estimate can come out 0 with a standard error of 1e13. The
    summary says it is not measurable yet instead of 'nMSE 0'; a measurable one carries its
    standard error."""
    from amortval.flows.summary import _error

    assert _error(0.0, 7.3e13) == "nMSE not measurable yet (0 ± 7.3e+13; more samples per point tell)"
    assert _error(0.5, float("inf")).startswith("nMSE not measurable yet")
    assert _error(0.5, float("nan")).startswith("nMSE not measurable yet")
    assert _error(0.149, 0.059) == "nMSE 0.149 ± 0.059"
    assert _error(None, None) == "nMSE n/a"
