"""HTML and Markdown the app shows: the status line, a scored group, a dry-run, reward messages."""

from __future__ import annotations

import html

import pandas as pd

from workbench import grpo
from workbench.config import Config
from workbench.dryrun import DryRun
from workbench.events import Group
from workbench.scoring import Scores
from workbench.tasks import Task


def status(snapshot) -> str:
    """One line: state, run, step, pace, ETA and the latest reward; then why it paused or failed."""
    line = f"**{snapshot.status}**"
    if snapshot.run_id:
        line += f" · run `{snapshot.run_id}` · step {snapshot.step}/{snapshot.steps}"
    if snapshot.history:
        line += f" · {snapshot.seconds_per_step:.2f} s/step"
        if snapshot.status == "running":
            line += f" · ETA {duration(snapshot.eta)}"
        reward = snapshot.history[-1]["reward_mean"]
        line += " · no completion scored: nothing trained" if reward is None else f" · reward {reward:.3f}"
    if snapshot.error:
        line += f"\n\n```text\n{snapshot.error}\n```"
    if snapshot.status == "paused":
        line += "\n\nFix the reward in the editor, then press **Resume**: the paused step is redone."
    return line


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def group_html(group: Group | None, step: int, config: Config, scored_at: float = 0.0) -> str:
    """A scored group: the prompt, its completions side by side with each reward function's score,
    the reward and the advantage colored by sign and size, the group's mean and std, and what they mean."""
    if group is None:
        return "<div id='live-step' data-step='0'>No group yet: press Start.</div>"
    names = list(group.reward_values)
    cards = "".join(
        f"<div style='border:1px solid #ccc;border-radius:6px;padding:6px'>"
        f"<div style='background:{color(a)};padding:2px 4px'><b>#{i}</b> advantage <b>{a:+.2f}</b></div>"
        f"<pre style='white-space:pre-wrap;margin:4px 0'>{html.escape(c)}</pre>"
        f"<div>reward <b>{_value(r)}</b>"
        + "".join(f" · {html.escape(n)} {_value(group.reward_values[n][i])}" for n in names)
        + (" · <i>truncated</i>" if group.truncated[i] else "")
        + "</div></div>"
        for i, (c, r, a) in enumerate(zip(group.completions, group.rewards, group.advantages))
    )
    mean, std = group_stats(group.rewards)
    return (
        f"<div id='live-step' data-step='{step}' data-group='{group.group_id}' data-scored-at='{scored_at * 1000:.0f}'>"
        f"<p><b>step {step}, group {group.group_id}</b> · prompt "
        f"<code>{html.escape(prompt_text(group.prompt))}</code></p>"
        f"<p>group mean reward <b>{mean:.2f}</b> · std <b>{std:.2f}</b>"
        + (" · <i>left out of the update by dynamic sampling</i>" if group.dropped else "")
        + "</p>"
        f"<div style='display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:6px'>{cards}</div>"
        f"<p id='advantage-explanation'>{html.escape(explain(group, config))}</p></div>"
    )


def stored_group_html(group: Group | None, run_id: str, step: int, group_id: int, config: Config) -> str:
    """A group read back from the store (`Store.group`), or which one the run does not have."""
    if group is None:
        return f"<p>Run {html.escape(run_id)} has no step {step}, group {group_id} stored.</p>"
    return group_html(group, step, config)


def group_stats(rewards: list[float | None]) -> tuple[float, float]:
    """The mean and sample std (n - 1) of the scored rewards, by `grpo`'s own functions (the std is NaN
    when fewer than two were scored)."""
    r = grpo.reward_tensor(rewards).view(1, -1)  # (1, G)
    return r.nanmean().item(), grpo.group_std(r).item()


def explain(group: Group, config: Config) -> str:
    """The group's advantages in words, with the numbers on screen, for the run's estimator and scaling."""
    mean, std = group_stats(group.rewards)
    n = len(group.rewards)
    scored = [r for r in group.rewards if r is not None]
    group_baseline = config.advantage_estimator in grpo.GROUP_BASELINES
    if group_baseline and len(scored) < 2:
        return (
            f"{n - len(scored)} of {n} completions were scored by no reward function (None): with fewer than two "
            "rewards there is nothing to compare, so every advantage is 0 and this group teaches nothing."
        )
    if group_baseline and std == 0:
        return (
            f"All {n} completions got reward {mean:.2f}, so every advantage is 0: this group gives no learning "
            "signal. A group baseline learns only from groups whose completions differ in reward."
        )
    best = max(range(n), key=lambda i: group.advantages[i])
    worst = min(range(n), key=lambda i: group.advantages[i])
    if config.advantage_estimator == "ppo":
        intro = (
            "Each token's advantage compares the reward with the critic's value (its prediction of the reward "
            f"from the text so far), by GAE with lambda {config.gae_lambda:g}"
            + (", divided by the std over the step's tokens" if config.scale_rewards == "batch" else "")
            + ": with lambda 1, A_t = r - V_t. Shown: each completion's mean over its tokens."
        )
    else:
        intro = _intro(config, mean, std, sum(scored), len(scored))
    return (
        intro
        + _pushed(group, best, "#{i} got reward {r}, so its advantage is {a}: {what}.")
        + _pushed(group, worst, "#{i} got {r}: advantage {a}, {what}.")
        + " The KL penalty (beta) keeps the policy close to the reference while it moves."
    )


def _intro(config: Config, mean: float, std: float, total: float, scored: int) -> str:
    """The formula of A with the group's numbers, for a reward baseline and scale."""
    baseline, formula = _baseline_words(config.advantage_estimator, mean, total, scored)
    scale, divisor = {
        "group": (", divided by the group's std", f" / ({std:.2f} + 0.0001)"),
        "batch": (", divided by the std of the step's rewards (all P x G completions)", " / (batch std + 0.0001)"),
        "none": ("", ""),
    }[config.scale_rewards]
    numerator = f"({formula})" if divisor and formula != "r" else formula
    return f"Each advantage compares a completion's reward with {baseline}{scale}: A = {numerator}{divisor}."


def _baseline_words(estimator: str, mean: float, total: float, scored: int) -> tuple[str, str]:
    """What the baseline is, in words, and the formula of A with the group's numbers."""
    if estimator == "grpo":
        return f"the group mean {mean:.2f}", f"r - {mean:.2f}"
    if estimator == "rloo":
        return (
            f"the mean of the other {scored - 1} rewards of its group (leave-one-out)",
            f"r - ({total:.2f} - r) / {scored - 1}",
        )
    if estimator == "reinforce":
        return "nothing (no baseline: every completion is pushed by its own reward)", "r"
    return "the mean reward of the whole step (all P x G completions)", "r - batch mean"


def _pushed(group: Group, i: int, sentence: str) -> str:
    a = group.advantages[i]
    what = (
        "the update makes completions like it more likely"
        if a > 0
        else ("made less likely" if a < 0 else "left as likely as it was")
    )
    return " " + sentence.format(i=i, r=_value(group.rewards[i]), a=f"{a:+.2f}", what=what)


def prompt_text(prompt) -> str:
    """A prompt as one line of text; chat messages as 'role: content' turns."""
    if isinstance(prompt, str):
        return prompt
    return " / ".join(f"{m['role']}: {m['content']}" for m in prompt)


def _value(value) -> str:
    return "None" if value is None else f"{value:.2f}"


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
