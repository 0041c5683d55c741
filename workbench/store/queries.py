"""User SQL over the store, confined and bounded, and the named queries users would otherwise write.

from workbench.store.queries import run_sql, named
run_sql(store, "SELECT step, reward_mean FROM steps").frame
named(store, "no_signal_groups")           # the latest run; run_id=... for another
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb

from workbench.store.database import Store

if TYPE_CHECKING:  # pandas loads with the first query, not with the CLI's help (the parser reads NAMED_QUERIES)
    import pandas as pd

MAX_ROWS = 10_000
# User SQL runs confined: read-only, no file system access, settings locked.
CONFINED = {
    "enable_external_access": False,
    "lock_configuration": True,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
}
TIMEOUT_SECONDS = 10.0


class SQLError(ValueError):
    """A user's query failed; the message is DuckDB's, without its internals."""


@dataclass
class QueryResult:
    frame: pd.DataFrame
    truncated: bool  # more rows matched than were returned
    message: str  # what a user should read under the grid


def run_sql(store: Store, sql: str, max_rows: int = MAX_ROWS, timeout: float = TIMEOUT_SECONDS) -> QueryResult:
    """Run a user's SQL read-only, with no file access, at most `max_rows` rows and `timeout` s.

    The connection is read-only (no INSERT, UPDATE, DELETE, DROP), external access is off (no
    COPY, ATTACH or read_csv of any file: the store's tables are all a query sees), and its
    configuration is locked, so the query cannot turn any of that back on.
    """
    import pandas as pd

    if not sql.strip():
        raise SQLError("the query is empty")
    with store.connect(read_only=True, config=CONFINED) as con:
        timer = threading.Timer(timeout, con.interrupt)
        timer.start()
        try:
            cursor = con.execute(sql)
            if cursor.description is None:
                return QueryResult(pd.DataFrame(), False, "the statement ran; it returns no rows")
            rows = cursor.fetchmany(max_rows + 1)
            columns = [d[0] for d in cursor.description]
        except duckdb.InterruptException:
            raise SQLError(
                f"the query ran longer than {timeout:g} s and was stopped; add a WHERE or LIMIT, or aggregate first"
            ) from None
        except duckdb.Error as error:
            raise SQLError(_plain_message(error)) from None
        finally:
            timer.cancel()
    truncated = len(rows) > max_rows
    frame = pd.DataFrame(rows[:max_rows], columns=columns)
    count = f"{len(frame):,} row" + ("" if len(frame) == 1 else "s")
    message = f"first {max_rows:,} rows shown; the query matched more" if truncated else count
    return QueryResult(frame, truncated, message)


def _plain_message(error: duckdb.Error) -> str:
    message = str(error)
    if "read-only mode" in message:
        return "the store is read-only here: queries can read, not change data (" + message + ")"
    if "file system operations are disabled" in message:
        return "queries cannot read or write files outside the workspace (" + message + ")"
    return message


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
