"""The store's layout: DuckDB tables, their column comments and the schema version.

Plain SQL text, no DuckDB import: ``data/store.py`` executes it. Primary keys carry the
resume contract: a batch's samples and its row in ``batches`` commit together, and
(sampling_id, point, draw) identifies a sample, so nothing can be stored twice.

Samples belong to a *sampling* (the sampling identity, ``tasks/config.py``), not to a
run: runs with larger budgets or other networks read the same samples. A run adds the
budget and the amortization settings and owns estimates, metrics and its MLflow run.
Paths are never stored: every file of a store lives under its folder and is found from
there, so a store folder can be moved or copied.

Schema history: 1 (amortval 0.1: samples keyed by run, one random stream per batch);
2 (0.2: samples keyed by sampling, one stream per unit). A version-1 store cannot be
extended by 0.2 (its draws came from other streams): ``data/store.py`` refuses it with
a message saying to value into a new ``--store``.
"""

from __future__ import annotations

SCHEMA_VERSION = 2

TABLES = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS datasets (
    dataset_id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, source VARCHAR NOT NULL,
    n_rows BIGINT NOT NULL, n_features INTEGER NOT NULL, schema JSON, created_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS samplings (
    sampling_id VARCHAR PRIMARY KEY, dataset_id VARCHAR NOT NULL, config JSON NOT NULL,
    n_points INTEGER NOT NULL, created_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    sampling_id VARCHAR NOT NULL, unit_start BIGINT NOT NULL, unit_stop BIGINT NOT NULL,
    n_samples BIGINT NOT NULL, n_fits BIGINT NOT NULL, n_fallbacks BIGINT NOT NULL,
    seconds DOUBLE NOT NULL, run_id VARCHAR, finished_at TIMESTAMP NOT NULL,
    PRIMARY KEY (sampling_id, unit_start));
CREATE TABLE IF NOT EXISTS samples (
    sampling_id VARCHAR NOT NULL, unit_start BIGINT NOT NULL, point INTEGER NOT NULL,
    draw INTEGER NOT NULL, cardinality INTEGER NOT NULL, delta DOUBLE NOT NULL,
    weight DOUBLE NOT NULL, status VARCHAR NOT NULL, PRIMARY KEY (sampling_id, point, draw));
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, sampling_id VARCHAR NOT NULL, dataset_id VARCHAR NOT NULL,
    config JSON NOT NULL, samples INTEGER NOT NULL, status VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL, wall_seconds DOUBLE,
    new_fits BIGINT, mlflow_run_id VARCHAR, model_name VARCHAR, model_version VARCHAR,
    model_uri VARCHAR);
CREATE TABLE IF NOT EXISTS estimates (
    run_id VARCHAR NOT NULL, point INTEGER NOT NULL, source VARCHAR NOT NULL,
    value DOUBLE, stderr DOUBLE, "count" BIGINT, PRIMARY KEY (run_id, point, source));
CREATE TABLE IF NOT EXISTS run_metrics (
    run_id VARCHAR NOT NULL, name VARCHAR NOT NULL, value DOUBLE,
    PRIMARY KEY (run_id, name));
CREATE TABLE IF NOT EXISTS rounds (
    run_id VARCHAR NOT NULL, round INTEGER NOT NULL, samples INTEGER NOT NULL, fits BIGINT NOT NULL,
    seconds DOUBLE NOT NULL, estimated_nmse DOUBLE, estimated_nmse_se DOUBLE, stop_reason VARCHAR, PRIMARY KEY (run_id, round));
CREATE TABLE IF NOT EXISTS scores (
    curation_id VARCHAR NOT NULL, "row" BIGINT NOT NULL, value DOUBLE, kept BOOLEAN NOT NULL,
    reason VARCHAR, model_uri VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (curation_id, "row"));
"""

COMMENTS = {
    "meta.key": "schema_version: layout of this file, for later migrations",
    "datasets.dataset_id": "fingerprint of the encoded data and its schema (column names, types, labels)",
    "samplings.sampling_id": "sampling identity: dataset, utility, semivalue, sampler, seed",
    "batches.unit_start": "first Monte Carlo unit of the batch; a row here marks its samples as committed",
    "batches.unit_stop": "one past the batch's last unit",
    "batches.n_fits": "utility evaluations (model fits, fallbacks included) of the batch",
    "batches.n_fallbacks": "utility evaluations answered by the degenerate-subset policy",
    "batches.run_id": "the run that computed the batch",
    "samples.draw": "draw index of this point within the sampling (unique per point); draw < m is a budget of m",
    "samples.cardinality": "size of the subset the marginal was taken against",
    "samples.delta": "marginal contribution v(S+i) - v(S)",
    "samples.weight": "semivalue weight; weight*delta is an unbiased estimate of the value",
    "samples.status": "utility status of the evaluation: ok|empty|one_class|missing_classes",
    "runs.samples": "samples per point the run's estimates use (draw < samples): the cap until the run ends, then what its stopping rule reached",
    "runs.status": "running | valued | completed; set by the flow",
    "runs.new_fits": "model fits computed by the run itself (0 when its samples were stored)",
    "estimates.source": "monte_carlo | amortized | combined",
    "rounds.samples": "samples per point reached by the round (each round extends the same draws)",
    "rounds.estimated_nmse": "the values' estimated normalized error after the round (no ground truth)",
    "rounds.stop_reason": "why sampling stopped after this round (null: it went on)",
    "scores.row": "row index in the scored file",
    "scores.created_at": "UTC",
}
