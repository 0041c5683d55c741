"""HTML and Markdown the app shows: the status line, a scored group, a dry-run, reward messages."""

from __future__ import annotations

import html

import pandas as pd

from workbench.dry_run import DryRun
from workbench.scoring import Scores
from workbench.tasks import Task


def status(snapshot) -> str:
    line = f"**{snapshot.status}**"
    if snapshot.run_id:
        line += f" · run `{snapshot.run_id}` · step {snapshot.step}/{snapshot.steps}"
    if snapshot.history:
        m = snapshot.history[-1]
        line += f" · reward {m['reward_mean']:.3f} · {m['seconds']:.2f} s/step"
    if snapshot.error:
        line += f"\n\n{snapshot.error}"
    return line


def group_html(scored) -> str:
    """The first group of the latest step: completions, rewards and advantages colored by sign and size."""
    if scored is None:
        return "<div id='live-step' data-step='0'>No group yet: press Start.</div>"
    group = scored.groups[0]
    mean = sum(group.rewards) / len(group.rewards)
    rows = "".join(
        f"<tr><td><code>{html.escape(c)}</code></td><td>{r:.2f}</td>"
        f"<td style='background:{color(a)}'>{a:+.2f}</td></tr>"
        for c, r, a in zip(group.completions, group.rewards, group.advantages)
    )
    return (
        f"<div id='live-step' data-step='{scored.step}'><b>step {scored.step}, prompt</b> "
        f"<code>{html.escape(str(group.prompt))}</code> · group mean reward {mean:.2f}"
        f"<table><tr><th>completion</th><th>reward</th><th>advantage</th></tr>{rows}</table></div>"
    )


def color(advantage: float) -> str:
    alpha = min(abs(advantage) / 2, 1.0)
    return f"rgba(0,160,0,{alpha:.2f})" if advantage > 0 else f"rgba(210,0,0,{alpha:.2f})"


def reward_error(error: Exception) -> str:
    """A reward problem as the user reads it: the explanation, in a code block to keep its traceback aligned."""
    text = error.failure.explain() if hasattr(error, "failure") else str(error)
    return f"**Not valid.**\n\n```text\n{text}\n```"


def probe_scores(scores: Scores, probes: list[tuple[dict, str]]) -> str:
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


def dry_run_html(report: DryRun) -> str:
    """The dry-run: the no-signal warning first, then each function's distribution and each group."""
    warning = f"<p><b>Warning:</b> {html.escape(report.warning)}</p>" if report.warning else ""
    groups = report.group_stats().assign(prompt=lambda f: f["prompt"].map(str))
    return (
        f"<div id='dry-run-report'>{warning}"
        f"<p>{len(report.groups)} groups sampled and scored in {report.seconds:.2f} s; "
        f"groups without signal: {report.frac_zero_std:.0%}</p>"
        + report.function_stats().to_html(index=False, float_format=lambda x: f"{x:.3f}")
        + groups.to_html(index=False, float_format=lambda x: f"{x:.3f}")
        + "</div>"
    )


def preview(rows: list[dict]) -> pd.DataFrame:
    """The first rows of a prompt set, chat prompts as text."""
    return pd.DataFrame(rows[:20]).map(lambda v: v if isinstance(v, (str, int, float)) else str(v))


def data_message(task: Task) -> str:
    columns = ", ".join(task.columns) or "none besides prompt"
    return f"**{html.escape(task.name)}**: {len(task.rows)} prompts; columns passed to rewards: {columns}"
