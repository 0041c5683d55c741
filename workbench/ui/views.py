"""HTML and Markdown the app shows: the status line, the health banner, a scored group, a dry-run, reward
buckets, reward messages."""

from __future__ import annotations

import html
import json

import pandas as pd

from workbench.config import Config
from workbench.engine import grpo
from workbench.engine.dryrun import DryRun
from workbench.events import Finding, Group
from workbench.rewards.scoring import Scores
from workbench.rewards.tasks import Task
from workbench.store.database import Store
from workbench.store.inspection import InspectionError, completion_tokens, group_buckets


def status(snapshot) -> str:
    """One line: state, run, step, pace, ETA and the latest reward; then why it paused or failed, and after a
    restart which run Resume goes on with."""
    line = f"**{snapshot.status}**"
    if snapshot.run_id:
        line += f" · run `{snapshot.run_id}` · step {snapshot.step}/{snapshot.steps}"
    if snapshot.history:
        line += f" · {snapshot.seconds_per_step:.2f} s/step"
        if snapshot.status == "running":
            line += f" · ETA {duration(snapshot.eta)}"
        reward = snapshot.history[-1]["reward_mean"]
        unscored = reward is None or reward != reward  # the store's NULL reads back as NaN
        line += " · no completion scored: nothing trained" if unscored else f" · reward {reward:.3f}"
    if snapshot.error:
        line += f"\n\n```text\n{snapshot.error}\n```"
    if snapshot.status == "paused":
        line += "\n\nFix the reward in the editor, then press **Resume**: the paused step is redone."
    if snapshot.resume:
        line += f"\n\n**Resume** goes on with run `{snapshot.resume}` from its last checkpoint."
    return line


def health_html(findings: list[Finding]) -> str:
    """The banner of the health checks that fire (`workbench.store.health`): each check's name, what it saw and
    what to try, its latest finding once; nothing when none fires."""
    latest = {finding.check: finding for finding in findings}
    if not latest:
        return ""
    items = "".join(
        f"<li data-check='{html.escape(f.check)}'><b>{html.escape(f.check)}</b> (step {f.step}): "
        f"{html.escape(f.saw)}.<br><i>Try:</i> {html.escape(f.advice)}.</li>"
        for f in latest.values()
    )
    return (
        f"<div class='health-banner' data-checks='{html.escape(' '.join(latest))}' style='border:1px solid "
        "#e0a000;background:rgba(255,176,0,0.12);border-radius:6px;padding:6px 10px'>"
        f"<b>Health checks firing</b><ul style='margin:4px 0'>{items}</ul></div>"
    )


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


TOKEN_COLUMNS = ("logprob", "ref_logprob", "ratio", "kl", "entropy", "contribution")


def token_view_html(tokens, run_id: str, step: int, group_id: int, sample_idx: int) -> str:
    """A completion's tokens, each shaded by its push in the update (`Store.token_view`'s contribution: green
    up, red down; a dashed box where the clip cut its gradient), its numbers on hover and in the table."""
    where = f"run {html.escape(run_id)}, step {step}, group {group_id}, completion {sample_idx}"
    spans, rows = [], []
    for t in tokens.itertuples():
        numbers = {c: getattr(t, c) for c in TOKEN_COLUMNS}
        shown = " · ".join(f"{c} {_significant(v)}" for c, v in numbers.items()) + (" · clipped" if t.clipped else "")
        style = f"background:{color(t.contribution)}" + (";outline:1px dashed #333" if t.clipped else "")
        data = " ".join(f"data-{c.replace('_', '-')}='{json.dumps(nullable(v))}'" for c, v in numbers.items())
        spans.append(
            f"<span class='token' style='{style}' title='{html.escape(shown)}' {data}>{_shown(t.token)}</span>"
        )
        cells = "".join(f"<td>{_significant(v)}</td>" for v in numbers.values())
        rows.append(f"<tr><td><code>{_shown(t.token)}</code></td>{cells}<td>{'yes' if t.clipped else ''}</td></tr>")
    header = "".join(f"<th>{c}</th>" for c in ("token", *TOKEN_COLUMNS, "clipped"))
    return (
        f"<div class='token-view' data-step='{step}' data-group='{group_id}' data-completion='{sample_idx}' "
        f"data-tokens='{len(tokens)}'><p>{where}: each token shaded by its push, "
        "A x ratio where the clip left the gradient (hover for its numbers)</p>"
        f"<p style='line-height:1.9'>{''.join(spans)}</p>"
        f"<details><summary>every token's numbers</summary><table>{header}{''.join(rows)}</table></details></div>"
    )


