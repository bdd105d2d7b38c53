"""Which scored points to keep: a value threshold or the lowest fraction dropped.

The reason is kept next to every decision, so a curated dataset explains itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from amortval.errors import ConfigError


@dataclass(frozen=True)
class CurationRule:
    """Drop points whose value is below ``threshold``, or the ``drop_fraction`` lowest.

    Exactly one is set. The default, a threshold of 0, drops the points the network
    estimates to *hurt* the learner (negative marginal contribution on average).
    """

    threshold: float | None = None
    drop_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and self.drop_fraction is not None:
            raise ConfigError("give either --threshold or --drop-fraction, not both")
        if self.threshold is None and self.drop_fraction is None:
            object.__setattr__(self, "threshold", 0.0)
        if self.drop_fraction is not None and not 0.0 <= self.drop_fraction < 1.0:
            raise ConfigError(f"--drop-fraction must be in [0, 1), got {self.drop_fraction}")
        if self.threshold is not None and not np.isfinite(self.threshold):
            raise ConfigError(f"--threshold must be a finite number, got {self.threshold}")

    def describe(self) -> str:
        if self.drop_fraction is not None:
            return f"drop the lowest {self.drop_fraction:.1%}"
        return f"drop values below {self.threshold:g}"


def select(values: np.ndarray, rule: CurationRule) -> tuple[np.ndarray, list[str]]:
    """(kept mask, reason per point). Ties at a fraction's cut-off keep input order stable."""
    values = np.asarray(values, dtype=np.float64)
    if rule.drop_fraction is not None:
        n_drop = int(round(rule.drop_fraction * len(values)))
        order = np.argsort(values, kind="stable")
        kept = np.ones(len(values), dtype=bool)
        kept[order[:n_drop]] = False
        cut = values[order[n_drop - 1]] if n_drop else -np.inf
        criterion = f"the lowest {rule.drop_fraction:.1%} (cut-off {cut:.6g})"
        if_kept, if_dropped = f"above {criterion}", f"in {criterion}"
    else:
        kept = values >= rule.threshold
        if_kept, if_dropped = f">= threshold {rule.threshold:g}", f"< threshold {rule.threshold:g}"
    reasons = [
        f"kept: value {v:.6g} {if_kept}" if k else f"dropped: value {v:.6g} {if_dropped}"
        for v, k in zip(values, kept)
    ]
    return kept, reasons


def curation_metrics(values: np.ndarray, kept: np.ndarray, flags: np.ndarray | None) -> dict[str, float]:
    """Rows scored, kept, dropped; with known label errors (``flags``), how well dropping finds them."""
    from amortval.tasks.metrics import mislabeled_auroc

    metrics = {"rows_scored": len(values), "rows_kept": int(kept.sum()), "rows_dropped": int((~kept).sum())}
    if flags is not None:
        metrics["mislabeled_auroc"] = mislabeled_auroc(values, flags)
        metrics["dropped_mislabeled_precision"] = float(flags[~kept].mean()) if (~kept).any() else float("nan")
        metrics["mislabeled_recall"] = float((~kept)[flags].mean()) if flags.any() else float("nan")
    return metrics
