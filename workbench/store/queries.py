"""User SQL over the store, confined and bounded, and the named queries users would otherwise write.

from workbench.store.queries import run_sql, named
run_sql(store, "SELECT step, reward_mean FROM steps").frame
named(store, "no_signal_groups")           # the latest run; run_id=... for another
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from workbench.store.database import Store, StoreError

if TYPE_CHECKING:  # pandas loads with the first query, not with the CLI's help (the parser reads NAMED_QUERIES)
    import pandas as pd

MAX_ROWS = 10_000
MAX_RESULT_MB = 32  # of values a query returns: 10,000 rows of whole completions fit, 10,000 copies of one do not
MEMORY_GB = 1  # DuckDB's memory for one query: joins, aggregates and sorts past it spill to disk...
TEMP_GB = 1  # ...up to this much, in a folder of the query's own, removed after it
TIMEOUT_SECONDS = 10.0
# Each query gets a DuckDB of its own (in memory) that attaches the store read-only: its limits are its own,
# and it never waits for the app's other readers of the store, nor they for it (DuckDB refuses a second
# connection to a file with settings that differ from the first's, in one process).
SETTINGS = {
    "memory_limit": f"{MEMORY_GB}GB",
    "max_temp_directory_size": f"{TEMP_GB}GB",
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
}
# Once the store is attached: no file system access (no COPY, ATTACH or read_csv of any file: the store's tables
# are all a query sees), and the configuration locked, so the query cannot turn any of that back on.
CONFINE = "SET enable_external_access = false; SET lock_configuration = true"


class SQLError(ValueError):
    """A user's query failed; the message is DuckDB's, without its internals."""


@dataclass
class QueryResult:
    frame: pd.DataFrame
    truncated: bool  # more rows matched than were returned
    message: str  # what a user should read under the grid


def run_sql(
    store: Store,
    sql: str,
    max_rows: int = MAX_ROWS,
    timeout: float = TIMEOUT_SECONDS,
    max_mb: float = MAX_RESULT_MB,
) -> QueryResult:
    """Run a user's SQL read-only, with no file access, at most `max_rows` rows, `max_mb` MB of values,
    `timeout` s and `MEMORY_GB` of memory (then `TEMP_GB` of disk, removed afterwards).

    The store is attached read-only (no INSERT, UPDATE, DELETE, DROP), external access is off and the
    configuration locked. Queries run at once, each in a DuckDB of its own: a slow one holds no other.
    """
    import pandas as pd

    if not sql.strip():
        raise SQLError("the query is empty")
    temp = Path(tempfile.mkdtemp(prefix="workbench-sql-"))
    try:
        with _confined(store, temp) as con:
            timer = threading.Timer(timeout, con.interrupt)
            timer.start()
            try:
                cursor = con.execute(sql)
                if cursor.description is None:
                    return QueryResult(pd.DataFrame(), False, "the statement ran; it returns no rows")
                rows, cut = _fetch(cursor, max_rows, int(max_mb * (1 << 20)))
                columns = [d[0] for d in cursor.description]
            except duckdb.InterruptException:
                raise SQLError(
                    f"the query ran longer than {timeout:g} s and was stopped; add a WHERE or LIMIT, or aggregate first"
                ) from None
            except duckdb.OutOfMemoryException as error:
                raise SQLError(
                    f"the query needed more than the {MEMORY_GB} GB of memory (then {TEMP_GB} GB of disk) a query may "
                    f"use, and was stopped; add a WHERE or LIMIT, or aggregate first ({_first_line(error)})"
                ) from None
            except duckdb.Error as error:
                raise SQLError(_plain_message(error, sql)) from None
            finally:
                timer.cancel()
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    frame = pd.DataFrame(rows, columns=columns)
    count = f"{len(frame):,} row" + ("" if len(frame) == 1 else "s")
    return QueryResult(frame, cut is not None, cut or count)


@contextmanager
def _confined(store: Store, temp: Path):
    """A DuckDB of the query's own, spilling to `temp`, with the store attached read-only as its default schema."""
    con = duckdb.connect(":memory:", config={**SETTINGS, "temp_directory": str(temp)})
    try:
        _attach(store, con)
        con.execute(CONFINE)
        yield con
    finally:
        con.close()


