"""The rollout store: one DuckDB file per workspace holding every run, step and completion.

Tables (the README documents every column): runs, steps, rollouts, reward_values, evals; `meta` holds
the schema version, and `migrate` brings an older store up to date when it is opened.

How several processes share it. DuckDB lets one process hold a file open for writing, and while it
does no other process may even read the file (shared/notes/gradio-duckdb.md). The trainer commits
steps on a background thread (`StepWriter`) that keeps its connection between steps and lets go of
it whenever another connection waits for the lock; every reader (the app, `workbench query`, a
notebook in another process) opens the file read-only for one query. Either side retries while the
other holds the lock, so nobody sees a lock error. A step is one transaction: whole or absent, also
after a SIGKILL (DuckDB's WAL replays committed transactions and drops the rest).
"""

from __future__ import annotations

import json
import os
import queue
import socket
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from workbench.events import Group

if TYPE_CHECKING:  # readers get DataFrames; the trainer's process never imports pandas (~50 MiB)
    import pandas as pd

SCHEMA_VERSION = 6
STORE_FILE = "store.duckdb"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, created_at TIMESTAMP, task VARCHAR, model VARCHAR,
    config JSON, status VARCHAR, task_path VARCHAR, reward_source VARCHAR, host VARCHAR, pid INTEGER,
    error VARCHAR, sweep_id VARCHAR, grid JSON, peak_memory_mib DOUBLE, steps_per_second DOUBLE);
CREATE TABLE IF NOT EXISTS steps (
    run_id VARCHAR, step INTEGER, reward_mean DOUBLE, reward_std DOUBLE, frac_zero_std DOUBLE,
    kl DOUBLE, loss DOUBLE, clip_frac DOUBLE, ratio_mean DOUBLE, grad_norm DOUBLE,
    completion_tokens_mean DOUBLE, truncated_frac DOUBLE, seconds DOUBLE, seconds_sample DOUBLE,
    seconds_score DOUBLE, seconds_update DOUBLE, reward_function_means JSON, created_at TIMESTAMP,
    learning_rate DOUBLE, unscored_frac DOUBLE, sampling_logp_diff_mean DOUBLE, sampling_logp_diff_max DOUBLE,
    entropy DOUBLE, sampling_rounds INTEGER, value_loss DOUBLE, explained_variance DOUBLE,
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
}
# One DuckDB thread for the step writer: it shares the cores with torch, whose threads spin.
WRITER = {"threads": 1}
FINAL_STEPS = 5  # a sweep's final reward: the mean reward of a run's last this many steps
COMMIT_SECONDS = 0.5  # the step writer commits a step at most this long after it arrives
POLL_SECONDS = 0.05  # and looks this often for a connection that waits for the file
_COMMIT, _CLOSE = "commit", "close"  # the step writer's orders, besides steps
# User SQL runs confined: read-only, no file system access, settings locked.
CONFINED = {
    "enable_external_access": False,
    "lock_configuration": True,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
}


class StoreError(RuntimeError):
    """The store cannot be opened or queried as asked; the message says why."""


