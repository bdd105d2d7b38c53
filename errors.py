"""Errors a user can meet, each naming what is wrong and where.

Every check that can fail on user input raises one of these *before* any Monte Carlo
work starts, so a bad file or option never leaves a half-written store or MLflow run.
The CLI prints the message and exits with status 2; library callers catch
``AmortvalError``. What the environment does mid-run (a full disk, a damaged file) is
recognized in the libraries' own words (``storage_problem``) and raised as a
``StorageError`` naming the file; a signal unwinds as ``Interrupted``.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager


class AmortvalError(Exception):
    """Base class of every error amortval raises on purpose."""


class DataValidationError(AmortvalError, ValueError):
    """Input data is unusable: missing/empty/non-finite column, one class, bad file.

    ``column`` names the offending column when there is one (``None`` for file-level
    problems such as an unknown suffix or an empty file).
    """

    def __init__(self, message: str, column: str | None = None):
        super().__init__(message)
        self.column = column


class SchemaMismatchError(DataValidationError):
    """Scoring data does not match the schema the valuation network was trained on."""


class ConfigError(AmortvalError, ValueError):
    """An option is out of range or inconsistent with another option."""


class StoreLockedError(AmortvalError, RuntimeError):
    """Another process holds the DuckDB store; names the store path and the holder."""


class RunInProgressError(AmortvalError, RuntimeError):
    """The same run is already being computed by this process (another thread or flow).

    Across processes DuckDB's file lock already lets exactly one writer in; this covers
    two runs of the same run id started inside one process, which DuckDB would allow.
    """


class ClusterError(AmortvalError, RuntimeError):
    """The Dask cluster named by ``--dask-address`` cannot run the batches: its scheduler
    does not answer, no worker joined it, or a worker cannot read the store's problem file
    (the message names the worker's host and the path). Retrying does not help."""


class ModelNotFoundError(AmortvalError, LookupError):
    """No registered valuation network under the requested name/alias."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached a command (``flows/interrupt.py``): stop, keep what is stored.

    A ``KeyboardInterrupt``, so code unwinds as it does for Ctrl-C: ``except Exception``
    does not swallow it, transactions roll back, and the MLflow run being logged is marked
    KILLED rather than FAILED. Not an ``AmortvalError``: nothing the user gave was wrong.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class StorageError(AmortvalError, OSError):
    """A file amortval reads or writes is damaged, or its disk is full or read-only.

    Raised by ``storage_errors`` around the places that touch files (the DuckDB store, the
    MLflow database and artifacts, Parquet outputs); the message names the path.
    """


# What the libraries say, in their own words: DuckDB and SQLite raise generic exception
# types (duckdb.Error, sqlite3.OperationalError wrapped by SQLAlchemy and MLflow), so the
# message is what tells a full disk from a damaged file.
_DISK_FULL = ("No space left on device", "database or disk is full", "Disk quota exceeded")
_DAMAGED = ("Corrupt database file", "database disk image is malformed", "file is not a database",
            "not a valid DuckDB database file", "Could not read enough bytes from file")  # the last: truncated
_READ_ONLY = ("Read-only file system", "attempt to write a readonly database")


def storage_problem(error: BaseException) -> str | None:
    """'disk full', 'damaged' or 'read-only' when ``error`` or anything in its chain is one."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        number = getattr(current, "errno", None)
        text = str(current)
        if number in (errno.ENOSPC, errno.EDQUOT) or any(m in text for m in _DISK_FULL):
            return "disk full"
        if any(m in text for m in _DAMAGED):
            return "damaged"
        if number == errno.EROFS or any(m in text for m in _READ_ONLY):
            return "read-only"
        current = current.__cause__ or current.__context__
    return None


def storage_error(error: BaseException, path: object) -> StorageError | None:
    """The one-line ``StorageError`` for ``error`` at ``path``, or None if it is no storage problem."""
    problem = storage_problem(error)
    if problem is None:
        return None
    path = _filename(error) or path
    detail = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    if problem == "disk full":
        return StorageError(f"cannot write {path}: the disk is full ({detail}); free some space and re-run "
                            "the same command (what was committed is kept)")
    if problem == "damaged":
        return StorageError(f"{path} is damaged ({detail}); move it aside (or restore a backup) and re-run")
    return StorageError(f"cannot write {path}: read-only ({detail}); pass a writable location")


def _filename(error: BaseException) -> str | None:
    """The file an ``OSError`` in the chain names (more precise than the caller's guess)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.filename:
            return str(current.filename)
        current = current.__cause__ or current.__context__
    return None


@contextmanager
def storage_errors(path: object) -> Iterator[None]:
    """Turn a full disk, a damaged file or a read-only place met inside into a ``StorageError``
    naming ``path``; every other exception passes unchanged."""
    try:
        yield
    except AmortvalError:
        raise
    except Exception as error:
        translated = storage_error(error, path)
        if translated is None:
            raise
        raise translated from error
