"""One completion token by token: each token shaded by a measure picked from SHADES (its log-prob by default),
a line saying what the shade means, its numbers on hover and in a table (`Store.token_view`), or why a
completion has none."""

from __future__ import annotations

import html
import json

from workbench.formatting import cut, nullable, number, reward_text
from workbench.store.database import Store
from workbench.store.inspection import InspectionError, completion_tokens
from workbench.ui.group_view import color, prompt_text

TOKEN_COLUMNS = ("logprob", "ref_logprob", "ratio", "kl", "entropy", "contribution")
TOKEN_NUMBER = ".4g"  # 4 significant digits: log-probs and KL terms can be tiny
# What a token's shade can show: (the picker's label, what a darker shade means). With one update per batch
# (num_iterations 1) the ratio is 1 everywhere, so the push is the completion's advantage on every token: a flat
# shade. Log-prob and entropy differ from token to token, so the view opens on log-prob.
SHADES = {
    "logprob": ("log-prob", "the darker, the less likely the policy found the token (log p further below 0)"),
    "entropy": ("entropy", "the darker, the less sure the sampler was of what to write here (its entropy)"),
    "kl": (
        "KL to the reference",
        "the darker, the further this token moved from the reference (the run's kl_estimator term, k3 by default)",
    ),
    "contribution": ("push (A x ratio)", "green pushed up by the update, red pushed down (A x ratio, 0 if clipped)"),
}
DEFAULT_SHADE = "logprob"
SHADE_CHOICES = [(label, key) for key, (label, _) in SHADES.items()]
# The darkest shade is the completion's largest value, but never below this much: a completion whose tokens all
# had p close to 1 stays pale instead of having its 0.001-nat differences drawn as black and white.
SHADE_FLOOR = {"logprob": 0.1, "entropy": 0.1, "kl": 0.001}
SHADE_RGB = "70,60,200"
TOKEN_BOX = "padding:1px 1px;margin-right:1px;border-radius:3px"  # each token apart from the next
TABLE_BOX = "max-height:340px;overflow-y:auto"  # a long completion's table scrolls: the view stays one screen
TABLE_STYLE = (
    "<style>.token-table { font-size: 85% } .token-table td, .token-table th { padding: 1px 8px !important; "
    "text-align: right } .token-table td:first-child { text-align: left }</style>"
)
# The group view's js_on_load (Gradio 6 gr.HTML): a click on a completion's card sends a `select` event with its
# index, which the Runs tab wires to open that completion here. The cards are the children of the group's grid
# (`group_view.group_html`), in sample order.
OPEN_CARD_JS = """
element.addEventListener('click', (event) => {
    const card = event.target.closest('#live-step div[style*="grid-template-columns"] > div');
    if (!card) return;
    const index = Array.prototype.indexOf.call(card.parentNode.children, card);
    trigger('select', {index: index, value: String(index), selected: true});
});
"""
OPEN_CARD_CSS = "#live-step div[style*='grid-template-columns'] > div { cursor: pointer }"


def token_view_html(
    tokens,
    run_id: str,
    step: int,
    group_id: int,
    sample_idx: int,
    shade: str = DEFAULT_SHADE,
    about: str = "",
    table_open: bool = False,
) -> str:
    """A completion's tokens, each shaded by `shade` (a key of SHADES; dashed box: the clip cut its gradient),
    with a line that says what the shade means, its numbers on hover and in the table (unfolded when
    `table_open`); `about` (HTML) follows where it is from."""
    where = f"run {html.escape(run_id)}, step {step}, group {group_id}, completion {sample_idx}{about}"
    backgrounds, legend = _shading(tokens, shade)
    spans, rows = [], []
    for t, background in zip(tokens.itertuples(), backgrounds):
        numbers = {c: getattr(t, c) for c in TOKEN_COLUMNS}
        shown = " · ".join(f"{c} {number(v, TOKEN_NUMBER)}" for c, v in numbers.items())
        shown += " · clipped" if t.clipped else ""
        style = f"background:{background};{TOKEN_BOX}" + (";outline:1px dashed #333" if t.clipped else "")
        data = " ".join(f"data-{c.replace('_', '-')}='{json.dumps(nullable(v))}'" for c, v in numbers.items())
        spans.append(
            f"<span class='token' style='{style}' title='{html.escape(shown)}' {data}>{_shown(t.token)}</span>"
        )
        cells = "".join(f"<td>{number(v, TOKEN_NUMBER)}</td>" for v in numbers.values())
        rows.append(f"<tr><td><code>{_shown(t.token)}</code></td>{cells}<td>{'yes' if t.clipped else ''}</td></tr>")
    header = "".join(f"<th>{c}</th>" for c in ("token", *TOKEN_COLUMNS, "clipped"))
    return (
        f"<div class='token-view' data-step='{step}' data-group='{group_id}' data-completion='{sample_idx}' "
        f"data-tokens='{len(tokens)}' data-shade='{shade}'><p>{where}. Hover a token for its numbers.</p>"
        f"<p class='token-legend'>{legend}</p>"
        f"<p style='line-height:2.1;font-family:monospace;font-size:115%'>{''.join(spans)}</p>"
        f"<details{' open' * table_open}><summary>every token's numbers</summary>{TABLE_STYLE}"
        f"<div style='{TABLE_BOX}'><table class='token-table'>{header}{''.join(rows)}</table></div></details></div>"
    )