class Store:
    """The store of one workspace (`<workspace>/store.duckdb`)."""

    def __init__(self, workspace: str | Path, create: bool = True, lock_timeout: float = 30.0):
        self.workspace = Path(workspace)
        self.path = self.workspace / STORE_FILE
        self.lock_timeout = lock_timeout
        if not create:
            if not self.path.exists():
                raise StoreError(f"no store in workspace {workspace} ({self.path} does not exist)")
            return
        self.workspace.mkdir(parents=True, exist_ok=True)
        with self.connect(read_only=False) as con:
            con.execute(SCHEMA)
            migrate(con)
            _mark_interrupted(con)

    @contextmanager
    def connect(self, read_only: bool = True, config: dict | None = None):
        """A short-lived connection, waiting while another connection holds the file's lock."""
        con = self.open(read_only, config)
        try:
            yield con
        finally:
            con.close()

    def open(self, read_only: bool, config: dict | None = None) -> duckdb.DuckDBPyConnection:
        """Open the file, retrying while it is locked; a waiting reader asks the writer to let go."""
        deadline = time.monotonic() + self.lock_timeout
        if self._someone_waits():
            time.sleep(0.02)  # let the connection that is waiting go first
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only, config=config or {})
            except (duckdb.IOException, duckdb.ConnectionException, duckdb.ResourceInUseException) as error:
                # another process holds the file lock, or this process has it open differently
                if not any(word in str(error) for word in ("lock", "configuration", "already attached")):
                    raise
                if time.monotonic() > deadline:
                    raise StoreError(f"{self.path} stayed locked for {self.lock_timeout:.0f} s") from error
                self.request_file.touch()
                time.sleep(0.01)

    def _someone_waits(self) -> bool:
        try:
            return time.time() - self.request_file.stat().st_mtime < 0.1
        except FileNotFoundError:
            return False

    @property
    def request_file(self) -> Path:
        """Touched by a connection that waits for the lock; the step writer then closes its own."""
        return self.path.with_name(STORE_FILE + ".wanted")

    # runs

    def create_run(
        self,
        run_id: str,
        task: str,
        task_path: str,
        model: str,
        config: dict,
        reward_source: str,
        sweep_id: str | None = None,
        grid: dict | None = None,
    ) -> None:
        """A new run, 'running'; a sweep's run names its sweep and its grid values."""
        with self.connect(read_only=False) as con:
            con.execute(
                "INSERT INTO runs (run_id, created_at, task, model, config, status, task_path, reward_source, "
                "host, pid, sweep_id, grid) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                [
                    run_id,
                    _now(),
                    task,
                    model,
                    json.dumps(config),
                    task_path,
                    reward_source,
                    socket.gethostname(),
                    os.getpid(),
                    sweep_id,
                    None if grid is None else json.dumps(grid),
                ],
            )

    def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        """A run's status, and why it paused or failed (None clears it)."""
        with self.connect(read_only=False) as con:
            con.execute(
                "UPDATE runs SET status = ?, error = ?, host = ?, pid = ? WHERE run_id = ?",
                [status, error, socket.gethostname(), os.getpid(), run_id],
            )

    def set_run_stats(self, run_id: str, peak_memory_mib: float, steps_per_second: float | None) -> None:
        """What a run cost, measured by its process as it ended (`hardware.peak_memory_mib`)."""
        with self.connect(read_only=False) as con:
            con.execute(
                "UPDATE runs SET peak_memory_mib = ?, steps_per_second = ? WHERE run_id = ?",
                [peak_memory_mib, steps_per_second, run_id],
            )

    def set_config(self, run_id: str, config: dict) -> None:
        with self.connect(read_only=False) as con:
            con.execute("UPDATE runs SET config = ? WHERE run_id = ?", [json.dumps(config), run_id])

    def run(self, run_id: str) -> dict | None:
        """The run's row, its config as a dict."""
        frame = self.query("SELECT * FROM runs WHERE run_id = $1", [run_id])
        return None if frame.empty else frame.assign(config=frame.config.map(json.loads)).iloc[0].to_dict()

    # steps

    def write_steps(self, steps: list[dict[str, list[dict]]], con: duckdb.DuckDBPyConnection | None = None) -> None:
        """Steps' rows by table, in one transaction: steps, rollouts, reward_values, reward_logs, and
        reward_versions when a step was scored by a source the store may not have yet."""
        if con is None:
            with self.connect(read_only=False) as con:
                return self.write_steps(steps, con)
        tables: dict[str, list[dict]] = {}
        for rows in steps:
            for table, table_rows in rows.items():
                tables.setdefault(table, []).extend(table_rows)
        for table in ("steps", "evals", "health"):
            tables[table] = [{**row, "created_at": _now()} for row in tables.get(table, [])]
        con.begin()
        for table, table_rows in tables.items():
            if not table_rows:
                continue
            if table == "reward_versions":  # content-addressed: a version stored before is kept as it is
                con.executemany(
                    "INSERT OR IGNORE INTO reward_versions VALUES (?, ?, ?, ?)",
                    [[r["version"], r["filename"], r["source"], _now()] for r in table_rows],
                )
                continue
            # DuckDB's appender: 1.2 ms for 64 rollouts, against 2.7 ms through a DataFrame
            with con.appender(table, columns=list(table_rows[0])) as appender:
                appender.append_rows([tuple(row.values()) for row in table_rows])
        con.commit()

    def truncate_run(self, run_id: str, after_step: int) -> None:
        """Forget the steps of a run after `after_step` (logged past its last checkpoint)."""
        with self.connect(read_only=False) as con:
            con.begin()
            for table in STEP_TABLES:
                con.execute(f"DELETE FROM {table} WHERE run_id = ? AND step > ?", [run_id, after_step])
            con.commit()

    # reading

    def query(self, sql: str, parameters: list | None = None) -> pd.DataFrame:
        """Trusted SQL (the workbench's own) on a read-only connection, as a DataFrame."""
        with self.connect(read_only=True) as con:
            return con.execute(sql, parameters or []).df()

    def records(self, sql: str, parameters: list | None = None) -> list[dict]:
        """Trusted SQL on a read-only connection, as dicts: for the trainer's process, which never loads pandas."""
        with self.connect(read_only=True) as con:
            cursor = con.execute(sql, parameters or [])
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def runs(self) -> pd.DataFrame:
        """Every run, newest first, with how far it got and its latest reward mean; configs as dicts."""
        frame = self.query(
            """SELECT r.run_id, r.created_at, r.task, r.model, r.status, s.last_step,
                      (r.config->>'steps')::INTEGER AS steps, s.reward_mean, r.config, r.error,
                      r.sweep_id, r.grid, r.peak_memory_mib, r.steps_per_second
               FROM runs r LEFT JOIN (
                   SELECT run_id, max(step) AS last_step, arg_max(reward_mean, step) AS reward_mean
                   FROM steps GROUP BY run_id) s USING (run_id)
               ORDER BY r.created_at DESC"""
        )
        return frame.assign(config=frame.config.map(json.loads), grid=frame.grid.map(_json_or_none))

    def sweeps(self) -> pd.DataFrame:
        """Every sweep, newest first: its task, when its first run started, how many runs it has and finished."""
        return self.query(
            """SELECT sweep_id, any_value(task) AS task, min(created_at) AS created_at, count(*) AS runs,
                      count(*) FILTER (status = 'finished') AS finished
               FROM runs WHERE sweep_id IS NOT NULL GROUP BY sweep_id ORDER BY created_at DESC"""
        )

    def sweep(self, sweep_id: str) -> pd.DataFrame:
        """A sweep's runs by grid point and seed, one row each: run_id, its grid values as columns, seed,
        status, last_step, final_reward (the mean of reward_mean over its last FINAL_STEPS stored steps),
        steps_per_second, peak_memory_mib, error, `grid` (a dict), and `point` (the grid values as one
        label, the key of its band over seeds)."""
        frame = self.query(
            """SELECT r.run_id, (r.config->>'seed')::INTEGER AS seed, r.status, s.last_step, s.final_reward,
                      r.steps_per_second, r.peak_memory_mib, r.error, r.grid
               FROM runs r LEFT JOIN (
                   SELECT run_id, max(step) AS last_step, avg(reward_mean) FILTER (from_last <= $2) AS final_reward
                   FROM (SELECT run_id, step, reward_mean,
                                row_number() OVER (PARTITION BY run_id ORDER BY step DESC) AS from_last FROM steps)
                   GROUP BY run_id) s USING (run_id)
               WHERE r.sweep_id = $1 ORDER BY r.created_at""",
            [sweep_id, FINAL_STEPS],
        )
        grids = frame.grid.map(_json_or_none).map(lambda grid: grid or {})
        names = list(dict.fromkeys(name for grid in grids for name in grid))
        values = {name: grids.map(lambda grid, name=name: grid.get(name)) for name in names}
        point = grids.map(lambda grid: " ".join(f"{name}={value}" for name, value in grid.items()) or "(no grid)")
        frame = frame.assign(grid=grids, point=point)
        for k, name in enumerate(names):
            frame.insert(1 + k, name, values[name])
        return frame.sort_values([*names, "seed"], ignore_index=True, kind="stable")

    def sweep_steps(self, sweep_id: str) -> pd.DataFrame:
        """The `steps` rows of every run of a sweep, by run and step."""
        return self.query(
            """SELECT s.* EXCLUDE (reward_function_means) FROM steps s JOIN runs r USING (run_id)
               WHERE r.sweep_id = $1 ORDER BY s.run_id, s.step""",
            [sweep_id],
        )

    def steps(self, run_id: str) -> pd.DataFrame:
        """A run's `steps` rows in order, with `reward_function_means` as dicts."""
        frame = self.query("SELECT * FROM steps WHERE run_id = $1 ORDER BY step", [run_id])
        means = frame.reward_function_means.map(lambda text: json.loads(text) if isinstance(text, str) else {})
        return frame.assign(reward_function_means=means)

    def evals(self, run_id: str) -> pd.DataFrame:
        """A run's held-out evaluations (`evals` rows) in order of step."""
        return self.query("SELECT * FROM evals WHERE run_id = $1 ORDER BY step", [run_id])

    def health(self, run_id: str) -> pd.DataFrame:
        """The health checks a run's trainer saw start firing (`health` rows), in order of step."""
        return self.query("SELECT * FROM health WHERE run_id = $1 ORDER BY step, name", [run_id])

    def token_view(self, run_id: str, step: int, group_id: int, sample_idx: int) -> pd.DataFrame:
        """One completion's tokens, one row each: the token, log p under the policy and the reference, the
        ratio, whether it was clipped, the KL term, the entropy, and its push in the update,
        `contribution` = A x ratio where the clip left the gradient (0 where it cut it): the weight of
        the token's grad log p in the surrogate. Empty when the run stored no token stats."""
        rows = self.query(
            """SELECT t.*, r.advantage FROM tokens t JOIN rollouts r USING (run_id, step, group_id, sample_idx)
               WHERE run_id = $1 AND step = $2 AND group_id = $3 AND sample_idx = $4""",
            [run_id, step, group_id, sample_idx],
        )
        import pandas as pd  # readers only (see the TYPE_CHECKING import)

        if rows.empty:
            return pd.DataFrame()
        row = rows.iloc[0]
        columns = ("tokens", "logprob", "ref_logprob", "ratio", "clipped", "kl", "entropy")
        frame = pd.DataFrame({c: row[c] if row[c] is not None else None for c in columns})
        frame["contribution"] = row["advantage"] * frame.ratio * ~frame.clipped.astype(bool)
        return frame.rename(columns={"tokens": "token"})

    def group(self, run_id: str, step: int, group_id: int) -> Group | None:
        """One stored group, as the trainer yielded it (a chat prompt comes back as its messages)."""
        groups = self.groups(run_id, step, group_id)
        return groups[0] if groups else None

    def groups(self, run_id: str, step: int, group_id: int | None = None) -> list[Group]:
        """A stored step's groups in order (or the one `group_id` names), read on one connection."""
        key = [run_id, step] if group_id is None else [run_id, step, group_id]
        where = "WHERE run_id = $1 AND step = $2" + ("" if group_id is None else " AND group_id = $3")
        with self.connect(read_only=True) as con:
            rollouts = con.execute(
                f"SELECT * REPLACE (coalesce(dropped, false) AS dropped) FROM rollouts {where} "
                "ORDER BY group_id, sample_idx",
                key,
            ).df()  # dropped is NULL on rows older than dynamic sampling
            values = con.execute(
                f"SELECT group_id, sample_idx, name, value FROM reward_values {where} ORDER BY group_id, sample_idx",
                key,
            ).df()
        values_of = dict(tuple(values.groupby("group_id")))
        return [
            _stored_group(int(g), rows, values_of.get(g, values.iloc[:0]))
            for g, rows in rollouts.groupby("group_id", sort=True)
        ]

    def export_run(self, run_id: str, folder: str | Path, format: str = "parquet") -> list[Path]:
        """Write a run's rows of every table to `folder/<table>.<format>` (parquet or csv)."""
        if format not in ("parquet", "csv"):
            raise StoreError(f"export format must be parquet or csv, not {format!r}")
        if self.run(run_id) is None:
            raise StoreError(f"no run {run_id!r} in {self.path}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        selects = {table: f"SELECT * FROM {table} WHERE run_id = $1" for table in ("runs", *STEP_TABLES)}
        selects["reward_versions"] = (
            "SELECT * FROM reward_versions WHERE version IN (SELECT reward_version FROM rollouts WHERE run_id = $1)"
        )
        options = "FORMAT parquet" if format == "parquet" else "FORMAT csv, HEADER"
        with self.connect(read_only=True) as con:
            for table, select in selects.items():
                path = folder / f"{table}.{format}"
                con.execute(f"COPY ({select}) TO '{path}' ({options})", [run_id])
                paths.append(path)
        return paths


class StepWriter:
    """Writes steps to the store on a background thread, so the trainer never waits for DuckDB.

    Opening a DuckDB file costs ~12 ms (measured, 2 cores), more than a tiny model's step can spare,
    so the writer keeps its connection open between steps and closes it only when another
    connection is waiting for the lock (it touched `Store.request_file`), which it looks for every
    POLL_SECONDS: a reader in any process waits at most about that long.

    Steps are committed together, at most COMMIT_SECONDS after the first of them arrived: a commit
    costs ~7-16 ms of a core however much it holds, and with one per step the tiny model's 60 ms
    steps ran 5-10% slower than with no writes (2 cores). So a killed trainer loses at most its
    last COMMIT_SECONDS of steps, and every commit holds whole steps. An error in the thread is
    raised on the trainer's next call.
    """

    def __init__(self, store: Store):
        self.store = store
        self.queue: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="store-writer", daemon=True)
        self.thread.start()

    def write(self, rows: dict[str, list[dict]]) -> None:
        self._raise()
        self.queue.put(rows)

    def flush(self) -> None:
        """Commit every step written so far, and wait until it is."""
        self.queue.put(_COMMIT)
        self.queue.join()
        self._raise()

    def close(self) -> None:
        self.queue.put(_CLOSE)
        self.thread.join()
        self._raise()

    def _work(self) -> None:
        con, pending, due, taken, item = None, [], 0.0, 0, None
        while item is not _CLOSE:
            try:
                item = self.queue.get(timeout=POLL_SECONDS)
                taken += 1
            except queue.Empty:
                item = None
            if isinstance(item, dict):
                due = due if pending else time.monotonic() + COMMIT_SECONDS
                pending.append(item)
            waits = self.store.request_file.exists()  # a connection waits for the file
            if item in (_COMMIT, _CLOSE) or waits or (pending and time.monotonic() >= due):
                con = self._commit(con, pending)
                pending = []
                for _ in range(taken):  # flush() returns once what it waited for is committed
                    self.queue.task_done()
                taken = 0
        if con is not None:
            con.close()

    def _commit(self, con, pending: list[dict]):
        """Commit the pending steps; let go of the file when someone waits for it. -> the connection kept"""
        try:
            if self.error is None and pending:
                con = con or self.store.open(read_only=False, config=WRITER)
                self.store.write_steps(pending, con=con)
            if con is not None and self.store.request_file.exists():
                self.store.request_file.unlink(missing_ok=True)
                con = con.close()
        except BaseException as error:  # kept for the trainer's thread to raise
            self.error = error
        return con

    def _raise(self) -> None:
        if self.error is not None:
            raise StoreError(f"writing a step to {self.store.path} failed: {self.error}") from self.error


