"""The rollout store: one DuckDB file per workspace holding every run, step and completion.

`Store` is the one object users call: it opens the file (and creates or migrates its tables: `schema`), writes
runs and steps, and reads them back (`reads`); the trainer writes through a `writer.StepWriter`.

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
import secrets
import shutil
import socket
import time
from collections.abc import Iterable
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from workbench.store.reads import Reads, stored_prompt
from workbench.store.schema import SCHEMA, STEP_TABLES, StoreError, migrate

__all__ = [
    "STORE_FILE",
    "Store",
    "StoreError",
    "new_run_id",
    "stored_prompt",
]  # stored_prompt (from reads) is used beside Store

STORE_FILE = "store.duckdb"
NAME_WIDTH = 80  # the longest run name or tag: it has to fit a table cell and a dropdown


class Store(Reads):
    """The store of one workspace (`<workspace>/store.duckdb`); its reads are in `Reads`."""

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

    # naming, tagging, deleting

    def rename_run(self, run_id: str, name: str | None) -> str | None:
        """Name a run, shown beside its id (which never changes: SQL and the folders use it); blank or None
        removes the name.  -> the name stored"""
        name = (name or "").strip() or None
        if name is not None and (len(name) > NAME_WIDTH or "\n" in name):
            raise StoreError(f"a run's name is one line of at most {NAME_WIDTH} characters, not {name!r}")
        self._update_run(run_id, "name", name)
        return name

    def tag_run(self, run_id: str, tags: Iterable[str]) -> list[str]:
        """Set a run's tags (replacing its old ones): each stripped, blanks and repeats dropped.  -> the tags"""
        kept = list(dict.fromkeys(tag.strip() for tag in tags if tag.strip()))
        for tag in kept:
            if len(tag) > NAME_WIDTH or "," in tag or "\n" in tag:
                raise StoreError(f"a tag is one line of at most {NAME_WIDTH} characters without commas, not {tag!r}")
        self._update_run(run_id, "tags", kept)
        return kept

    def _update_run(self, run_id: str, column: str, value) -> None:
        with self.connect(read_only=False) as con:
            if not con.execute(
                f"UPDATE runs SET {column} = ? WHERE run_id = ? RETURNING run_id", [value, run_id]
            ).fetchall():
                raise StoreError(f"no run {run_id!r} in {self.path}")

    def delete_run(self, run_id: str) -> dict[str, int]:
        """Delete a run: its rows in every table, the reward versions no other run used, and its folder
        `<workspace>/runs/<run_id>/` (checkpoint, kept adapters). Refused while the run trains.
        -> the rows deleted, by table"""
        folder = self.workspace / "runs" / run_id  # engine.checkpoint.run_folder; the store sits below the engine
        if folder.resolve().parent != (self.workspace / "runs").resolve():
            raise StoreError(f"run id {run_id!r} does not name a folder of {self.workspace / 'runs'}")
        with self.connect(read_only=False) as con:  # holding the file: no run can start or resume meanwhile
            run = con.execute("SELECT status, host, pid FROM runs WHERE run_id = ?", [run_id]).fetchone()
            if run is None:
                raise StoreError(f"no run {run_id!r} in {self.path}")
            status, host, pid = run
            if status == "running" and (host != socket.gethostname() or pid is None or _alive(pid)):
                raise StoreError(
                    f"run {run_id} is training now (process {pid} on {host}): stop it first, then delete it"
                )
            con.begin()
            versions = con.execute(
                "SELECT DISTINCT reward_version FROM rollouts WHERE run_id = ? AND reward_version IS NOT NULL", [run_id]
            ).fetchall()
            deleted = {
                table: con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id]).fetchone()[0]
                for table in ("runs", *STEP_TABLES)
            }
            # a reward version is shared by every run it scored (content-addressed): only the run's own go
            deleted["reward_versions"] = con.execute(
                """DELETE FROM reward_versions WHERE list_contains(?, version)
                   AND version NOT IN (SELECT reward_version FROM rollouts WHERE reward_version IS NOT NULL)""",
                [[version for (version,) in versions]],
            ).fetchone()[0]
            con.commit()
        shutil.rmtree(folder, ignore_errors=True)
        return deleted

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


def new_run_id(name: str) -> str:
    """A run's id: its task's (or sweep's) name, when it started, and 4 random hex digits, e.g.
    arithmetic-20261206-081416-1957: sortable by time, and unique between runs started the same second."""
    return f"{name}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


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


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)
