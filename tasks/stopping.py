"""Anytime valuation: sample in rounds of growing budgets until a stopping rule holds.

Each round extends the same sampling (the draws of a smaller budget are a prefix of a
larger one's, issue 5), re-amortizes on all draws so far and records a ``Round``: the
budget reached, the fits and wall time so far, the network's *estimated* normalized
error (``tasks/error_estimate.py``: no ground truth needed) and the lowest-valued rows.

Rules look at the rounds so far and say why to stop (or None to go on):

- ``TargetError(e)``: the estimated normalized error plus one standard error is at most e;
- ``TimeBudget(seconds)``: the wall time is spent (the schedule also sizes the last
  round to fit what is left, ``next_samples``);
- ``MaxSamples(m)``: m samples per point reached (``--samples``, which caps every rule);
- ``UntilStable(overlap)``: the lowest ``LOWEST_SHARE`` of the rows of the last two rounds
  share at least ``overlap`` of their members.

They compose: ``TargetError(0.1) | TimeBudget(600)`` stops at whichever comes first,
``TargetError(0.1) & UntilStable()`` only when both hold. ``str(rule)`` is the rule's
text (``target_error(0.1) | time_budget(600)``), which ``parse`` reads back: that is how
a composed rule travels in the run config (``--rule``) to the flow and into the run's
identity.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass

import numpy as np

from amortval.errors import ConfigError
from amortval.tasks.config import LOWEST_SHARE, RunConfig

GROWTH = 2  # each round doubles the samples per point


@dataclass(frozen=True)
class Round:
    index: int  # 1-based
    samples: int  # samples per point reached
    fits: int  # model fits of the budget so far (stored ones included)
    seconds: float  # wall time since the run started
    sampling_seconds: float  # this round's sampling wall time
    amortize_seconds: float  # this round's amortization wall time
    estimated_nmse: float
    estimated_nmse_se: float  # standard error of the estimate
    lowest: frozenset[int]  # rows valued lowest (LOWEST_SHARE of the training rows)


class Rule:
    """A stopping rule: ``reason(rounds)`` is why to stop after the last round, or None."""

    def reason(self, rounds: list[Round]) -> str | None:
        raise NotImplementedError

    def __or__(self, other: Rule) -> Rule:
        return AnyOf(self, other)

    def __and__(self, other: Rule) -> Rule:
        return AllOf(self, other)


@dataclass(frozen=True, repr=False)
class AnyOf(Rule):
    left: Rule
    right: Rule

    def reason(self, rounds: list[Round]) -> str | None:
        return self.left.reason(rounds) or self.right.reason(rounds)

    def __repr__(self) -> str:
        return f"{_grouped(self.left, AllOf)} | {_grouped(self.right, AllOf)}"


@dataclass(frozen=True, repr=False)
class AllOf(Rule):
    left: Rule
    right: Rule

    def reason(self, rounds: list[Round]) -> str | None:
        first, second = self.left.reason(rounds), self.right.reason(rounds)
        return f"{first} and {second}" if first and second else None

    def __repr__(self) -> str:
        return f"{_grouped(self.left, AnyOf)} & {_grouped(self.right, AnyOf)}"


def _grouped(rule: Rule, looser: type) -> str:
    return f"({rule!r})" if isinstance(rule, looser) else repr(rule)


def _check_positive(name: str, value: object, what: str) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive {what} (got {value!r})")


@dataclass(frozen=True, repr=False)
class TargetError(Rule):
    error: float

    def __post_init__(self) -> None:
        _check_positive("target_error", self.error, "number")

    def reason(self, rounds: list[Round]) -> str | None:
        last = rounds[-1]
        upper = last.estimated_nmse + last.estimated_nmse_se
        return (f"estimated error {last.estimated_nmse:.3g} + {last.estimated_nmse_se:.2g} (one standard error) "
                f"<= target {self.error:g}" if upper <= self.error else None)

    def __repr__(self) -> str:
        return f"target_error({self.error:g})"


@dataclass(frozen=True, repr=False)
class TimeBudget(Rule):
    seconds: float

    def __post_init__(self) -> None:
        _check_positive("time_budget", self.seconds, "number of seconds")

    def reason(self, rounds: list[Round]) -> str | None:
        last = rounds[-1]
        if last.seconds >= self.seconds:
            return f"time budget {self.seconds:g} s spent ({last.seconds:.0f} s)"
        if next_round_seconds(rounds, last.samples + 1) > self.seconds - last.seconds:
            return f"time budget {self.seconds:g} s: not even one more sample per point fits in what is left"
        return None

    def __repr__(self) -> str:
        return f"time_budget({self.seconds:g})"


@dataclass(frozen=True, repr=False)
class MaxSamples(Rule):
    samples: int

    def __post_init__(self) -> None:
        if not (isinstance(self.samples, int) and self.samples >= 1):
            raise ConfigError(f"max_samples must be a whole number of samples per point, at least 1 (got {self.samples!r})")

    def reason(self, rounds: list[Round]) -> str | None:
        return f"cap of {self.samples} samples per point reached" if rounds[-1].samples >= self.samples else None

    def __repr__(self) -> str:
        return f"max_samples({self.samples})"


@dataclass(frozen=True, repr=False)
class UntilStable(Rule):
    overlap: float = 0.9

    def __post_init__(self) -> None:
        if not (isinstance(self.overlap, (int, float)) and 0 < self.overlap <= 1):
            raise ConfigError(f"until_stable's overlap must be in (0, 1] (got {self.overlap!r})")

    def reason(self, rounds: list[Round]) -> str | None:
        if len(rounds) < 2 or not rounds[-1].lowest:
            return None
        shared = overlap(rounds[-2].lowest, rounds[-1].lowest)
        return (f"the lowest {LOWEST_SHARE:.0%} kept {shared:.0%} of its rows (>= {self.overlap:.0%})"
                if shared >= self.overlap else None)

    def __repr__(self) -> str:
        return f"until_stable({self.overlap:g})"


RULES = {"target_error": TargetError, "time_budget": TimeBudget, "max_samples": MaxSamples,
         "until_stable": UntilStable}


def parse(text: str) -> Rule:
    """A rule from its text (``str(rule)``): calls of the rule names with numbers, ``|``, ``&``
    and parentheses. Anything else is a ConfigError naming the problem."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ConfigError("is not a rule; write e.g. 'target_error(0.1) | time_budget(600)'") from None
    return _build(tree)


