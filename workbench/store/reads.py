"""The store's reads: trusted SQL as DataFrames or dicts, and the runs, sweeps, steps, groups and tokens the
app, the CLI and notebooks show. `Store` has them all (`Store(workspace).runs()`); they live here, apart from
opening and writing the file (`workbench.store.database`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.events import Group
from workbench.store.schema import STEP_TABLES, StoreError

if TYPE_CHECKING:  # readers get DataFrames; the trainer's process never imports pandas (~50 MiB)
    import pandas as pd

FINAL_STEPS = 5  # a sweep's final reward: the mean reward of a run's last this many steps


class Reads:
    """The reads of `Store`, which gives them `connect` (a connection that waits while the file is locked) and
    `path`."""

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

    def run(self, run_id: str) -> dict | None:
        """The run's row, its config as a dict, its tags as a list."""
        frame = self.query("SELECT * REPLACE (coalesce(tags, []) AS tags) FROM runs WHERE run_id = $1", [run_id])
        if frame.empty:
            return None
        return frame.assign(config=frame.config.map(json.loads), tags=frame.tags.map(list)).iloc[0].to_dict()

    def runs(self) -> pd.DataFrame:
        """Every run, newest first, with how far it got and its latest reward mean; configs as dicts, tags as
        lists (empty when none), name None when the run has none."""
        frame = self.query(
            """SELECT r.run_id, r.created_at, r.task, r.model, r.status, s.last_step,
                      (r.config->>'steps')::INTEGER AS steps, s.reward_mean, r.config, r.error,
                      r.sweep_id, r.grid, r.peak_memory_mib, r.steps_per_second, r.name, coalesce(r.tags, []) AS tags
               FROM runs r LEFT JOIN (
                   SELECT run_id, max(step) AS last_step, arg_max(reward_mean, step) AS reward_mean
                   FROM steps GROUP BY run_id) s USING (run_id)
               ORDER BY r.created_at DESC"""
        )
        return frame.assign(
            config=frame.config.map(json.loads),
            grid=frame.grid.map(_json_or_none),
            name=frame.name.astype(object).where(frame.name.notna(), None),  # None, not NaN, where there is none
            tags=frame.tags.map(list),
        )

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
