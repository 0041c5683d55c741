"""HTML of what `workbench.store.inspection` reads: a step's groups (a row each, a click opens one), one prompt's
completions before and after, and the reward buckets (the Runs tab's and the dry-run's). Advantages are colored
as in the group view."""

from __future__ import annotations

import html
import json

import pandas as pd

from workbench.formatting import cut, nullable, number, reward_text
from workbench.store.database import Store, stored_prompt
from workbench.store.inspection import BeforeAfter, InspectionError, step_groups
from workbench.ui.group_view import color, prompt_text

SORT_CHOICES = [  # (label, inspection.SORTS key) for the sort picker
    ("group", "group"),
    ("reward spread (max - min)", "spread"),
    ("reward std", "std"),
    ("mean reward", "mean"),
]
# A step view's js_on_load (Gradio 6 gr.HTML): a click on a group's row sends a `select` event with its
# group id, which the tab wires to open that group; one listener on the component, so re-renders keep it.
SELECT_ROW_JS = """
element.addEventListener('click', (event) => {
    const row = event.target.closest('tr[data-group]');
    if (row) trigger('select', {index: Number(row.dataset.group), value: row.dataset.group, selected: true});
});
"""
CELL = "padding:2px 6px;border:1px solid #ddd;text-align:right"  # a table cell of the step view and buckets
NO_RECURRING_PROMPT = "<p>No prompt of this run was sampled at two steps or more yet.</p>"
PROMPT_CELL = (
    "padding:2px 6px;border:1px solid #ddd;max-width:340px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap"
)


def step_groups_html(groups: pd.DataFrame, step: int, sort_by: str) -> str:
    """A step's groups (`inspection.step_groups` or `groups_table`), a row each: the prompt, the reward mean,
    std and spread, then every completion's reward over its advantage, colored by the advantage."""
    size = max(len(rewards) for rewards in groups.rewards)
    label = dict((key, text) for text, key in SORT_CHOICES)[sort_by]
    rows = "".join(_group_row(row) for row in groups.itertuples(index=False))
    return (
        f"<div class='step-groups' data-step='{step}' data-groups='{len(groups)}' data-sort='{sort_by}'>"
        f"<p><b>step {step}</b>: {len(groups)} groups of {size} completions, sorted by {label}. "
        "Each cell is a completion's reward over its advantage. Click a row to open its group.</p>"
        "<style>.step-groups tr.dropped { opacity: 0.55 }</style>"
        "<table style='border-collapse:collapse;font-size:90%'><thead><tr>"
        + f"<th style='{CELL}'>group</th><th style='{CELL};text-align:left'>prompt</th>"
        + "".join(f"<th style='{CELL}'>{name}</th>" for name in ("mean", "std", "spread"))
        + f"<th style='{CELL};text-align:left' colspan='{size}'>completions: reward / advantage</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def stored_step_groups_html(store: Store, run_id: str, step: int, sort_by: str) -> str:
    """A stored step's groups (`inspection.step_groups`), or in their place why there are none."""
    try:
        return step_groups_html(step_groups(store, run_id, step, sort_by), step, sort_by)
    except InspectionError as error:
        return problem(error)


def _group_row(row) -> str:
    prompt = html.escape(prompt_text(row.prompt))
    cells = "".join(
        f"<td class='completion-cell' style='{CELL};background:{color(a)}' title='#{i}: reward {reward_text(r)}, "
        f"advantage {a:+.2f}'>{reward_text(r)}<br><small>{a:+.2f}</small></td>"
        for i, (r, a) in enumerate(zip(row.rewards, row.advantages))
    )
    dropped = " title='left out of the update by dynamic sampling' class='dropped'" if row.dropped else ""
    return (
        f"<tr data-group='{row.group_id}' data-rewards='{json.dumps(row.rewards)}' "
        f"data-advantages='{json.dumps(row.advantages)}' style='cursor:pointer'{dropped}>"
        f"<td style='{CELL}'>{row.group_id}</td><td style='{PROMPT_CELL}' title='{prompt}'><code>{prompt}</code></td>"
        f"<td style='{CELL}'>{number(row.mean)}</td><td style='{CELL}'>{number(row.std)}</td>"
        f"<td style='{CELL}'>{number(row.spread)}</td>{cells}</tr>"
    )


def before_after_html(pair: BeforeAfter) -> str:
    """One prompt's completions at two steps, side by side: each completion's reward, each reward function's
    value and its advantage, and each side's mean reward."""
    sides = "".join(
        _side(frame, step, "first" if step == pair.steps[0] else "latest" if step == pair.steps[-1] else "")
        for frame, step in ((pair.before, pair.first_step), (pair.after, pair.last_step))
    )
    steps = ", ".join(map(str, pair.steps))
    return (
        f"<div class='before-after' data-before='{pair.first_step}' data-after='{pair.last_step}'>"
        f"<p>prompt <code>{html.escape(prompt_text(pair.prompt))}</code>, sampled at steps {steps}</p>"
        f"<div style='display:grid;grid-template-columns:1fr 1fr;gap:12px'>{sides}</div></div>"
    )


def _side(frame: pd.DataFrame, step: int, which: str) -> str:
    names = [c for c in frame.columns if c not in ("group_id", "sample_idx", "completion", "reward", "advantage")]
    cards = "".join(_card(row, names) for _, row in frame.iterrows())
    when = f" (the {which} time it was sampled)" if which else ""
    return (
        f"<div class='before-after-side' data-step='{step}'><p><b>step {step}</b>{when} · mean reward "
        f"<b>{number(frame.reward.mean())}</b></p>"
        f"<div style='display:flex;flex-direction:column;gap:4px'>{cards}</div></div>"
    )


def _card(row: pd.Series, names: list[str]) -> str:
    """A completion as the group view shows one: its advantage colored, its text, its reward and values."""
    reward, advantage = reward_text(row["reward"]), row["advantage"]
    values = "".join(f" · {html.escape(name)} {reward_text(row[name])}" for name in names)
    return (
        f"<div class='before-after-completion' data-reward='{reward}' data-advantage='{advantage:.4f}' "
        "style='border:1px solid #ccc;border-radius:6px;padding:4px'>"
        f"<div style='background:{color(advantage)};padding:2px 4px'>group {row['group_id']} "
        f"#{row['sample_idx']} · advantage <b>{advantage:+.2f}</b></div>"
        f"<pre style='white-space:pre-wrap;margin:4px 0'>{html.escape(row['completion'])}</pre>"
        f"<div>reward <b>{reward}</b>{values}</div></div>"
    )


def prompt_choices(prompts: pd.DataFrame) -> list[tuple[str, str]]:
    """The recurring prompts (`inspection.recurring_prompts`) as dropdown choices: the text, and its steps."""
    return [
        (f"{cut(prompt_text(stored_prompt(row.prompt)), 70)} (steps {', '.join(map(str, row.steps))})", row.prompt)
        for row in prompts.itertuples(index=False)
    ]


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


def problem(error: Exception) -> str:
    """Why a view cannot be drawn (`inspection.InspectionError`), in its place."""
    return f"<p class='inspection-problem'>{html.escape(str(error))}</p>"
