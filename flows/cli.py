"""The ``amortval`` command: value, amortize, curate, runs, show.

Every ``value`` option comes from ``RunConfig`` (``tasks/config.py``): the parser is
generated from its fields, so flags, types, choices, defaults and help cannot drift
from the flow or the deployments. Input is validated before Prefect is even imported,
so a bad file or option fails in well under a second with the column and the problem
named, and nothing is written.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
import typing
from pathlib import Path

from amortval import __version__
from amortval.flows.interrupt import Interruption

# Before numpy/torch/prefect/mlflow load: one BLAS thread per fit, no telemetry, and
# Prefect's per-task-run lines kept out of the terminal (they stay in its API).
ENVIRONMENT = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL": "WARNING",
    # Prefect's temporary API gives up after 20 s; on a busy 2-core machine it can need more.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    # The temporary API shares the terminal, so Ctrl-C reaches it too, and it reports its own
    # shutdown as ERROR tracebacks; its real failures reach the user as the client's errors.
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
    # ... and so can the loggers that propagate to the root, such as SQLAlchemy's pool in the
    # temporary API ("Exception during reset" with a traceback when Ctrl-C lands mid-query).
    # amortval's own lines go through Prefect's loggers and the CLI's error line, not the root.
    "PREFECT_LOGGING_ROOT_LEVEL": "CRITICAL",
}
# Options of `amortval amortize RUN_ID`: what changes the network, not the samples.
AMORTIZE_OPTIONS = ("hidden", "layers", "pretrain_epochs", "epochs", "batch_size", "lr", "lr_tries",
                    "folds", "control_below", "model_name", "out", "verbose")


def flag(name: str) -> str:
    """``--no-encode`` for the one option that defaults to on, ``--valid-fraction`` otherwise."""
    return "--no-encode" if name == "encode" else "--" + name.replace("_", "-")


def _type(annotation) -> tuple[type | None, tuple | None]:
    """(Python type, choices) of an option's annotation: Literal -> choices, X | None -> X,
    Annotated (a value the config parses, e.g. a duration) -> str."""
    if typing.get_origin(annotation) is typing.Literal:
        return str, typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        return str, None
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                return _type(arg)
    return annotation, None


def add_config_options(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """One flag per RunConfig option (or the ``names`` given); unset flags stay unset, so only
    the options a user gives override the config's defaults."""
    from amortval.tasks.config import option_fields

    for name, field in option_fields().items():
        if names is not None and name not in names:
            continue
        kind, choices = _type(field.annotation)
        default = field.get_default(call_default_factory=True)
        help_text = field.description if "(default:" in field.description else \
            f"{field.description} (default: {_shown(default)})"
        help_text = help_text.replace("%", "%%")  # argparse formats help with %
        if kind is bool:
            action = "store_false" if default else "store_true"
            parser.add_argument(flag(name), dest=name, action=action, default=argparse.SUPPRESS, help=help_text)
        elif default is not None and _nullable(field.annotation):  # on by default: "off" turns it off
            parser.add_argument(flag(name), dest=name, type=_or_off(kind), default=argparse.SUPPRESS,
                                metavar=f"{name.upper()}|off", help=help_text)
        else:
            parser.add_argument(flag(name), dest=name, type=kind, choices=choices, default=argparse.SUPPRESS,
                                metavar=None if choices else name.upper(), help=help_text)


def _nullable(annotation) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and \
        type(None) in typing.get_args(annotation)


def _or_off(kind: type):
    """argparse type: ``off`` (or ``none``) is None, anything else is ``kind``."""
    def convert(text: str):
        return None if text.strip().lower() in ("off", "none") else kind(text)
    convert.__name__ = kind.__name__  # argparse names the type in its error message
    return convert


def _shown(default) -> str:
    return "on" if default is True else "off" if default is False else "none" if default is None else str(default)


