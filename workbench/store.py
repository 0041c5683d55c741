"""The rollout store: one DuckDB file per workspace holding every run, step and completion.

Tables (see the README for every column): runs, steps, rollouts, reward_values.
A step is written in one transaction, so it is in the store whole or not at all.

Connections are short-lived: DuckDB lets one process hold a file open for writing, and no other
process may then even read it (shared/notes/gradio-duckdb.md). The trainer opens the file for the
few milliseconds a step's write takes; readers open it read-only per query. Either side retries for
a while when the other holds the lock, so nobody sees a lock error.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd

SCHEMA_VERSION = 1
STORE_FILE = "store.duckdb"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, created_at TIMESTAMP, task VARCHAR, model VARCHAR,
    config JSON, status VARCHAR, task_path VARCHAR, reward_source VARCHAR);
CREATE TABLE IF NOT EXISTS steps (
    run_id VARCHAR, step INTEGER, reward_mean DOUBLE, reward_std DOUBLE, frac_zero_std DOUBLE,
    kl DOUBLE, loss DOUBLE, clip_frac DOUBLE, ratio_mean DOUBLE, grad_norm DOUBLE,
    completion_tokens_mean DOUBLE, truncated_frac DOUBLE, seconds DOUBLE, seconds_sample DOUBLE,
    seconds_score DOUBLE, seconds_update DOUBLE, reward_function_means JSON, created_at TIMESTAMP,
    PRIMARY KEY (run_id, step));
CREATE TABLE IF NOT EXISTS rollouts (
    run_id VARCHAR, step INTEGER, group_id INTEGER, sample_idx INTEGER, prompt VARCHAR,
    completion VARCHAR, reward DOUBLE, advantage DOUBLE, num_tokens INTEGER, truncated BOOLEAN);
CREATE TABLE IF NOT EXISTS reward_values (
    run_id VARCHAR, step INTEGER, group_id INTEGER, sample_idx INTEGER, name VARCHAR, value DOUBLE);
"""
STEP_TABLES = ("steps", "rollouts", "reward_values")


class StoreError(RuntimeError):
    """The store cannot be opened as asked; the message names the file."""


class Store:
    """The store of one workspace (`<workspace>/store.duckdb`)."""

    def __init__(self, workspace: str | Path, create: bool = True, lock_timeout: float = 30.0):
        self.path = Path(workspace) / STORE_FILE
        self.lock_timeout = lock_timeout
        if not create:
            if not self.path.exists():
                raise StoreError(f"no store in workspace {workspace} ({self.path} does not exist)")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect(read_only=False) as con:
            con.execute(SCHEMA)
            con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])

    @contextmanager
    def _connect(self, read_only: bool):
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except (duckdb.IOException, duckdb.ConnectionException) as error:
                if "lock" not in str(error).lower() and "configuration" not in str(error):
                    raise
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.path} stayed locked for {self.lock_timeout:.0f} s") from error
                time.sleep(0.02)
        try:
            yield con
        finally:
            con.close()

    def create_run(
        self, run_id: str, task: str, task_path: str, model: str, config: dict, reward_source: str
    ) -> None:
        with self._connect(read_only=False) as con:
            con.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
                [run_id, _now(), task, model, json.dumps(config), task_path, reward_source],
            )

    def set_status(self, run_id: str, status: str) -> None:
        with self._connect(read_only=False) as con:
            con.execute("UPDATE runs SET status = ? WHERE run_id = ?", [status, run_id])

    def write_step(self, step_row: dict, rollouts: pd.DataFrame, reward_values: pd.DataFrame) -> None:
        """One step's metrics, completions and reward values, in one transaction."""
        steps = pd.DataFrame([{**step_row, "created_at": _now()}])
        with self._connect(read_only=False) as con:
            con.begin()
            con.append("steps", steps, by_name=True)
            con.append("rollouts", rollouts, by_name=True)
            con.append("reward_values", reward_values, by_name=True)
            con.commit()

    def truncate_run(self, run_id: str, after_step: int) -> None:
        """Forget the steps of a run after `after_step` (logged past its last checkpoint)."""
        with self._connect(read_only=False) as con:
            con.begin()
            for table in STEP_TABLES:
                con.execute(f"DELETE FROM {table} WHERE run_id = ? AND step > ?", [run_id, after_step])
            con.commit()

    def run(self, run_id: str) -> dict | None:
        frame = self.query("SELECT * FROM runs WHERE run_id = $1", [run_id])
        return None if frame.empty else frame.iloc[0].to_dict()

    def query(self, sql: str, parameters: list | None = None) -> pd.DataFrame:
        """Run SQL on a read-only connection and return a DataFrame."""
        with self._connect(read_only=True) as con:
            return con.execute(sql, parameters or []).df()


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)
