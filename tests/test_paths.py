"""tasks/paths.py: every path a command writes is refused up front, and checking writes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from amortval.errors import ConfigError
from amortval.tasks.paths import check_output, check_store, write_problem


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_writable_folder_passes_and_the_probe_leaves_nothing(tmp_path):
    (tmp_path / "store").mkdir()
    before = _tree(tmp_path)
    assert write_problem(tmp_path) is None
    assert check_store(tmp_path / "store") == (tmp_path / "store").resolve()
    assert check_store(tmp_path / "new" / "deeper") == (tmp_path / "new" / "deeper").resolve()
    assert check_output(tmp_path / "out.parquet", [tmp_path / "in.parquet"]) == (tmp_path / "out.parquet").resolve()
    assert _tree(tmp_path) == before, "checks must create nothing: no probe file, no new store folder"


def test_read_only_folders_are_refused_for_store_and_output(read_only_folder):
    with pytest.raises(ConfigError, match=r"--store folder .*read-only is not writable"):
        check_store(read_only_folder)
    with pytest.raises(ConfigError, match=r"--store .*read-only/store cannot be created: .*read-only is not writable"):
        check_store(read_only_folder / "store")
    with pytest.raises(ConfigError, match=r"--out folder .*read-only is not writable"):
        check_output(read_only_folder / "values.parquet", [])
    assert list(read_only_folder.iterdir()) == []


def test_a_store_that_is_a_file_or_lies_under_one_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"--store .*file is a file, not a folder"):
        check_store(tmp_path / "file")
    with pytest.raises(ConfigError, match=r"cannot be created: .*file is a file"):
        check_store(tmp_path / "file" / "store")


@pytest.mark.parametrize("name,needle", [
    ("values.csv", "must name a .parquet file"),
    ("folder.parquet", "is a folder"),
    ("missing/values.parquet", "folder does not exist"),
])
def test_bad_output_paths(tmp_path, name, needle):
    (tmp_path / "folder.parquet").mkdir()
    with pytest.raises(ConfigError, match=needle):
        check_output(tmp_path / name, [])


def test_an_output_that_is_an_input_by_name_symlink_or_hard_link_is_refused(tmp_path, monkeypatch):
    data = tmp_path / "data.parquet"
    data.write_bytes(b"PAR1")
    (tmp_path / "sym.parquet").symlink_to(data)
    os.link(data, tmp_path / "hard.parquet")
    monkeypatch.chdir(tmp_path)
    for out in ("data.parquet", str(data), "./sub/../data.parquet", "sym.parquet", "hard.parquet"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(ConfigError, match="is the input file"):
            check_output(out, [None, "data.parquet"])
    assert check_output("other.parquet", ["data.parquet"]).name == "other.parquet"


def test_a_failed_output_write_leaves_no_temp_file(tmp_path):
    import polars as pl

    from amortval.tasks.report import write_parquet

    (tmp_path / "values.parquet").mkdir()  # the final rename fails: a folder is in the way
    with pytest.raises(OSError):
        write_parquet(pl.DataFrame({"a": [1]}), tmp_path / "values.parquet")
    assert _tree(tmp_path) == ["values.parquet"]
