"""Every option's bounds and non-finite values through ``amortval value``: one line, nothing written.

The cases are generated from ``RunConfig`` (``option_fields()``): for each numeric option a
value just past each bound it declares, ``nan``/``inf``/``-inf`` for floats, a fraction and
``nan`` for integers, and an unknown word for every option with choices. An option added
to the config is covered without touching this file. Each case runs in-process and must
exit 2 with one ``amortval: error:`` line naming the option, before any work: no store
folder, inputs unchanged.
"""

from __future__ import annotations

import math
import time
import typing
from pathlib import Path

import polars as pl
import pytest
from annotated_types import Ge, Gt, Le, Lt

from amortval.data.demo import make_demo
from amortval.flows.cli import _type, flag, main
from amortval.tasks.config import option_fields


def _outside(field) -> list[str]:
    """Values just past the bounds ``field`` declares (none for an unbounded side)."""
    kind, _ = _type(field.annotation)
    step = 1 if kind is int else 0
    values = []
    for bound in field.metadata:
        if isinstance(bound, Ge):
            values.append(bound.ge - 1 if kind is int else math.nextafter(bound.ge, -math.inf))
        elif isinstance(bound, Gt):
            values.append(bound.gt - step)
        elif isinstance(bound, Le):
            values.append(bound.le + 1 if kind is int else math.nextafter(bound.le, math.inf))
        elif isinstance(bound, Lt):
            values.append(bound.lt + step)
    return [repr(v) if isinstance(v, float) else str(v) for v in values]


def option_cases() -> dict[str, tuple[str, str]]:
    """'--samples 0' -> (flag, value) for every generated case."""
    cases = {}
    for name, field in option_fields().items():
        kind, choices = _type(field.annotation)
        values: list[str] = []
        if choices:
            values = ["no-such-choice"]
        elif kind is float:
            values = [*_outside(field), "nan", "inf", "-inf"]
        elif kind is int:
            values = [*_outside(field), "1.5", "nan"]
        for value in values:
            cases[f"{flag(name)} {value}"] = (flag(name), value)
    return cases


CASES = option_cases()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("options")
    make_demo(seed=2, n_train=30, n_valid=10, n_new=10).train.drop("flipped").write_parquet(root / "train.parquet")
    return root


def test_every_numeric_and_choice_option_is_covered():
    """The generator must not silently skip an option that has bounds, or any float or choice option."""
    covered = {flag_ for flag_, _ in CASES.values()}
    for name, field in option_fields().items():
        kind, choices = _type(field.annotation)
        if choices or kind is float or (kind is int and field.metadata):
            assert flag(name) in covered, name
    assert len(CASES) >= 50, len(CASES)


@pytest.mark.parametrize("case", list(CASES))
def test_option_out_of_bounds_or_non_finite_is_one_line_before_any_work(case, files, tmp_path, capsys, bad_input):
    option, value = CASES[case]
    data = files / "train.parquet"
    before = data.read_bytes()
    store = tmp_path / "store"
    began = time.perf_counter()
    code = main(["value", "--data", str(data), "--target", "label", "--store", str(store), f"{option}={value}"])
    seconds = time.perf_counter() - began
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("amortval: error:") and err.count("\n") == 1, err
    assert option in err, (option, err)
    assert "Traceback" not in err
    assert not store.exists(), "nothing may be written for a bad option"
    assert data.read_bytes() == before
    bad_input[f"option | value: {case}"] = seconds
