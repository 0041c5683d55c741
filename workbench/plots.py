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


def training_curves(steps: pd.DataFrame, evals: pd.DataFrame | None = None) -> go.Figure:
    """Every curve of a run, one panel each: reward with its std band, each reward function, then PANELS.

    With a run's held-out evaluations (`Store.evals(run_id)`), their reward is drawn beside the
    training reward, and a third row shows how often they are right (greedy accuracy, pass@1, pass@k)."""
    held_out = evals is not None and not evals.empty
    titles = ["reward mean ± within-group std", "each reward function's mean", *PANELS.values()]
    figure = make_subplots(
        rows=2 + held_out,
        cols=4,
        subplot_titles=titles + ["held-out prompts: share right"] * held_out,
        specs=[[{}] * 4] * 2 + [[{"colspan": 2}, None, None, None]] * held_out,
        horizontal_spacing=0.06,
        vertical_spacing=0.16 if not held_out else 0.1,
    )
    _reward_band(figure, steps, row=1, col=1)
    if held_out:
        _held_out(figure, evals)
    for name, values in _function_means(steps).items():
        figure.add_scatter(x=steps.step, y=values, name=name, mode="lines", row=1, col=2)
    for k, column in enumerate(PANELS, start=2):
        if column in steps and not steps.empty:
            cell = dict(row=k // 4 + 1, col=k % 4 + 1)
            figure.add_scatter(x=steps.step, y=steps[column], name=column, mode="lines", showlegend=False, **cell)
    figure.update_xaxes(title_text="step", row=2 + held_out)
    legend = dict(orientation="h", y=-0.15 if not held_out else -0.1)
    figure.update_layout(height=520 if not held_out else 760, margin=dict(t=40, b=40, l=40, r=20), legend=legend)
    return figure.update_layout(uirevision="keep")


def _held_out(figure: go.Figure, evals: pd.DataFrame) -> None:
    """Held-out reward (sampled and greedy) on the training reward's panel; greedy accuracy and pass@k below."""
    k = int(evals.num_generations.iloc[-1])
    reward = dict(mode="lines+markers", line_color=_COLORS[1], row=1, col=1)
    figure.add_scatter(x=evals.step, y=evals.reward_mean, name="held-out reward mean", **reward)
    figure.add_scatter(x=evals.step, y=evals.greedy_reward_mean, name="held-out greedy", line_dash="dot", **reward)
    right = {"greedy accuracy": "greedy_accuracy", "pass@1": "pass_at_1", f"pass@{k}": "pass_at_k"}
    for color, (name, column) in zip(_COLORS[2:], right.items()):
        line = dict(mode="lines+markers", line_color=color, row=3, col=1)
        figure.add_scatter(x=evals.step, y=evals[column], name=name, **line)
    figure.update_yaxes(range=[-0.02, 1.02], row=3, col=1)


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


def sweep_curves(runs: pd.DataFrame, steps: pd.DataFrame, column: str = "reward_mean") -> go.Figure:
    """A sweep's curves overlaid: per grid point, the mean over its seeds' runs of `column` per step, in a
    band from the lowest to the highest seed. `runs` is `Store.sweep(id)`, `steps` `Store.sweep_steps(id)`."""
    figure = go.Figure()
    by_step = steps.pivot_table(index="step", columns="run_id", values=column) if not steps.empty else None
    for k, (point, seeds) in enumerate(runs.groupby("point", sort=False)):
        color = _COLORS[k % len(_COLORS)]
        curves = by_step[by_step.columns.intersection(seeds.run_id)] if by_step is not None else pd.DataFrame()
        if curves.empty:
            continue
        low, high, mean = curves.min(axis=1), curves.max(axis=1), curves.mean(axis=1)
        band = dict(mode="lines", line_width=0, fillcolor=_fill(color), legendgroup=point, showlegend=False)
        figure.add_scatter(x=curves.index, y=high, hoverinfo="skip", **band)
        figure.add_scatter(x=curves.index, y=low, fill="tonexty", name=f"{point} (seeds' range)", **band)
        name = f"{point} ({curves.shape[1]} seed{'s' if curves.shape[1] > 1 else ''})"
        figure.add_scatter(x=curves.index, y=mean, mode="lines", name=name, line_color=color, legendgroup=point)
    figure.update_xaxes(title_text="step")
    figure.update_yaxes(title_text=f"{column}: mean over seeds, band from lowest to highest")
    figure.update_layout(height=420, margin=dict(t=30, b=40), legend=dict(orientation="h", y=-0.2))
    return figure.update_layout(uirevision="keep")


def _fill(color: str) -> str:
    """A hex color as a translucent fill."""
    red, green, blue = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},0.2)"


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