def step_rows(
    run_id: str,
    step: int,
    metrics: dict,
    groups: list[Group],
    columns: list[dict],
    completion_ids: list[list[int] | None],
    source,
    *,
    new_reward: bool,
    reward_output: dict[str, str] | None = None,
    tokens: list[dict | None] | None = None,
) -> dict[str, list[dict]]:
    """A step's rows for every table it writes, in one `StepWriter.write`.

    steps: the step's metrics (reward_function_means as JSON); rollouts and reward_values: its groups
    (`rollout_rows`); reward_versions: the reward source's file (`source`: a RewardSource's version,
    filename and text) when this step is the first it scored (`new_reward`); reward_logs: what each reward
    function printed; tokens: each completion's per-token numbers, None where it was not trained."""
    step_row = metrics | {
        "run_id": run_id,
        "step": step,
        "reward_function_means": json.dumps(metrics.get("reward_function_means") or {}),
    }
    versions = [dict(version=source.version, filename=source.filename, source=source.text)] if new_reward else []
    logs = [dict(run_id=run_id, step=step, name=name, output=text) for name, text in (reward_output or {}).items()]
    keys = [
        dict(run_id=run_id, step=step, group_id=g.group_id, sample_idx=k)
        for g in groups
        for k in range(len(g.completions))
    ]
    return {
        "steps": [step_row],
        **rollout_rows(run_id, step, groups, columns, completion_ids, source.version),
        "reward_versions": versions,
        "reward_logs": logs,
        "tokens": [key | one for key, one in zip(keys, tokens or [None] * len(keys), strict=True) if one is not None],
    }


