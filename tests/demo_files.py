"""Small demo datasets written as the files a user hands over (shared by flow tests)."""

from __future__ import annotations

from pathlib import Path

from amortval.data.demo import make_demo


def write_demo_files(root: Path, *, seed: int, n_train: int, n_valid: int, n_new: int) -> Path:
    """train.parquet (with its ``flipped`` column), valid.parquet (without), new.parquet."""
    demo = make_demo(seed=seed, n_train=n_train, n_valid=n_valid, n_new=n_new)
    demo.train.write_parquet(root / "train.parquet")
    demo.valid.drop("flipped").write_parquet(root / "valid.parquet")
    demo.new.write_parquet(root / "new.parquet")
    return root
