"""Where a command may write: the store folder and the output files, checked before any work.

A run that can only fail at its last step (writing ``--out`` into a folder that does not
exist, or over the very file it read) wastes the whole run, and one that writes over its
input destroys the user's data. So ``value``, ``amortize`` and ``curate`` check every
path they will write *first*, each problem on one line naming the path, and write
nothing while checking: writability is probed with a temporary file that is removed
at once (permission bits alone lie -- root ignores them; a read-only mount or an
immutable folder does not).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable
from pathlib import Path

from amortval.errors import ConfigError, StorageError

TRACKING_FILE = "mlflow.db"  # the store's MLflow database, unless $MLFLOW_TRACKING_URI names another


def write_problem(folder: Path) -> str | None:
    """Why a file cannot be created in ``folder`` (``None`` if one can): a real write, undone."""
    try:
        handle, name = tempfile.mkstemp(prefix=".amortval-probe-", dir=folder)
    except OSError as error:
        return error.strerror or str(error)
    os.close(handle)
    os.unlink(name)
    return None


def _existing_ancestor(path: Path) -> Path:
    """``path`` itself or the nearest folder above it that exists (what a mkdir -p starts from)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_store(store: str | Path) -> Path:
    """The store folder (resolved), if it is, or can be created as, a writable folder.

    Raises ``ConfigError`` when ``store`` names a file, lies under a file, or when the
    folder (or, for a new store, the nearest existing folder above it) refuses a write.
    Creates nothing: a store that does not exist yet is created by the run itself.
    """
    root = Path(store).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--store {store} is a file, not a folder; pass a folder (new or existing)")
    base = _existing_ancestor(root)
    if not base.is_dir():
        raise ConfigError(f"--store {store} cannot be created: {base} is a file, not a folder")
    problem = write_problem(base)
    if problem:
        what = f"--store folder {root} is not writable" if base == root else \
            f"--store {root} cannot be created: {base} is not writable"
        raise ConfigError(f"{what} ({problem})")
    return root


def check_free_space(store: str | Path, need: int) -> None:
    """ConfigError when the disk holding ``store`` has less than ``need`` bytes free.

    A run that fills the disk halfway loses nothing (every finished batch is committed),
    but it would fail hours in; the estimate (``run_plan.storage_needed``) refuses it first.
    """
    root = Path(store).expanduser().resolve()
    free = shutil.disk_usage(_existing_ancestor(root)).free
    if free < need:
        raise ConfigError(f"--store {root}: its disk has {free / 2**20:,.1f} MiB free and this run needs about "
                          f"{need / 2**20:,.1f} MiB; free some space or pass another --store")


def check_output(path: str | Path, inputs: Iterable[str | Path | None], what: str = "--out") -> Path:
    """``path`` (resolved), if a Parquet file may be written there without touching an input.

    Raises ``ConfigError`` unless ``path`` ends in ``.parquet``, is not a folder, lies in an
    existing writable folder, and is not one of ``inputs`` (by name after symlinks, or the
    same file under another name: a hard link). ``what`` names the path in the message.
    """
    given = Path(path).expanduser()
    if given.suffix != ".parquet":
        raise ConfigError(f"{what} must name a .parquet file, got {str(path)!r}")
    resolved = given.resolve()
    if resolved.is_dir():
        raise ConfigError(f"{what} {path} is a folder; name a .parquet file")
    for source in inputs:
        if source is not None and _same_file(resolved, Path(source).expanduser()):
            raise ConfigError(f"{what} {path} is the input file {source}; writing it would destroy the input. "
                              "Pass another --out")
    folder = resolved.parent
    if not folder.is_dir():
        raise ConfigError(f"{what} folder does not exist: {folder}")
    problem = write_problem(folder)
    if problem:
        raise ConfigError(f"{what} folder {folder} is not writable ({problem})")
    return resolved


def _same_file(output: Path, source: Path) -> bool:
    if output == source.resolve():
        return True
    try:
        return os.path.samefile(output, source)
    except OSError:  # either does not exist (yet): they cannot be one file
        return False


def tracking_tables(path: Path) -> set[str]:
    """The tables of the SQLite tracking database at ``path``; ``StorageError`` if it is damaged.

    Read-only and MLflow-free (sqlite3 alone), so the CLI checks the store's database in
    milliseconds before any work instead of meeting the damage after all of it.
    """
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
            return {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as error:
        raise StorageError(f"MLflow database {path} is damaged ({error}); move it aside to start a new tracking "
                           "history (the DuckDB samples are kept and re-logged)") from None


def check_tracking_database(store: str | Path) -> None:
    """The store's own MLflow database, when it has one and ``$MLFLOW_TRACKING_URI`` points nowhere else."""
    path = Path(store).expanduser().resolve() / TRACKING_FILE
    if not os.environ.get("MLFLOW_TRACKING_URI", "").strip() and path.is_file():
        tracking_tables(path)


def check_run_paths(store: str | Path, out: str | None, inputs: Iterable[str | Path | None]) -> None:
    """A valuation's whole write set: the store folder (and its MLflow database, undamaged),
    and ``--out`` when given (never an input)."""
    check_store(store)
    check_tracking_database(store)
    if out is not None:
        check_output(out, inputs)


def curation_outputs(data: str | Path, curated_dir: Path, out: str | None) -> tuple[Path, Path]:
    """<name>.curated.parquet (kept rows) and <name>.dropped.parquet beside it."""
    kept = Path(out) if out else curated_dir / f"{Path(data).stem}.curated.parquet"
    stem = kept.name.removesuffix(".parquet").removesuffix(".curated")
    return kept, kept.with_name(f"{stem}.dropped.parquet")


def check_curation_paths(data: str | Path, store: str | Path, out: str | None) -> tuple[Path, Path]:
    """The (kept, dropped) files a curation writes, checked; its store checked present and free.

    Cheap by design (no model, no Prefect, no MLflow import): the CLI calls it first, so a
    store held by a running ``value`` is reported in milliseconds. Both outputs are checked
    against ``data``: ``--out new.parquet`` puts the dropped rows in ``new.dropped.parquet``.
    """
    from amortval.tasks.prepare import store_paths

    kept, dropped = curation_outputs(data, store_paths(store)["curated"], out)
    if out is not None:
        check_output(kept, [data])
        check_output(dropped, [data], what="the dropped-rows file")
    check_scoring_store(store)
    return kept, dropped


def check_scoring_store(store: str | Path) -> Path:
    """The store's DuckDB file, once the folder is checked, was valued into, and is not held."""
    from amortval.data.store import ensure_store_free
    from amortval.errors import ModelNotFoundError
    from amortval.tasks.prepare import store_paths

    check_store(store)
    path = store_paths(store)["duckdb"]
    if not path.exists():
        raise ModelNotFoundError(f"no store at {path}: nothing was valued there yet; run `amortval value` "
                                 "first, or pass the --store it used")
    ensure_store_free(path)
    check_tracking_database(store)
    return path