def rollout_rows(
    run_id: str,
    step: int,
    groups: list[Group],
    columns: list[dict],
    completion_ids: list[list[int] | None],
    reward_version: str,
) -> dict[str, list[dict]]:
    """The `rollouts` and `reward_values` rows of a step's groups, as `Store.group` reads them back.

    columns: each group's dataset columns besides its prompt; completion_ids: each completion's token
    ids, group by group."""
    rollouts, values = [], []
    for group, extra in zip(groups, columns, strict=True):
        prompt = group.prompt if isinstance(group.prompt, str) else json.dumps(group.prompt)
        extra_columns = json.dumps(extra, default=str)
        for k, completion in enumerate(group.completions):
            key = dict(run_id=run_id, step=step, group_id=group.group_id, sample_idx=k)
            rollouts.append(
                key
                | dict(
                    prompt=prompt,
                    completion=completion,
                    reward=group.rewards[k],
                    advantage=group.advantages[k],
                    num_tokens=group.num_tokens[k],
                    truncated=group.truncated[k],
                    reward_version=reward_version,
                    completion_ids=completion_ids[len(rollouts)],
                    extra_columns=extra_columns,
                    dropped=group.dropped,
                )
            )
            values += [key | dict(name=name, value=v[k]) for name, v in group.reward_values.items()]
    return {"rollouts": rollouts, "reward_values": values}


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