def _attach(store: Store, con: duckdb.DuckDBPyConnection) -> None:
    """Attach the store read-only, waiting (as `Store.open` does) while a writer holds it."""
    path = "'" + str(store.path).replace("'", "''") + "'"
    deadline = time.monotonic() + store.lock_timeout
    while True:
        try:
            con.execute(f"ATTACH {path} AS store (READ_ONLY); USE store")
            return
        except (duckdb.IOException, duckdb.ConnectionException, duckdb.ResourceInUseException) as error:
            if not any(word in str(error) for word in ("lock", "already attached")):
                raise
            if time.monotonic() > deadline:
                raise StoreError(f"{store.path} stayed locked for {store.lock_timeout:.0f} s") from error
            store.request_file.touch()  # the step writer lets go of the file
            time.sleep(0.01)


def _fetch(cursor, max_rows: int, max_bytes: int) -> tuple[list[tuple], str | None]:
    """Up to `max_rows` rows and `max_bytes` of values, and why the rest was left (None when nothing was)."""
    rows, size = [], 0
    while chunk := cursor.fetchmany(min(1000, max_rows + 1 - len(rows))):
        for row in chunk:
            size += sum(_size(value) for value in row)
            if size > max_bytes:
                return rows, (
                    f"first {len(rows):,} rows shown: the result passed the {max_bytes / (1 << 20):g} MB a query may "
                    "return; select fewer columns or shorter values (e.g. left(completion, 200))"
                )
            rows.append(row)
        if len(rows) > max_rows:
            return rows[:max_rows], f"first {max_rows:,} rows shown; the query matched more"
    return rows, None


def _size(value) -> int:
    """About how many bytes a value takes to show: its characters for text."""
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    if value is None or isinstance(value, (bool, int, float)):
        return 8
    return len(str(value))


def _plain_message(error: duckdb.Error, sql: str = "") -> str:
    message = _with_position(str(error), sql)
    if "read-only mode" in message:
        return "the store is read-only here: queries can read, not change data (" + message + ")"
    if "file system operations are disabled" in message:
        return "queries cannot read or write files outside the workspace (" + message + ")"
    return message


def _with_position(message: str, sql: str) -> str:
    """DuckDB's message with the error's place also in words after its first line, '(line 2, column 7)':
    its caret under 'LINE 2: ...' lines up only in a fixed-width font."""
    found = re.search(r"^LINE (\d+): (.*)\n( *)\^", message, re.MULTILINE)
    if not found:
        return message
    line, excerpt, pad = int(found.group(1)), found.group(2), found.group(3)
    offset = len(pad) - len(f"LINE {line}: ")  # the caret's place in the excerpt
    if excerpt.startswith("..."):  # DuckDB shows a window of a long line: find it in the query's line
        lines = sql.splitlines()
        text = lines[line - 1] if line <= len(lines) else ""
        start = text.find(excerpt[3:].rstrip("."))
        if start < 0:
            return message
        offset += start - 3
    first, _, rest = message.partition("\n")
    return f"{first} (line {line}, column {offset + 1})\n{rest}"


def _first_line(error: duckdb.Error) -> str:
    return str(error).split("\n", 1)[0]


LATEST_RUN = "(SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 1)"

