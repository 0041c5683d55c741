"""One completion token by token: each token shaded by its push in the update, its numbers on hover and in a
table (`Store.token_view`), or why a completion has none."""

from __future__ import annotations

import html
import json

from workbench.formatting import nullable, number
from workbench.store.database import Store
from workbench.store.inspection import InspectionError, completion_tokens
from workbench.ui.group_view import color

TOKEN_COLUMNS = ("logprob", "ref_logprob", "ratio", "kl", "entropy", "contribution")
TOKEN_NUMBER = ".4g"  # 4 significant digits: log-probs and KL terms can be tiny


def token_view_html(tokens, run_id: str, step: int, group_id: int, sample_idx: int) -> str:
    """A completion's tokens, each shaded by its push in the update (`Store.token_view`'s contribution: green
    up, red down; a dashed box where the clip cut its gradient), its numbers on hover and in the table."""
    where = f"run {html.escape(run_id)}, step {step}, group {group_id}, completion {sample_idx}"
    spans, rows = [], []
    for t in tokens.itertuples():
        numbers = {c: getattr(t, c) for c in TOKEN_COLUMNS}
        shown = " · ".join(f"{c} {number(v, TOKEN_NUMBER)}" for c, v in numbers.items())
        shown += " · clipped" if t.clipped else ""
        style = f"background:{color(t.contribution)}" + (";outline:1px dashed #333" if t.clipped else "")
        data = " ".join(f"data-{c.replace('_', '-')}='{json.dumps(nullable(v))}'" for c, v in numbers.items())
        spans.append(
            f"<span class='token' style='{style}' title='{html.escape(shown)}' {data}>{_shown(t.token)}</span>"
        )
        cells = "".join(f"<td>{number(v, TOKEN_NUMBER)}</td>" for v in numbers.values())
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