def _mark_interrupted(con: duckdb.DuckDBPyConnection) -> None:
    """Runs still 'running' whose process on this host is gone were killed: mark them interrupted."""
    host = socket.gethostname()
    rows = con.execute("SELECT run_id, pid FROM runs WHERE status = 'running' AND host = ?", [host]).fetchall()
    for run_id, pid in rows:
        if not _alive(pid):
            con.execute("UPDATE runs SET status = 'interrupted' WHERE run_id = ?", [run_id])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stored_group(group_id: int, rollouts: pd.DataFrame, values: pd.DataFrame) -> Group:
    """A group from its rollouts rows and reward_values rows, by sample index."""
    return Group(
        group_id=group_id,
        prompt=stored_prompt(rollouts.prompt.iloc[0]),
        completions=rollouts.completion.tolist(),
        rewards=rollouts.reward.tolist(),
        reward_values={
            name: [None if v != v else v for v in rows.value]  # NULL reads as NaN: a function returned None
            for name, rows in values.groupby("name", sort=False)
        },
        advantages=rollouts.advantage.tolist(),
        num_tokens=rollouts.num_tokens.tolist(),
        truncated=rollouts.truncated.tolist(),
        dropped=bool(rollouts.dropped.iloc[0]),  # a numpy bool: `is True` would never hold
    )


def stored_prompt(text: str) -> str | list[dict]:
    """The prompt as the trainer gave it: the store keeps chat messages as JSON text."""
    if text.startswith("[{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    return text


def _json_or_none(text: str | None):
    return json.loads(text) if isinstance(text, str) else None  # a NULL reads as None or NaN


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)