def _build(node: ast.AST) -> Rule:
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitOr, ast.BitAnd)):
        left, right = _build(node.left), _build(node.right)
        return left | right if isinstance(node.op, ast.BitOr) else left & right
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in RULES and not node.keywords:
        args = [_number(a) for a in node.args]
        if None not in args:
            try:
                return RULES[node.func.id](*args)
            except TypeError:
                pass
    raise ConfigError(f"{ast.unparse(node)!r} is not a rule; rules are "
                      f"{', '.join(f'{name}(...)' for name in RULES)} with numbers, joined by | and &")


def _number(node: ast.AST) -> float | None:
    """A literal number (negative ones too: the rule then names the problem), else None."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _number(node.operand)
        return None if inner is None else -inner
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    return None


def rule_of(config: RunConfig) -> Rule | None:
    """The config's rule without the cap: ``--rule`` if given, else the flags joined by ``|``;
    None when no rule is set (one round at ``--samples``)."""
    stopping = config.stopping
    if stopping.rule is not None:
        return parse(stopping.rule)
    rules: list[Rule] = []
    if stopping.target_error is not None:
        rules.append(TargetError(stopping.target_error))
    if stopping.time_budget is not None:
        rules.append(TimeBudget(stopping.time_budget))
    if stopping.until_stable:
        rules.append(UntilStable(stopping.stable_overlap))
    if not rules:
        return None
    combined = rules[0]
    for rule in rules[1:]:
        combined = combined | rule
    return combined


def stop_reason(config: RunConfig, rounds: list[Round]) -> str | None:
    """Why sampling stops after the last round (the cap always applies), or None."""
    rule = rule_of(config)
    cap = MaxSamples(config.sampling.samples)
    return (cap if rule is None else cap | rule).reason(rounds)


def first_samples(config: RunConfig) -> int:
    """The first round's samples per point: the whole cap when no rule is set."""
    cap, rule = config.sampling.samples, rule_of(config)
    return cap if rule is None else int(min(cap, config.stopping.first_round, _bound(rule, MaxSamples, "samples") or cap))


