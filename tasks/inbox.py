"""Curate an inbox folder: every new CSV/Parquet file once, by content, each on its own.

A file is *new* when the sha256 of its bytes is not recorded as processed in the store
(``data/inbox_store.py``): a renamed or re-copied file is skipped, a changed one is new.
Each new file is curated like ``amortval curate`` curates one (``tasks/scoring.py``),
with the champion network of the dataset whose columns it has; its outputs are named
by its name and hash (``<store>/curated/inbox/<stem>.<hash12>.curated.parquet`` and
``.dropped.parquet``), so a later file of the same name never overwrites them.

A file that fails validation (unreadable, a schema unlike the model's, unknown labels,
no model for its columns) is moved into ``<inbox>/rejected/`` with its error next to it
(``<file>.error.txt``) and in the store; the other files go ahead. Problems that are
not the file's (a held store, no model at all, a bad rule) stop the run before any file.
Hidden files (``.name``: a copy in progress should be written under one and renamed),
other suffixes and folders are left alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from amortval.data import inbox_store
from amortval.data.store import ValuationStore
from amortval.data.tabular import SUPPORTED_SUFFIXES
from amortval.errors import DataValidationError, ModelNotFoundError
from amortval.tasks.model_choice import require_registered
from amortval.tasks.paths import check_scoring_store
from amortval.tasks.prepare import store_paths
from amortval.tasks.scoring import prepare_curation, score_file

REJECTED_FOLDER = "rejected"
HASH_PREFIX = 12  # characters of the sha256 in output names and curation ids


@dataclass(frozen=True)
class InboxFile:
    path: Path
    content_hash: str  # sha256 of the bytes, hex


@dataclass(frozen=True)
class InboxScan:
    new: list[InboxFile]  # in name order
    skipped: list[str]  # names of files whose content was already processed
    ignored: list[str]  # names that are not CSV/Parquet (or hidden)


def inbox_folder(inbox: str | None, store: str) -> Path:
    """The inbox (default ``<store>/inbox``), created if missing so users know where to drop files."""
    folder = Path(inbox).expanduser() if inbox else store_paths(store)["root"] / "inbox"
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve()


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def scan_inbox(folder: Path, store: str) -> InboxScan:
    """The inbox's files sorted by name: new ones, ones whose content the store has processed
    (or that repeat a new file's content in this scan), and ones that are not tables."""
    done: set[str] = set()
    if store_paths(store)["duckdb"].exists():
        with ValuationStore(check_scoring_store(store)) as db:
            done = inbox_store.processed_hashes(db)
    new, skipped, ignored = [], [], []
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            continue
        if path.name.startswith(".") or path.suffix.lower() not in SUPPORTED_SUFFIXES:
            ignored.append(path.name)
            continue
        digest = content_hash(path)
        if digest in done:
            skipped.append(path.name)
        else:
            done.add(digest)
            new.append(InboxFile(path, digest))
    return InboxScan(new, skipped, ignored)


def check_inbox_store(store: str) -> None:
    """Before any file: the store is there, free, and has a registered model (else no file could pass)."""
    with ValuationStore(check_scoring_store(store)) as db:
        require_registered(db)


def inbox_outputs(store: str, file_name: str, digest: str) -> Path:
    """Where a file's kept rows go; its dropped rows go beside it (``curation_outputs``)."""
    return store_paths(store)["curated"] / "inbox" / f"{Path(file_name).stem}.{digest[:HASH_PREFIX]}.curated.parquet"


def curate_inbox_file(item: InboxFile, *, store: str, model_name: str | None, alias: str,
                      model_version: str | None, threshold: float | None, drop_fraction: float | None,
                      mislabeled_column: str | None) -> dict:
    """Curate one file and record it; a file that fails validation is moved aside and recorded.

    Returns ``{"status": "processed", **curation summary}`` or ``{"status": "rejected",
    "error": ..., "moved_to": ...}``. Errors that are not the file's propagate.
    """
    name = item.path.name
    kept_path = inbox_outputs(store, name, item.content_hash)
    kept_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        curation = prepare_curation(str(item.path), store, model_name, alias, model_version, threshold,
                                    drop_fraction, str(kept_path), mislabeled_column)
        summary = score_file(curation, curation_id=f"inbox-{item.content_hash[:HASH_PREFIX]}")
    except (DataValidationError, ModelNotFoundError) as error:
        # Recorded before the move: a run killed in between tries the file again, never loses it.
        with ValuationStore(store_paths(store)["duckdb"]) as db:
            inbox_store.record_file(db, content_hash=item.content_hash, file_name=name,
                                    status=inbox_store.REJECTED, error=str(error))
        moved = reject(item, str(error))
        return {"status": inbox_store.REJECTED, "file": name, "error": str(error), "moved_to": str(moved)}
    with ValuationStore(store_paths(store)["duckdb"]) as db:
        inbox_store.record_file(
            db, content_hash=item.content_hash, file_name=name, status=inbox_store.PROCESSED,
            rows=summary["rows_scored"], kept=summary["rows_kept"], dropped=summary["rows_dropped"],
            model_name=summary["model_name"], model_uri=summary["model_uri"],
            model_version=summary["model_version"], curation_id=summary["curation_id"])
    return {"status": inbox_store.PROCESSED, "file": name, **summary}


def reject(item: InboxFile, error: str) -> Path:
    """Move the file into ``rejected/`` (its hash added if the name is taken) with ``<name>.error.txt``."""
    folder = item.path.parent / REJECTED_FOLDER
    folder.mkdir(exist_ok=True)
    target = folder / item.path.name
    if target.exists():
        target = folder / f"{item.path.stem}.{item.content_hash[:HASH_PREFIX]}{item.path.suffix}"
    item.path.replace(target)
    target.with_name(target.name + ".error.txt").write_text(f"amortval: error: {error}\n")
    return target
