"""Errors a user can meet, each naming what is wrong and where.

Every check that can fail on user input raises one of these *before* any Monte Carlo
work starts, so a bad file or option never leaves a half-written store or MLflow run.
The CLI prints the message and exits with status 2; library callers catch
``AmortvalError``.
"""

from __future__ import annotations


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