def stored_tokens_html(store: Store, run_id: str, step: int, group_id: int, sample_idx: int) -> str:
    """A stored completion's token view, or why there is none: `completion_tokens` names a missing step,
    group or completion, token stats turned off, a dropped group, a watched TRL run."""
    try:
        found = completion_tokens(store, run_id, step, group_id, sample_idx)
    except InspectionError as error:
        return f"<p class='token-view'>{html.escape(str(error))}</p>"
    return token_view_html(found.tokens, run_id, step, group_id, sample_idx)


def tokens_pending_html(run_id: str, step: int, group_id: int, sample_idx: int) -> str:
    """The token view of a completion whose step is still updating: its numbers come with the step's end."""
    return (
        f"<p class='token-view' data-pending='{step}'>Step {step} is updating: group {group_id}'s completion "
        f"{sample_idx} shows token by token when the step ends.</p>"
    )


def _shown(token: str) -> str:
    """A token as text: whitespace made visible, so that a space or newline token can be seen and hovered."""
    return html.escape(token).replace(" ", "&nbsp;").replace("\n", "⏎") or "∅"


def _significant(value) -> str:
    """A per-token number to 4 significant digits (log-probs and KL terms can be tiny); '-' when there is none."""
    return "-" if value is None or value != value else f"{value:.4g}"


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


CELL = "padding:2px 6px;border:1px solid #ddd;text-align:right"  # a table cell of the step view and buckets


def dry_run_html(report: DryRun) -> str:
    """The dry-run: the no-signal warning first, then each function's distribution, each group, and the
    completions bucketed by their reward functions' values."""
    warning = f"<p><b>Warning:</b> {html.escape(report.warning)}</p>" if report.warning else ""
    groups = report.group_stats().assign(prompt=lambda f: f["prompt"].map(str))
    return (
        f"<div id='dry-run-report'>{warning}"
        f"<p>{len(report.groups)} groups sampled and scored in {report.seconds:.2f} s; "
        f"groups without signal: {report.frac_zero_std:.0%}</p>"
        + report.function_stats().to_html(index=False, float_format=lambda x: f"{x:.3f}")
        + groups.to_html(index=False, float_format=lambda x: f"{x:.3f}")
        + buckets_html(group_buckets(report.groups))
        + "</div>"
    )


def buckets_html(buckets: pd.DataFrame) -> str:
    """Reward buckets (`inspection.reward_buckets` or `group_buckets`): each function's value, the count and
    share of completions, their mean reward, and a few of them."""
    names = list(buckets.columns[: buckets.columns.get_loc("count")])
    total = int(buckets["count"].sum())
    header = (
        "".join(f"<th style='{CELL}'>{html.escape(name)}</th>" for name in names)
        + "".join(f"<th style='{CELL}'>{name}</th>" for name in ("count", "share", "reward mean"))
        + f"<th style='{CELL};text-align:left'>examples</th>"
    )
    rows = "".join(
        f"<tr class='bucket' data-values='{json.dumps([nullable(row[n]) for n in names])}' data-count='{row['count']}'>"
        + "".join(f"<td style='{CELL}'>{reward_text(row[n])}</td>" for n in names)
        + f"<td style='{CELL}'>{row['count']}</td><td style='{CELL}'>{row['share']:.1%}</td>"
        f"<td style='{CELL}'>{number(row['reward_mean'])}</td><td style='padding:2px 6px;border:1px solid #ddd'>"
        + "".join(f"<code style='display:block'>{html.escape(cut(repr(c), 160))}</code>" for c in row["examples"])
        + "</td></tr>"
        for _, row in buckets.iterrows()
    )
    return (
        f"<div class='reward-buckets' data-buckets='{len(buckets)}' data-completions='{total}'>"
        f"<p>{total} completions in {len(buckets)} buckets of their reward functions' values "
        f"({', '.join(map(html.escape, names)) or 'no function logged'}), the most common first.</p>"
        f"<table style='border-collapse:collapse;font-size:90%'><thead><tr>{header}</tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def nullable(value) -> float | None:
    """A value read from the store or a DataFrame: NaN (the store's NULL) as None."""
    return None if value is None or value != value else float(value)


def reward_text(value) -> str:
    """A reward or a function's value as the group view writes it: None when not scored."""
    return _value(nullable(value))


def number(value) -> str:
    """A statistic (a mean, a std): '-' when there is none."""
    return "-" if value is None or value != value else f"{value:.2f}"


def cut(text: str, width: int) -> str:
    """The text, cut to `width` characters with '...' when longer."""
    return text if len(text) <= width else text[: width - 3] + "..."


def preview(rows: list[dict]) -> pd.DataFrame:
    """The first rows of a prompt set, chat prompts as text."""
    return pd.DataFrame(rows[:20]).map(lambda v: v if isinstance(v, (str, int, float)) else str(v))


def data_message(task: Task) -> str:
    columns = ", ".join(task.columns) or "none besides prompt"
    return f"**{html.escape(task.name)}**: {len(task.rows)} prompts; columns passed to rewards: {columns}"
