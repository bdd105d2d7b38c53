"""The store's layout: DuckDB tables, their column comments and the schema version.

Plain SQL text, no DuckDB import: ``data/store.py`` executes it. Primary keys carry the
resume contract: a batch's samples and its row in ``batches`` commit together, and
(run_id, point, draw) identifies a sample, so nothing can be stored twice.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

TABLES = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS datasets (
    dataset_id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, n_rows BIGINT NOT NULL,
    n_features INTEGER NOT NULL, schema JSON, created_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, dataset_id VARCHAR NOT NULL, config JSON NOT NULL,
    seed HUGEINT NOT NULL, n_points INTEGER NOT NULL, n_batches INTEGER NOT NULL,
    status VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL,
    mlflow_run_id VARCHAR, model_version VARCHAR);
CREATE TABLE IF NOT EXISTS batches (
    run_id VARCHAR NOT NULL, batch INTEGER NOT NULL, n_samples BIGINT NOT NULL,
    n_fits BIGINT NOT NULL, n_fallbacks BIGINT NOT NULL, seconds DOUBLE NOT NULL,
    finished_at TIMESTAMP NOT NULL, PRIMARY KEY (run_id, batch));
CREATE TABLE IF NOT EXISTS samples (
    run_id VARCHAR NOT NULL, batch INTEGER NOT NULL, point INTEGER NOT NULL,
    draw INTEGER NOT NULL, cardinality INTEGER NOT NULL, delta DOUBLE NOT NULL,
    weight DOUBLE NOT NULL, status VARCHAR NOT NULL, PRIMARY KEY (run_id, point, draw));
CREATE TABLE IF NOT EXISTS estimates (
    run_id VARCHAR NOT NULL, point INTEGER NOT NULL, source VARCHAR NOT NULL,
    value DOUBLE, stderr DOUBLE, "count" BIGINT, PRIMARY KEY (run_id, point, source));
CREATE TABLE IF NOT EXISTS run_metrics (
    run_id VARCHAR NOT NULL, name VARCHAR NOT NULL, value DOUBLE,
    PRIMARY KEY (run_id, name));
CREATE TABLE IF NOT EXISTS scores (
    curation_id VARCHAR NOT NULL, "row" BIGINT NOT NULL, value DOUBLE, kept BOOLEAN NOT NULL,
    reason VARCHAR, model_uri VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (curation_id, "row"));
"""

COMMENTS = {
    "meta.key": "schema_version: layout of this file, for later migrations",
    "datasets.dataset_id": "content fingerprint of the encoded problem",
    "runs.status": "running | valued | completed | failed ...; set by the flow",
    "batches.batch": "batch index; a row here marks the batch's samples as committed",
    "batches.n_fallbacks": "utility evaluations that hit a degenerate subset policy",
    "samples.draw": "draw index of this point within the run (unique per point)",
    "samples.cardinality": "size of the subset the marginal was taken against",
    "samples.delta": "marginal contribution v(S+i) - v(S)",
    "samples.weight": "semivalue weight; weight*delta is an unbiased estimate of the value",
    "samples.status": "utility status of the evaluation: ok|empty|one_class|missing_classes",
    "estimates.source": "monte_carlo | amortized",
    "scores.row": "row index in the scored file",
    "scores.created_at": "UTC",
}
