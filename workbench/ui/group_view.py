"""A scored group as the app shows it: the prompt, its completions side by side with each reward function's
value, the reward and the advantage colored by sign and size, the group's mean and std, and the explanation of
its advantages (`advantages`). The step view and the token view color advantages the same way (`color`)."""

from __future__ import annotations

import html

from workbench.config import Config
from workbench.events import Group
from workbench.formatting import reward_text
from workbench.ui.advantages import explain, group_stats


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
        f"<div>reward <b>{reward_text(r)}</b>"
        + "".join(f" · {html.escape(n)} {reward_text(group.reward_values[n][i])}" for n in names)
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


def prompt_text(prompt) -> str:
    """A prompt as one line of text; chat messages as 'role: content' turns."""
    if isinstance(prompt, str):
        return prompt
    return " / ".join(f"{m['role']}: {m['content']}" for m in prompt)


def color(advantage: float) -> str:
    """The background of an advantage (or a token's push): green up, red down, stronger up to |A| = 2."""
    alpha = min(abs(advantage) / 2, 1.0)
    return f"rgba(0,160,0,{alpha:.2f})" if advantage > 0 else f"rgba(210,0,0,{alpha:.2f})"
