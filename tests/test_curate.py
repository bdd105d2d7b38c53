"""The curation rule on hand-made values."""

from __future__ import annotations

import numpy as np
import pytest

from amortval.errors import ConfigError
from amortval.tasks.curate import CurationRule, select
from amortval.tasks.metrics import auroc, mislabeled_auroc

VALUES = np.array([0.3, -0.2, 0.0, -0.05, 0.1])


def test_default_rule_drops_negative_values():
    kept, reasons = select(VALUES, CurationRule())
    assert kept.tolist() == [True, False, True, False, True]
    assert reasons[1] == "dropped: value -0.2 < threshold 0"
    assert reasons[2] == "kept: value 0 >= threshold 0"


def test_drop_fraction_drops_exactly_the_lowest():
    kept, reasons = select(VALUES, CurationRule(drop_fraction=0.4))
    assert kept.tolist() == [True, False, True, False, True]
    assert all("cut-off -0.05" in r for r in reasons)
    kept, _ = select(VALUES, CurationRule(drop_fraction=0.0))
    assert kept.all()


@pytest.mark.parametrize("kwargs", [dict(threshold=0.0, drop_fraction=0.1), dict(drop_fraction=1.0),
                                    dict(drop_fraction=-0.1), dict(threshold=float("nan"))])
def test_invalid_rules(kwargs):
    with pytest.raises(ConfigError):
        CurationRule(**kwargs)


def test_auroc_matches_pair_counting_with_ties():
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 5, 60).astype(float), rng.random(60) < 0.3
    pos, neg = scores[labels], scores[~labels]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auroc(scores, labels) == pytest.approx(pairs)
    assert mislabeled_auroc(np.array([-1.0, 2.0, 3.0]), np.array([True, False, False])) == 1.0