def _shading(tokens, shade: str) -> tuple[list[str], str]:
    """Each token's background for `shade`, and the sentence that says what it means, with its scale."""
    if shade not in SHADES:
        raise ValueError(f"shade must be one of {', '.join(SHADES)}, not {shade!r}")
    label, meaning = SHADES[shade]
    if shade == "contribution":
        pushes = [nullable(v) or 0.0 for v in tokens.contribution]
        legend = f"Shade: <b>{label}</b>: {meaning}."
        if len(set(pushes)) == 1:
            legend += (
                f" Every token here has the same push ({pushes[0]:+.3g}): with one update per batch the ratio is 1,"
                " so each token gets the completion's advantage. Shade by log-prob or entropy to see tokens differ."
            )
        return [color(v) for v in pushes], legend
    values = [nullable(v) for v in tokens[shade]]
    sizes = [None if v is None else (-v if shade == "logprob" else v) for v in values]
    if all(size is None for size in sizes):
        why = " (beta 0: no reference pass)" if shade == "kl" else ""
        return ["transparent"] * len(sizes), f"Shade: <b>{label}</b>: this run stored none for these tokens{why}."
    scale = max(max(size for size in sizes if size is not None), SHADE_FLOOR[shade])
    darkest = -scale if shade == "logprob" else scale
    swatch = (
        f"<span style='display:inline-block;width:80px;height:0.8em;vertical-align:middle;border:1px solid #ccc;"
        f"background:linear-gradient(to right, rgba({SHADE_RGB},0), rgba({SHADE_RGB},0.8))'></span>"
    )
    legend = (
        f"Shade: <b>{label}</b>: {meaning}. White {'0' if shade != 'logprob' else 'log p = 0 (p = 1)'} "
        f"{swatch} darkest {'log p = ' if shade == 'logprob' else ''}{darkest:.3g}."
    )
    alphas = [0.0 if size is None else 0.8 * min(max(size, 0.0) / scale, 1.0) for size in sizes]
    return [f"rgba({SHADE_RGB},{alpha:.2f})" for alpha in alphas], legend


def stored_tokens_html(
    store: Store, run_id: str, step: int, group_id: int, sample_idx: int, shade: str = DEFAULT_SHADE, **shown
) -> str:
    """A stored completion's token view (with its prompt, reward and advantage; `shown`: token_view_html's
    table_open), or why there is none: `completion_tokens` names a missing step, group or completion, token
    stats turned off, a dropped group, a watched TRL run."""
    try:
        found = completion_tokens(store, run_id, step, group_id, sample_idx)
    except InspectionError as error:
        return f"<p class='token-view'>{html.escape(str(error))}</p>"
    about = (
        f": prompt <code>{html.escape(cut(prompt_text(found.prompt), 120))}</code> · reward "
        f"<b>{reward_text(found.reward)}</b> · advantage <b>{found.advantage:+.2f}</b>"
    )
    return token_view_html(found.tokens, run_id, step, group_id, sample_idx, shade, about, **shown)


def tokens_pending_html(run_id: str, step: int, group_id: int, sample_idx: int) -> str:
    """The token view of a completion whose step is still updating: its numbers come with the step's end."""
    return (
        f"<p class='token-view' data-pending='{step}'>Step {step} is updating: group {group_id}'s completion "
        f"{sample_idx} shows token by token when the step ends.</p>"
    )


def _shown(token: str) -> str:
    """A token as text: whitespace made visible, so that a space or newline token can be seen and hovered."""
    return html.escape(token).replace(" ", "&nbsp;").replace("\n", "⏎") or "∅"
