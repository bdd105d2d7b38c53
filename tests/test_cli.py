"""Bad input through the command line: exit 2, the problem named, nothing written."""

from __future__ import annotations

import polars as pl
import pytest

from amortval.data.demo import make_demo
from amortval.flows.cli import main


@pytest.fixture()
def good(tmp_path):
    frame = make_demo(seed=2, n_train=30, n_valid=10, n_new=10).train.drop("flipped")
    return frame


def _write(frame: pl.DataFrame, path):
    (frame.write_csv if str(path).endswith(".csv") else frame.write_parquet)(path)
    return path


CASES = {
    "missing target": (lambda f: f.drop("label"), "label"),
    "nan feature": (lambda f: f.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(float("nan")).otherwise(pl.col("income")).alias("income")), "income"),
    "inf feature": (lambda f: f.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(float("inf")).otherwise(pl.col("income")).alias("income")), "income"),
    "null target": (lambda f: f.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("label")).alias("label")), "label"),
    "one class": (lambda f: f.with_columns(pl.lit("approved").alias("label")), "class"),
    "empty": (lambda f: f.head(0), "no rows"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_bad_training_data(case, suffix, good, tmp_path, capsys):
    mutate, needle = CASES[case]
    data = _write(mutate(good), tmp_path / f"train{suffix}")
    store = tmp_path / "store"
    assert main(["value", "--data", str(data), "--target", "label", "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("amortval: error:") and needle in err.lower(), err
    assert not store.exists(), "nothing may be written for bad input"


def test_unknown_suffix_missing_file_and_missing_target_option(good, tmp_path, capsys):
    store = tmp_path / "store"
    txt = tmp_path / "train.txt"
    txt.write_text("a,b\n1,2\n")
    for argv, needle in [
        (["--data", str(txt), "--target", "label"], ".txt"),
        (["--data", str(tmp_path / "nope.csv"), "--target", "label"], "nope.csv"),
        (["--data", str(_write(good, tmp_path / "ok.csv"))], "--target"),
        (["--data", str(tmp_path / "ok.csv"), "--target", "label", "--samples", "0"], "--samples"),
        (["--data", str(tmp_path / "ok.csv"), "--target", "label", "--out", str(tmp_path / "x.csv")], "--out"),
        (["--data", str(tmp_path / "ok.csv"), "--target", "label", "--method", "shapley", "--sampler", "msr"], "msr"),
    ]:
        assert main(["value", *argv, "--store", str(store)]) == 2
        err = capsys.readouterr().err
        assert needle in err, (argv, err)
    assert not store.exists()


def test_validation_file_with_other_columns(good, tmp_path, capsys):
    train = _write(good, tmp_path / "train.parquet")
    valid = _write(good.drop("region"), tmp_path / "valid.parquet")
    store = tmp_path / "store"
    assert main(["value", "--data", str(train), "--target", "label", "--valid", str(valid), "--store", str(store)]) == 2
    assert "region" in capsys.readouterr().err
    assert not store.exists()


def test_curate_rule_conflict_and_missing_file(tmp_path, capsys):
    with pytest.raises(SystemExit):  # argparse: mutually exclusive options
        main(["curate", "--data", "x.parquet", "--threshold", "0", "--drop-fraction", "0.1"])
    capsys.readouterr()
    assert main(["curate", "--data", str(tmp_path / "missing.parquet"), "--store", str(tmp_path / "s")]) == 2
    assert "missing.parquet" in capsys.readouterr().err
    assert main(["curate", "--data", str(tmp_path / "m.parquet"), "--drop-fraction", "1.5"]) == 2
    assert "--drop-fraction" in capsys.readouterr().err
