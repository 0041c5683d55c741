"""The runs as the Runs and Explore tabs list them: a table that fits a laptop's screen (times to the minute,
numbers to 3 significant digits, progress as "12/60"), run pickers labelled by name, a run's summary line."""

from __future__ import annotations

import html
import json

import pandas as pd

from workbench.config import Config
from workbench.formatting import cut, nullable

# the runs table's columns, as `runs_table` fills them
COLUMNS = ["run_id", "name", "tags", "task", "model", "status", "step", "reward", "started", "settings"]
COLUMN_WIDTHS = [265, 110, 90, 100, 60, 105, 85, 65, 145, 175]  # px: in 1280 px, no scrolling, an id on one line
SETTINGS_WIDTH = 48  # the characters of a run's changed settings the table shows (the summary has them all)


def significant(value, digits: int = 3) -> str:
    """A number to `digits` significant digits ('' when there is none): 0.3125 -> '0.312', 1234.5 -> '1.23e+03'."""
    value = _number(value)
    return "" if value is None else f"{value:.{digits}g}"


def progress(last_step, steps) -> str:
    """How far a run got: '12/60' (its last stored step of its steps; 0 before its first)."""
    return f"{int(_number(last_step) or 0)}/{int(_number(steps) or 0)}"


def _number(value) -> float | None:
    """`formatting.nullable`, and pandas' NA too (a run with no step yet has an NA last_step)."""
    return None if value is None or pd.isna(value) else nullable(value)


def settings(config: dict) -> str:
    """The settings a run changed from the defaults, in one line."""
    changed = Config.from_dict(config).changed()
    return " ".join(f"{name}={value}" for name, value in changed.items()) or "defaults"


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """`Store.runs()` as the Runs tab shows it: one row per run, every cell text (COLUMNS)."""
    return pd.DataFrame(
        {
            "run_id": runs.run_id,
            "name": runs.name.map(lambda name: name or ""),
            "tags": runs.tags.map(", ".join),
            "task": runs.task,
            "model": runs.model.map(lambda model: cut(str(model), 24)),
            "status": runs.status,
            "step": [progress(last, steps) for last, steps in zip(runs.last_step, runs.steps)],
            "reward": runs.reward_mean.map(significant),
            "started": runs.created_at.map(lambda time: f"{time:%Y-%m-%d %H:%M}"),
            "settings": runs.config.map(lambda config: cut(settings(config), SETTINGS_WIDTH)),
        },
        columns=COLUMNS,
    )


def label(run_id: str, name: str | None) -> str:
    """A run as a picker names it: its name and id, or its id alone."""
    return f"{name} · {run_id}" if isinstance(name, str) and name else run_id


def run_choices(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """(label, run_id) for a dropdown of runs, newest first."""
    return [(label(run_id, name), run_id) for run_id, name in zip(runs.run_id, runs.name)]


def summary(run: dict, stored_steps: int) -> str:
    """A run's summary line (markdown): name, id, status, task, model, steps stored, changed settings, tags; and
    why it failed or paused."""
    config = run["config"]
    name = f"**{html.escape(run['name'])}** · `{run['run_id']}`" if run.get("name") else f"**{run['run_id']}**"
    tags = " · tags " + ", ".join(f"`{html.escape(tag)}`" for tag in run.get("tags") or []) if run.get("tags") else ""
    text = (
        f"{name} · {run['status']} · task {html.escape(run['task'])} · model {html.escape(run['model'])} · "
        f"{stored_steps} steps stored of {config.get('steps', '?')} · {html.escape(settings(config))}{tags}"
    )
    if run.get("error"):
        text += f"\n\n```text\n{run['error']}\n```"
    return text


def config_details(run: dict | None) -> str:
    """A run's whole config, folded (markdown)."""
    if run is None:
        return ""
    config = json.dumps(run["config"], indent=1)
    return f"<details><summary>its whole config</summary>\n\n```json\n{config}\n```\n</details>"
