"""DataFrame -> plotly Figure, shared by the app and notebooks.

The frames have the store's `steps` columns (`Store.steps(run_id)`, or the app's live history).
Every figure sets `uirevision`, so a figure refreshed with Plotly.react (a notebook's FigureWidget)
keeps the user's zoom; the app, whose gr.Plot draws each refresh on a new div, keeps it with
`workbench/ui/keep_zoom.js`.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PANELS = {  # column -> panel title, after the reward panels
    "kl": "KL to the reference",
    "loss": "loss",
    "completion_tokens_mean": "completion length (tokens)",
    "entropy": "entropy (per token)",
    "frac_zero_std": "groups with no signal",
    "truncated_frac": "truncated completions",
}


def training_curves(steps: pd.DataFrame) -> go.Figure:
    """Every curve of a run, one panel each: reward with its std band, each reward function, then PANELS."""
    titles = ["reward mean ± within-group std", "each reward function's mean", *PANELS.values()]
    figure = make_subplots(rows=2, cols=4, subplot_titles=titles, horizontal_spacing=0.06, vertical_spacing=0.16)
    _reward_band(figure, steps, row=1, col=1)
    for name, values in _function_means(steps).items():
        figure.add_scatter(x=steps.step, y=values, name=name, mode="lines", row=1, col=2)
    for k, column in enumerate(PANELS, start=2):
        if column in steps and not steps.empty:
            cell = dict(row=k // 4 + 1, col=k % 4 + 1)
            figure.add_scatter(x=steps.step, y=steps[column], name=column, mode="lines", showlegend=False, **cell)
    figure.update_xaxes(title_text="step", row=2)
    figure.update_layout(height=520, margin=dict(t=40, b=40, l=40, r=20), legend=dict(orientation="h", y=-0.15))
    return figure.update_layout(uirevision="keep")


def compare_runs(runs: dict[str, pd.DataFrame]) -> go.Figure:
    """Several runs' reward mean and KL on shared axes, one color per run."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=["reward mean", "KL to the reference"])
    for k, (run_id, steps) in enumerate(runs.items()):
        color = _COLORS[k % len(_COLORS)]
        line = dict(mode="lines", name=run_id, line_color=color)
        figure.add_scatter(x=steps.step, y=steps.reward_mean, row=1, col=1, **line)
        figure.add_scatter(x=steps.step, y=steps.kl, showlegend=False, row=1, col=2, **line)
    figure.update_xaxes(title_text="step")
    figure.update_layout(height=360, margin=dict(t=40, b=40), legend=dict(orientation="h", y=-0.25))
    return figure.update_layout(uirevision="keep")


_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _reward_band(figure: go.Figure, steps: pd.DataFrame, **cell) -> None:
    if steps.empty:
        return
    upper, lower = steps.reward_mean + steps.reward_std, steps.reward_mean - steps.reward_std
    band = dict(mode="lines", line_width=0, fillcolor="rgba(31,119,180,0.2)", **cell)
    figure.add_scatter(x=steps.step, y=upper, showlegend=False, hoverinfo="skip", **band)
    figure.add_scatter(x=steps.step, y=lower, fill="tonexty", name="within-group std", **band)
    figure.add_scatter(
        x=steps.step, y=steps.reward_mean, mode="lines", name="reward mean", line_color=_COLORS[0], **cell
    )


def _function_means(steps: pd.DataFrame) -> dict[str, list]:
    """{reward function: its mean per step} from the steps' `reward_function_means` dicts."""
    if steps.empty or "reward_function_means" not in steps:
        return {}
    names = dict.fromkeys(name for means in steps.reward_function_means for name in means)
    return {name: [means.get(name) for means in steps.reward_function_means] for name in names}