NAMED_QUERIES: dict[str, tuple[str, str]] = {
    "reward_per_step": (
        "Reward mean and within-group std per step, with KL and the share of groups with no signal",
        """SELECT step, reward_mean, reward_std, frac_zero_std, kl, loss, completion_tokens_mean
FROM steps WHERE run_id = $run_id ORDER BY step""",
    ),
    "reward_per_function": (
        "Each reward function's mean per step",
        """SELECT step, name, avg(value) AS mean, count(value) AS scored
FROM reward_values WHERE run_id = $run_id GROUP BY step, name ORDER BY step, name""",
    ),
    "no_signal_groups": (
        "Groups whose completions all got the same reward: advantage 0, nothing learned",
        """WITH flat AS (SELECT step, group_id, min(reward) AS reward FROM rollouts WHERE run_id = $run_id
              GROUP BY step, group_id HAVING min(reward) = max(reward))
SELECT f.step, f.group_id, r.prompt, f.reward
FROM flat f JOIN rollouts r ON r.run_id = $run_id AND r.step = f.step AND r.group_id = f.group_id AND r.sample_idx = 0
ORDER BY f.step DESC, f.group_id""",
    ),
    "best_and_worst": (
        "The five best and five worst completions of the latest step",
        """WITH latest AS (SELECT * FROM rollouts WHERE run_id = $run_id
                AND step = (SELECT max(step) FROM rollouts WHERE run_id = $run_id))
SELECT * FROM (
    (SELECT 'best' AS rank, prompt, completion, reward, advantage FROM latest ORDER BY reward DESC LIMIT 5)
    UNION ALL
    (SELECT 'worst' AS rank, prompt, completion, reward, advantage FROM latest ORDER BY reward ASC LIMIT 5))
ORDER BY rank, CASE WHEN rank = 'best' THEN -reward ELSE reward END""",
    ),
    "suspected_reward_hacking": (
        "Top-10% rewards with an unusual length (over 2 std from the step's mean) or a repeated opening",
        """WITH lengths AS (SELECT step, avg(num_tokens) AS mean, stddev_samp(num_tokens) AS std
                 FROM rollouts WHERE run_id = $run_id GROUP BY step),
     cutoff AS (SELECT quantile_cont(reward, 0.9) AS high FROM rollouts WHERE run_id = $run_id),
     candidates AS (
         SELECT r.*, (r.num_tokens - l.mean) / nullif(l.std, 0) AS length_z,
                length(r.completion) >= 40 AND contains(substr(r.completion, 21), substr(r.completion, 1, 20))
                    AS repeats_opening
         FROM rollouts r JOIN lengths l USING (step), cutoff
         WHERE r.run_id = $run_id AND r.reward >= cutoff.high)
SELECT step, group_id, sample_idx, reward, num_tokens, round(length_z, 2) AS length_z, repeats_opening, completion
FROM candidates WHERE abs(length_z) > 2 OR repeats_opening
ORDER BY step DESC, reward DESC""",
    ),
    "same_prompt_across_steps": (
        "The latest step's prompts: their mean reward each earlier time they were sampled",
        """WITH latest AS (SELECT DISTINCT prompt FROM rollouts WHERE run_id = $run_id
                AND step = (SELECT max(step) FROM rollouts WHERE run_id = $run_id))
SELECT prompt, step, avg(reward) AS reward_mean, count(*) AS completions
FROM rollouts WHERE run_id = $run_id AND prompt IN (SELECT prompt FROM latest)
GROUP BY prompt, step ORDER BY prompt, step""",
    ),
    "length_vs_reward": (
        "Completion length against reward",
        """SELECT num_tokens, count(*) AS completions, avg(reward) AS reward_mean
FROM rollouts WHERE run_id = $run_id GROUP BY num_tokens ORDER BY num_tokens""",
    ),
    "truncation_over_time": (
        "Share of completions cut at max_new_tokens, per step",
        """SELECT step, avg(truncated::INTEGER) AS truncated_frac, avg(num_tokens) AS tokens_mean
FROM rollouts WHERE run_id = $run_id GROUP BY step ORDER BY step""",
    ),
}


def named_sql(name: str, run_id: str | None = None) -> str:
    """The named query's SQL for a run (the latest run when None), ready to edit and run."""
    if name not in NAMED_QUERIES:
        raise SQLError(f"no named query {name!r}; there are: {', '.join(NAMED_QUERIES)}")
    run = LATEST_RUN if run_id is None else "'" + run_id.replace("'", "''") + "'"
    return NAMED_QUERIES[name][1].replace("$run_id", run)


def named(store: Store, name: str, run_id: str | None = None) -> pd.DataFrame:
    return run_sql(store, named_sql(name, run_id)).frame


# the tables as a newcomer reads them: runs, their steps, the completions and what scored them, then the rest
TABLE_ORDER = ["runs", "steps", "rollouts", "reward_values", "tokens", "evals", "health", "reward_logs"]


def tables(store: Store) -> pd.DataFrame:
    """What a query can read: each table of the store (TABLE_ORDER first) and its columns, one row per column:
    table, column, type."""
    return store.query(
        """SELECT table_name AS "table", column_name AS "column", data_type AS type FROM duckdb_columns()
           WHERE NOT internal AND schema_name = 'main' AND table_name <> 'meta'
           ORDER BY coalesce(list_position($1, table_name), 1000), table_name, column_index""",
        [TABLE_ORDER],
    )
