"""The store's layout: its tables, the schema version, and the migrations that bring an older store up to date.

docs/store.md documents every column. `meta` holds the schema version; `migrate` runs when a store is opened,
so a store written by an older workbench is read by this one (and one written by a newer one is refused).
"""

from __future__ import annotations

import duckdb


# here, at the bottom of the store's modules, so that each of them raises this one error
class StoreError(RuntimeError):
    """The store cannot be opened or queried as asked; the message says why."""


SCHEMA_VERSION = 9  # the version of SCHEMA; MIGRATIONS bring an older store to it
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, created_at TIMESTAMP, task VARCHAR, model VARCHAR,
    config JSON, status VARCHAR, task_path VARCHAR, reward_source VARCHAR, host VARCHAR, pid INTEGER,
    error VARCHAR, sweep_id VARCHAR, grid JSON, peak_memory_mib DOUBLE, steps_per_second DOUBLE, name VARCHAR,
    tags VARCHAR[]);
CREATE TABLE IF NOT EXISTS steps (
    run_id VARCHAR, step INTEGER, reward_mean DOUBLE, reward_std DOUBLE, frac_zero_std DOUBLE,
    kl DOUBLE, loss DOUBLE, clip_frac DOUBLE, ratio_mean DOUBLE, grad_norm DOUBLE,
    completion_tokens_mean DOUBLE, truncated_frac DOUBLE, seconds DOUBLE, seconds_sample DOUBLE,
    seconds_score DOUBLE, seconds_update DOUBLE, reward_function_means JSON, created_at TIMESTAMP,
    learning_rate DOUBLE, unscored_frac DOUBLE, sampling_logp_diff_mean DOUBLE, sampling_logp_diff_max DOUBLE,
    entropy DOUBLE, sampling_rounds INTEGER, value_loss DOUBLE, explained_variance DOUBLE, threads INTEGER,
    seconds_judge DOUBLE,
    PRIMARY KEY (run_id, step));
CREATE TABLE IF NOT EXISTS rollouts (
    run_id VARCHAR, step INTEGER, group_id INTEGER, sample_idx INTEGER, prompt VARCHAR,
    completion VARCHAR, reward DOUBLE, advantage DOUBLE, num_tokens INTEGER, truncated BOOLEAN,
    reward_version VARCHAR, completion_ids INTEGER[], extra_columns JSON, dropped BOOLEAN);
CREATE TABLE IF NOT EXISTS reward_values (
    run_id VARCHAR, step INTEGER, group_id INTEGER, sample_idx INTEGER, name VARCHAR, value DOUBLE);
CREATE TABLE IF NOT EXISTS evals (
    run_id VARCHAR, step INTEGER, num_prompts INTEGER, num_generations INTEGER, reward_mean DOUBLE,
    greedy_reward_mean DOUBLE, greedy_accuracy DOUBLE, pass_at_1 DOUBLE, pass_at_k DOUBLE, seconds DOUBLE,
    created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS health (
    run_id VARCHAR, step INTEGER, name VARCHAR, saw VARCHAR, advice VARCHAR, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS tokens (
    run_id VARCHAR, step INTEGER, group_id INTEGER, sample_idx INTEGER, tokens VARCHAR[], logprob FLOAT[],
    ref_logprob FLOAT[], ratio FLOAT[], clipped BOOLEAN[], kl FLOAT[], entropy FLOAT[]);
CREATE TABLE IF NOT EXISTS reward_logs (run_id VARCHAR, step INTEGER, name VARCHAR, output VARCHAR);
CREATE TABLE IF NOT EXISTS reward_versions (
    version VARCHAR PRIMARY KEY, filename VARCHAR, source VARCHAR, created_at TIMESTAMP);
"""
# the tables with rows of a run's steps: what truncating or exporting a run goes through
STEP_TABLES = ("steps", "rollouts", "reward_values", "reward_logs", "evals", "health", "tokens")
# Migrations from version v to v + 1, applied in order to an older store when it is opened.
MIGRATIONS: dict[int, str] = {
    1: """
    ALTER TABLE runs ADD COLUMN error VARCHAR;
    ALTER TABLE rollouts ADD COLUMN reward_version VARCHAR;
    ALTER TABLE rollouts ADD COLUMN completion_ids INTEGER[];
    ALTER TABLE rollouts ADD COLUMN extra_columns JSON;
    """,
    2: """
    ALTER TABLE steps ADD COLUMN IF NOT EXISTS learning_rate DOUBLE;
    ALTER TABLE steps ADD COLUMN IF NOT EXISTS unscored_frac DOUBLE;
    ALTER TABLE steps ADD COLUMN IF NOT EXISTS sampling_logp_diff_mean DOUBLE;
    ALTER TABLE steps ADD COLUMN IF NOT EXISTS sampling_logp_diff_max DOUBLE;
    """,
    3: """
    ALTER TABLE steps ADD COLUMN IF NOT EXISTS entropy DOUBLE;
    ALTER TABLE steps ADD COLUMN IF NOT EXISTS sampling_rounds INTEGER;
    ALTER TABLE rollouts ADD COLUMN IF NOT EXISTS dropped BOOLEAN;
    UPDATE runs SET config = json_merge_patch(config, '{"scale_rewards": "group"}')
        WHERE config->>'scale_rewards' = 'true';
    UPDATE runs SET config = json_merge_patch(config, '{"scale_rewards": "none"}')
        WHERE config->>'scale_rewards' = 'false';
    """,
    4: """
    ALTER TABLE runs ADD COLUMN IF NOT EXISTS sweep_id VARCHAR;
    ALTER TABLE runs ADD COLUMN IF NOT EXISTS grid JSON;
    ALTER TABLE runs ADD COLUMN IF NOT EXISTS peak_memory_mib DOUBLE;
    ALTER TABLE runs ADD COLUMN IF NOT EXISTS steps_per_second DOUBLE;
    ALTER TABLE steps ADD COLUMN IF NOT EXISTS value_loss DOUBLE;
    ALTER TABLE steps ADD COLUMN IF NOT EXISTS explained_variance DOUBLE;
    """,
    5: """
    CREATE TABLE IF NOT EXISTS health (
        run_id VARCHAR, step INTEGER, name VARCHAR, saw VARCHAR, advice VARCHAR, created_at TIMESTAMP);
    CREATE TABLE IF NOT EXISTS tokens (
        run_id VARCHAR, step INTEGER, group_id INTEGER, sample_idx INTEGER, tokens VARCHAR[], logprob FLOAT[],
        ref_logprob FLOAT[], ratio FLOAT[], clipped BOOLEAN[], kl FLOAT[], entropy FLOAT[]);
    """,
    6: """
    ALTER TABLE steps ADD COLUMN IF NOT EXISTS threads INTEGER;
    """,
    7: """
    ALTER TABLE runs ADD COLUMN IF NOT EXISTS name VARCHAR;
    ALTER TABLE runs ADD COLUMN IF NOT EXISTS tags VARCHAR[];
    """,
    8: """
    ALTER TABLE steps ADD COLUMN IF NOT EXISTS seconds_judge DOUBLE;
    """,
}


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Record the schema version of a new store, or upgrade an older one step by step."""
    row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
        return
    version = int(row[0])
    if version > SCHEMA_VERSION:
        raise StoreError(f"this store has schema version {version}; this workbench reads up to {SCHEMA_VERSION}")
    for v in range(version, SCHEMA_VERSION):
        con.execute(MIGRATIONS[v])
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)])