def next_samples(config: RunConfig, rounds: list[Round]) -> int:
    """The next round's samples per point: double the last, at most the cap, and with a
    time budget at most what the rest of it has room for (by the last round's pace)."""
    last, rule = rounds[-1], rule_of(config)
    target = int(min(config.sampling.samples, last.samples * GROWTH, _bound(rule, MaxSamples, "samples") or math.inf))
    budget = _bound(rule, TimeBudget, "seconds")
    if budget is None:
        return target
    left = budget - last.seconds
    while target > last.samples + 1 and next_round_seconds(rounds, target) > left:
        target = last.samples + (target - last.samples) // 2
    return target


def next_round_seconds(rounds: list[Round], samples: int) -> float:
    """Predicted wall time of a round to ``samples`` per point: the last round's sampling
    pace per added sample, plus its amortization time grown with the samples."""
    last = rounds[-1]
    added_before = last.samples - (rounds[-2].samples if len(rounds) > 1 else 0)
    per_sample = last.sampling_seconds / max(added_before, 1)
    return per_sample * (samples - last.samples) + last.amortize_seconds * samples / last.samples


def _bound(rule: Rule | None, kind: type, attribute: str) -> float | None:
    """The smallest time budget or sample cap (``kind``) that stops the rule on its own, if
    any: it bounds the schedule. One inside ``&`` stops nothing alone."""
    if isinstance(rule, kind):
        return getattr(rule, attribute)
    if isinstance(rule, AnyOf):
        found = [b for b in (_bound(rule.left, kind, attribute), _bound(rule.right, kind, attribute)) if b is not None]
        return min(found) if found else None
    return None


def lowest_rows(values: np.ndarray, share: float = LOWEST_SHARE) -> frozenset[int]:
    """The rows of the lowest ``share`` of ``values`` (at least one; ties by row order)."""
    k = max(1, int(round(share * values.size)))
    return frozenset(int(i) for i in np.argsort(values, kind="stable")[:k])


def overlap(a: frozenset[int], b: frozenset[int]) -> float:
    """Share of ``b``'s rows also in ``a`` (sets of the same size: symmetric)."""
    return len(a & b) / max(len(b), 1)


def make_round(rounds: list[Round], samples: int, fits: int, seconds: float, sampling_seconds: float,
               amortize_seconds: float, values: np.ndarray, estimated_nmse: float, estimated_nmse_se: float) -> Round:
    """The round just finished, numbered after ``rounds``."""
    return Round(index=len(rounds) + 1, samples=samples, fits=fits, seconds=seconds,
                 sampling_seconds=sampling_seconds, amortize_seconds=amortize_seconds,
                 estimated_nmse=estimated_nmse, estimated_nmse_se=estimated_nmse_se, lowest=lowest_rows(values))


def round_line(config: RunConfig, rounds: list[Round], reason: str | None) -> str:
    """'round 3: 8 samples per point, 12,000 fits, 41 s; estimated error 0.31 (target 0.2); next 16'."""
    last, rule = rounds[-1], rule_of(config)
    target = f" (target {config.stopping.target_error:g})" if config.stopping.target_error is not None \
        and config.stopping.rule is None else ""
    stable = f"; lowest {LOWEST_SHARE:.0%} kept {overlap(rounds[-2].lowest, last.lowest):.0%}" if len(rounds) > 1 else ""
    head = (f"round {last.index}: {last.samples} samples per point, {last.fits:,} model fits, {last.seconds:.0f} s; "
            f"estimated error (nMSE) {last.estimated_nmse:.3g} +- {last.estimated_nmse_se:.2g}{target}{stable}")
    if reason is not None:
        return f"{head}; stopping: {reason}" + ("" if rule is not None else " (no stopping rule: one round)")
    return f"{head}; next round: {next_samples(config, rounds)} samples per point"