def options_table() -> str:
    """The README's option table, generated from RunConfig (tests compare the two)."""
    from amortval.tasks.config import option_fields

    rows = ["| option | default | meaning |", "| --- | --- | --- |"]
    for name, field in option_fields().items():
        default = field.get_default(call_default_factory=True)
        rows.append(f"| `{flag(name)}` | {_shown(default)} | {field.description.replace('|', chr(92) + '|')} |")
    return "\n".join(rows)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one ``amortval: error:`` line like every other
    user error (argparse prints the whole usage first), exit status 2 as before."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"amortval: error: {message} (`{self.prog} --help` lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    from amortval.tasks.config import RunConfig

    store_default = RunConfig.model_fields["store"].default
    parser = OneLineParser(prog="amortval", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"amortval {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    value = sub.add_parser("value", help="value every training point, amortize, register the valuation network")
    add_config_options(value)
    value.add_argument("--verbose", action="store_true", help="also print per-epoch amortization lines")

    amortize = sub.add_parser("amortize", help="retrain a run's valuation network from its stored samples (no model fits)")
    amortize.add_argument("run_id", help="a run id from `amortval runs`")
    add_config_options(amortize, AMORTIZE_OPTIONS)
    amortize.add_argument("--store", default=store_default, help=f"store folder (default: {store_default})")
    amortize.add_argument("--verbose", action="store_true", help="also print per-epoch amortization lines")

    curate = sub.add_parser("curate", help="score unseen points with a registered network and drop low-value ones")
    curate.add_argument("--data", required=True, help="CSV or Parquet file of new labelled points")
    rule = curate.add_mutually_exclusive_group()
    rule.add_argument("--threshold", type=float, help="drop points valued below this (default rule: threshold 0)")
    rule.add_argument("--drop-fraction", type=float, help="drop this lowest-valued fraction instead")
    curate.add_argument("--model-name", help="registered model (default: the one whose columns match --data)")
    pin = curate.add_mutually_exclusive_group()
    pin.add_argument("--alias", default="champion", help="registered model alias to load (default: champion)")
    pin.add_argument("--model-version", help="load this version instead of the alias")
    curate.add_argument("--mislabeled-column", help="boolean column of known label errors (ignored for scoring, used to report precision)")
    curate.add_argument("--store", default=store_default, help=f"store folder (default: {store_default})")
    curate.add_argument("--out", help="curated Parquet file (default: <store>/curated/<name>.curated.parquet)")

    runs = sub.add_parser("runs", help="list the valuation runs in a store")
    runs.add_argument("--store", default=store_default, help=f"store folder (default: {store_default})")
    runs.add_argument("--ids", action="store_true", help="print only the run ids, newest first (for scripts)")
    show = sub.add_parser("show", help="one run's config, figures and files")
    show.add_argument("run_id", help="a run id (or a unique prefix) from `amortval runs`")
    show.add_argument("--store", default=store_default, help=f"store folder (default: {store_default})")
    return parser


def _given(args: argparse.Namespace, names) -> dict:
    return {k: v for k, v in vars(args).items() if k in names}


def _value(args: argparse.Namespace, stop: Interruption) -> dict:
    from amortval.api import run
    from amortval.tasks.config import OPTION_PARTS, RunConfig

    return run(RunConfig.from_options(**_given(args, OPTION_PARTS)), planned=_count_batches(stop))


def _count_batches(stop: Interruption):
    """Once the run is planned, an interruption reports its stored batches ('37 of 100')."""
    def planned(plan) -> None:
        from amortval.tasks.run_plan import stored_batches

        stop.status = lambda: stored_batches(plan)
    return planned


def _amortize(args: argparse.Namespace, stop: Interruption) -> dict:
    from amortval.data.store import ValuationStore, ensure_store_free
    from amortval.errors import ConfigError
    from amortval.tasks.config import RunConfig
    from amortval.tasks.paths import check_store
    from amortval.tasks.prepare import store_paths

    check_store(args.store)
    path = store_paths(args.store)["duckdb"]
    if not path.exists():
        raise ConfigError(f"no store at {path}; pass the --store the run was valued into")
    ensure_store_free(path)
    with ValuationStore(path) as db:
        stored = db.run(args.run_id)
    if stored is None:
        raise ConfigError(f"no run {args.run_id!r} in {path}; `amortval runs --store {args.store}` lists them")
    base = RunConfig.build(stored["config"])
    # The samples the run reached (its stopping rule may have ended it below the cap), in one round.
    reached = dict(samples=int(stored["samples"]), target_error=None, time_budget=None, until_stable=False, rule=None)
    config = base.replace(store=args.store, **reached, **_given(args, set(AMORTIZE_OPTIONS) - {"verbose"}))
    from amortval.api import run

    return run(config, amortize_only=True, planned=_count_batches(stop))


def _curate(args: argparse.Namespace) -> dict:
    from amortval.data.schema import mislabeled_flags
    from amortval.data.tabular import read_table
    from amortval.tasks.curate import CurationRule
    from amortval.tasks.paths import check_curation_paths

    # The cheap half of prepare_curation, in its order, before Prefect and MLflow load (~15 s
    # on a busy machine): a bad file, path or a held store is refused in milliseconds.
    CurationRule(threshold=args.threshold, drop_fraction=args.drop_fraction)
    frame = read_table(args.data)
    if args.mislabeled_column:
        mislabeled_flags(frame, args.mislabeled_column, name=Path(args.data).name)
    check_curation_paths(args.data, args.store, args.out)
    from amortval.flows.curation import curate_dataset, prepare_curation

    options = dict(data=args.data, store=args.store, model_name=args.model_name, alias=args.alias,
                   model_version=args.model_version, threshold=args.threshold, drop_fraction=args.drop_fraction,
                   out=args.out, mislabeled_column=args.mislabeled_column)
    prepare_curation(**options)  # every user error here, before Prefect starts: one line, no flow run
    return curate_dataset(**options)


def _quiet_user_errors() -> None:
    """Keep Prefect from logging a traceback (and a 'Failed' line) for our own errors.

    An ``AmortvalError`` raised inside a flow or task (a store locked after the CLI's
    check, a full disk) is a user error, and so is a full disk or damaged file met by a
    library (``errors.storage_problem``): ``main`` prints it as one ``amortval: error:``
    line. Every other exception keeps Prefect's full report. Installed once per process.
    """
    import logging

    from amortval.errors import AmortvalError, storage_problem

    def ours(cls: type) -> set[str]:
        return {cls.__name__}.union(*(ours(sub) for sub in cls.__subclasses__()))

    names = ours(AmortvalError)

    def keep(record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and (isinstance(error, AmortvalError) or storage_problem(error)):
            return False
        text = record.getMessage()
        return not (text.startswith("Finished in state Failed") and
                    (any(f": {n}: " in text for n in names) or storage_problem(Exception(text))))

    keep.amortval = True
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(getattr(f, "amortval", False) for f in logger.filters):
            logger.addFilter(keep)


def main(argv: list[str] | None = None) -> int:
    """Run one command; 0 on success, 2 for a user error, 128 + N when stopped by signal N."""
    with Interruption() as stop:  # first: a Ctrl-C during the imports below is one line too
        try:
            return _command(argv, stop)
        except BaseException:
            # After a signal, whatever comes out is its doing: ``Interrupted`` itself, or what
            # a library made of it (DuckDB turns it into "Query interrupted").
            if stop.signum is None:
                raise
            stop.exit()


def _command(argv: list[str] | None, stop: Interruption) -> int:
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version (0) or a bad command line (2, its line printed)
        return int(done.code or 0)
    if getattr(args, "verbose", False):
        os.environ["PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL"] = "DEBUG"
    from amortval.errors import AmortvalError, storage_error
    from amortval.flows import summary

    _quiet_user_errors()
    try:
        if args.command == "value":
            summary.print_valuation(_value(args, stop))
        elif args.command == "amortize":
            summary.print_valuation(_amortize(args, stop))
        elif args.command == "curate":
            stop.hint = "the curation did not finish; re-run the same command"
            summary.print_curation(_curate(args))
        elif args.command == "runs":
            summary.print_runs(args.store, ids_only=args.ids)
        else:
            summary.print_show(args.store, args.run_id)
    except Exception as error:
        if stop.signum is not None:
            raise  # e.g. a store error made of the interruption: main reports the interruption
        # A full disk or damaged file that no write site named: name the store it happened under.
        known = error if isinstance(error, AmortvalError) else \
            storage_error(error, getattr(args, "store", None) or "the store")
        if known is None:
            raise
        print(f"amortval: error: {known}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
