"""The ``amortval`` command: ``amortval value`` and ``amortval curate``.

Input is validated before Prefect is even imported, so a bad file or option fails in
well under a second with the column and the problem named, and nothing is written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Before numpy/torch/prefect/mlflow load: one BLAS thread per fit, no telemetry, and
# Prefect's per-task-run lines kept out of the terminal (they stay in its API).
_ENVIRONMENT = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL": "WARNING",
}


def build_parser() -> argparse.ArgumentParser:
    from amortval.tasks.config import LEARNERS, METHODS, RUNNERS, SAMPLERS, ValuationConfig
    from amortval.tasks.prepare import DEFAULT_STORE

    parser = argparse.ArgumentParser(prog="amortval", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    value = sub.add_parser("value", help="value every training point, amortize, register the network",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    value.add_argument("--data", help="CSV or Parquet file to value (default: the built-in demo dataset)")
    value.add_argument("--target", help="label column (required with --data)")
    value.add_argument("--valid", help="validation file (default: a seeded split of --data)")
    value.add_argument("--valid-fraction", type=float, default=0.2, help="share split off --data for validation when --valid is not given")
    value.add_argument("--learner", choices=LEARNERS, default="logreg", help="model retrained on every subset (the utility)")
    value.add_argument("--knn-k", type=int, default=ValuationConfig.knn_k, help="k of the KNN utility (with --learner knn; Jia et al. 2019)")
    value.add_argument("--method", choices=METHODS, default="shapley", help="semivalue: Data Shapley, Beta Shapley, Data Banzhaf")
    value.add_argument("--sampler", choices=SAMPLERS, default=None, help="Monte Carlo sampler (default: permutation for shapley, independent for beta, msr for banzhaf)")
    value.add_argument("--samples", type=int, default=ValuationConfig.samples, help="Monte Carlo samples per point")
    value.add_argument("--alpha", type=float, default=16.0, help="Beta Shapley alpha")
    value.add_argument("--beta", type=float, default=1.0, help="Beta Shapley beta")
    value.add_argument("--seed", type=int, default=0, help="run seed: same data, options and seed give identical results")
    value.add_argument("--epochs", type=int, default=30, help="valuation-network regression epochs (best kept by held-out MSE)")
    value.add_argument("--batch-fits", type=int, default=ValuationConfig.batch_fits, help="model fits per Prefect task")
    value.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="batches evaluated at once (one thread per fit)")
    value.add_argument("--runner", choices=RUNNERS, default="threads", help="where batches run: threads in this process, or a local Dask cluster of worker processes; same results either way")
    value.add_argument("--allow-missing", action="store_true", help="impute null/NaN features (numeric: training mean; categorical: no level) instead of refusing them; infinity and missing labels stay errors")
    value.add_argument("--no-encode", dest="encode", action="store_false", help="do not one-hot encode string columns: a non-numeric feature column is an error")
    value.add_argument("--mislabeled-column", help="boolean column of known label errors: excluded from features, used to report detection AUROC")
    value.add_argument("--model-name", default="amortval-valuation-net", help="MLflow registered model name")
    value.add_argument("--store", default=DEFAULT_STORE, help="folder for the DuckDB store, MLflow database and outputs")
    value.add_argument("--out", help="write the per-row values to this Parquet file")

    curate = sub.add_parser("curate", help="score unseen points with the registered network and drop low-value ones",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    curate.add_argument("--data", required=True, help="CSV or Parquet file of new labelled points")
    rule = curate.add_mutually_exclusive_group()
    rule.add_argument("--threshold", type=float, help="drop points valued below this (default rule: threshold 0)")
    rule.add_argument("--drop-fraction", type=float, help="drop this lowest-valued fraction instead")
    curate.add_argument("--model-name", default="amortval-valuation-net", help="MLflow registered model name")
    curate.add_argument("--alias", default="champion", help="registered model alias to load")
    curate.add_argument("--mislabeled-column", help="boolean column of known label errors (ignored for scoring, used to report precision)")
    curate.add_argument("--store", default=DEFAULT_STORE, help="folder holding the DuckDB store and MLflow database")
    curate.add_argument("--out", help="curated Parquet file (default: <store>/curated/<name>.curated.parquet)")
    return parser


def _value(args: argparse.Namespace) -> dict:
    from amortval.tasks.config import AmortizationConfig, ValuationConfig
    from amortval.tasks.prepare import load_inputs

    ValuationConfig(learner=args.learner, method=args.method, sampler=args.sampler, samples=args.samples,
                    seed=args.seed, alpha=args.alpha, beta=args.beta, batch_fits=args.batch_fits,
                    knn_k=args.knn_k, amortization=AmortizationConfig(epochs=args.epochs))
    if args.workers < 1:
        from amortval.errors import ConfigError

        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    _check_out(args.out)
    load_inputs(args.data, args.target, valid=args.valid, valid_fraction=args.valid_fraction, seed=args.seed,
                mislabeled_column=args.mislabeled_column, store=args.store, allow_missing=args.allow_missing,
                encode=args.encode)
    from amortval.data.store import ensure_store_free
    from amortval.tasks.prepare import store_paths

    ensure_store_free(store_paths(args.store)["duckdb"])  # a held store fails here, before Prefect starts
    from amortval.flows.valuation import value_dataset

    return value_dataset(
        data=args.data, target=args.target, valid=args.valid, learner=args.learner, method=args.method,
        sampler=args.sampler, samples=args.samples, seed=args.seed, alpha=args.alpha, beta=args.beta,
        store=args.store, out=args.out, mislabeled_column=args.mislabeled_column,
        valid_fraction=args.valid_fraction, model_name=args.model_name, batch_fits=args.batch_fits,
        epochs=args.epochs, workers=args.workers, runner=args.runner, allow_missing=args.allow_missing,
        encode=args.encode, knn_k=args.knn_k)


def _curate(args: argparse.Namespace) -> dict:
    from amortval.data.tabular import read_table
    from amortval.tasks.curate import CurationRule

    CurationRule(threshold=args.threshold, drop_fraction=args.drop_fraction)
    read_table(args.data)
    _check_out(args.out)
    from amortval.flows.curation import curate_dataset

    return curate_dataset(data=args.data, store=args.store, model_name=args.model_name, alias=args.alias,
                          threshold=args.threshold, drop_fraction=args.drop_fraction, out=args.out,
                          mislabeled_column=args.mislabeled_column)


def _check_out(out: str | None) -> None:
    from amortval.errors import ConfigError

    if out is not None:
        if not out.endswith(".parquet"):
            raise ConfigError(f"--out must name a .parquet file, got {out!r}")
        if not Path(out).resolve().parent.is_dir():
            raise ConfigError(f"--out folder does not exist: {Path(out).resolve().parent}")


def main(argv: list[str] | None = None) -> int:
    for name, value in _ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    args = build_parser().parse_args(argv)
    from amortval.errors import AmortvalError
    from amortval.flows.summary import print_curation, print_valuation

    try:
        if args.command == "value":
            print_valuation(_value(args))
        else:
            print_curation(_curate(args))
    except AmortvalError as error:
        print(f"amortval: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
