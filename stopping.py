"""Stopping rules for ``amortval.value(..., stop=...)``, composed with ``|`` and ``&``.

    from amortval.stopping import TargetError, TimeBudget, UntilStable
    amortval.value("loans.csv", target="defaulted", stop=TargetError(0.1) & UntilStable() | TimeBudget(3600))

See ``amortval/tasks/stopping.py`` for what each rule reads.
"""

from amortval.tasks.stopping import AllOf, AnyOf, MaxSamples, Rule, TargetError, TimeBudget, UntilStable, parse

__all__ = ["AllOf", "AnyOf", "MaxSamples", "Rule", "TargetError", "TimeBudget", "UntilStable", "parse"]
