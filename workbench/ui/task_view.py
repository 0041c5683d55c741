"""What the Task & reward tab says: the prompt set and its preview, a reward that is not valid, and a valid
reward's scores on probe completions."""

from __future__ import annotations

import html

import pandas as pd

from workbench.rewards.scoring import Scores
from workbench.rewards.tasks import Task


def data_message(task: Task) -> str:
    """The prompt set in one line: its name, how many prompts, and the columns reward functions are passed."""
    columns = ", ".join(task.columns) or "none besides prompt"
    return f"**{html.escape(task.name)}**: {len(task.rows)} prompts; columns passed to rewards: {columns}"


def preview(rows: list[dict]) -> pd.DataFrame:
    """The first rows of a prompt set, chat prompts as text."""
    return pd.DataFrame(rows[:20]).map(lambda v: v if isinstance(v, (str, int, float)) else str(v))


def reward_error(error: Exception) -> str:
    """A reward problem as the user reads it: the explanation, in a code block to keep its traceback aligned."""
    text = error.failure.explain() if hasattr(error, "failure") else str(error)
    return f"**Not valid.**\n\n```text\n{text}\n```"


def probe_scores(scores: Scores, probes: list[tuple[dict, str]]) -> str:
    """A valid reward's scores on probe completions: each completion's reward and each function's value."""
    rows = "".join(
        f"<tr><td><code>{html.escape(repr(completion))}</code></td><td>{scores.rewards[i]:g}</td>"
        + "".join(f"<td>{values[i]}</td>" for values in scores.values.values())
        + "</tr>"
        for i, (_, completion) in enumerate(probes)
    )
    header = "".join(f"<th>{html.escape(name)}</th>" for name in scores.values)
    return (
        f"**Valid:** reward functions {', '.join(scores.values)}. On probe completions of the first prompt(s):"
        f"<table><tr><th>completion</th><th>reward</th>{header}</tr>{rows}</table>"
    )
