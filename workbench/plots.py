"""DataFrame -> plotly Figure, shared by the app and notebooks.

The frames have the store's `steps` columns (`Store.steps(run_id)`, or the app's live history).
Every figure sets `uirevision`, so a figure refreshed with Plotly.react (a notebook's FigureWidget)
keeps the user's zoom; the app, whose gr.Plot draws each refresh on a new div, keeps it with
`workbench/ui/keep_zoom.js`.

Every per-step curve can be smoothed as W&B and TensorBoard smooth theirs (`ema`, a weight from 0 to 0.99):
the smoothed line over the raw one, drawn faint behind it under the same name. Bands (the within-group std,
a sweep's range over seeds) and held-out evaluations (a few points, each a mean over many completions) are
drawn as measured.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

SMOOTHING = 0.6  # the curves' default EMA weight: noisy GRPO steps read as a trend, the raw values stay visible
RAW_OPACITY = 0.25  # the raw curve behind a smoothed one
PANELS = {  # column -> panel title, after the reward panels
    "kl": "KL to the reference",
    "loss": "loss",
    "completion_tokens_mean": "completion length (tokens)",
    "entropy": "entropy (per token)",
    "frac_zero_std": "groups with no signal",
    "truncated_frac": "truncated completions",
}
FUNCTION, EVAL = "reward/", "eval/"  # the metric keys of a reward function's mean and of a held-out measure
NOT_EVAL_METRICS = ("step", "num_prompts", "num_generations")  # numbers of `evals` that say how, not how well


def ema(values, weight: float) -> list[float]:
    """TensorBoard's smoothing: s_t = w s_(t-1) + (1 - w) x_t, divided by 1 - w^n (n: the values seen so far)
    so that the first points are not pulled toward 0. A missing value (None, NaN) stays missing and is skipped.
    weight 0 gives the values back."""
    smoothed, last, seen = [], 0.0, 0
    for value in values:
        if value is None or value != value:
            smoothed.append(math.nan)
            continue
        last, seen = last * weight + (1 - weight) * value, seen + 1
        smoothed.append(last / (1 - weight**seen))
    return smoothed


def _curve(figure: go.Figure, x, y, name: str, color: str, smoothing: float, showlegend: bool = True, **cell) -> None:
    """A metric's line: with smoothing, the raw values faint and the smoothed line over them (both named `name`,
    told apart by `meta`); without, the raw values alone."""
    line = dict(mode="lines", name=name, line_color=color, legendgroup=name, **cell)
    if not smoothing:
        figure.add_scatter(x=x, y=y, showlegend=showlegend, **line)
        return
    raw = dict(opacity=RAW_OPACITY, meta="raw", hovertemplate="%{y:.4g} (raw)")
    figure.add_scatter(x=x, y=y, showlegend=False, **raw, **line)
    smoothed = ema(list(y), smoothing)
    figure.add_scatter(x=x, y=smoothed, showlegend=showlegend, meta="smoothed", **line)


def _smoothed(smoothing: float) -> str:
    """The legend's title: how the curves are smoothed, so that a reader knows the line is not the raw values."""
    return f"smoothed (EMA {smoothing:g}; raw faint):" if smoothing else ""


def training_curves(steps: pd.DataFrame, evals: pd.DataFrame | None = None, smoothing: float = SMOOTHING) -> go.Figure:
    """Every curve of a run, one panel each: reward with its std band, each reward function, then PANELS;
    each smoothed by `smoothing` (0: the raw values only).

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
    _reward_band(figure, steps, smoothing, row=1, col=1)
    if held_out:
        _held_out(figure, evals)
    for k, (name, values) in enumerate(_function_means(steps).items()):
        _curve(figure, steps.step, values, name, _color(1 + k), smoothing, row=1, col=2)
    for k, column in enumerate(PANELS, start=2):
        if column in steps and not steps.empty:
            cell = dict(row=k // 4 + 1, col=k % 4 + 1)
            _curve(figure, steps.step, steps[column], column, _color(k + 2), smoothing, showlegend=False, **cell)
    figure.update_xaxes(title_text="step", row=2 + held_out)
    legend = dict(orientation="h", y=-0.15 if not held_out else -0.1, title_text=_smoothed(smoothing))
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


def available_metrics(steps: pd.DataFrame, evals: pd.DataFrame | None = None) -> dict[str, str]:
    """What `compare_runs` can draw from a run's frames, {key: label}: every numeric column of `steps`, each
    reward function's mean (`reward/<name>`), each measure of the held-out evaluations (`eval/<column>`)."""
    found = {
        column: PANELS.get(column, column)
        for column in steps.columns
        if column != "step" and pd.api.types.is_numeric_dtype(steps[column]) and not steps[column].isna().all()
    }
    found |= {FUNCTION + name: f"{name} (reward function's mean)" for name in _function_means(steps)}
    if evals is not None and not evals.empty:
        for column in evals.columns:
            if column not in NOT_EVAL_METRICS and pd.api.types.is_numeric_dtype(evals[column]):
                found[EVAL + column] = f"held-out {column}"
    return found


def _series(steps: pd.DataFrame, evals: pd.DataFrame | None, key: str) -> tuple[pd.Series, pd.Series | list]:
    """A metric's steps and values in a run's frames (empty when the run has none of it)."""
    if key.startswith(EVAL):
        column = key.removeprefix(EVAL)
        if evals is None or column not in evals:
            return pd.Series(dtype=float), []
        return evals.step, evals[column]
    means = _function_means(steps) if key.startswith(FUNCTION) else {}
    if key.startswith(FUNCTION) and key.removeprefix(FUNCTION) in means:
        return steps.step, means[key.removeprefix(FUNCTION)]
    if key not in steps:
        return pd.Series(dtype=float), []
    return steps.step, steps[key]


def compare_runs(
    runs: dict[str, pd.DataFrame],
    metrics: tuple[str, ...] | list[str] = ("reward_mean", "kl"),
    smoothing: float = SMOOTHING,
    evals: dict[str, pd.DataFrame] | None = None,
    labels: dict[str, str] | None = None,
) -> go.Figure:
    """Several runs' curves on shared axes, a panel per metric (an `available_metrics` key: a `steps` column,
    `reward/<function>`, `eval/<column>` from `evals`, a run's `Store.evals` by the same key as `runs`), one
    color per run, named by `labels` (default: the keys of `runs`); per-step curves smoothed by `smoothing`."""
    metrics, evals, labels = list(metrics), evals or {}, labels or {}
    columns = len(metrics) if len(metrics) <= 3 else 2 if len(metrics) == 4 else 3
    rows = max(1, math.ceil(len(metrics) / max(columns, 1)))
    known = {
        key: label
        for run_id, steps in runs.items()
        for key, label in available_metrics(steps, evals.get(run_id)).items()
    }
    titles = [known.get(key, key) for key in metrics]
    figure = make_subplots(rows=rows, cols=max(columns, 1), subplot_titles=titles, vertical_spacing=0.3 / rows)
    for k, (run_id, steps) in enumerate(runs.items()):
        color, name, shown = _color(k), labels.get(run_id, run_id), False
        for i, key in enumerate(metrics):
            x, y = _series(steps, evals.get(run_id), key)
            if len(x) == 0:
                continue
            cell = dict(row=i // columns + 1, col=i % columns + 1)
            if key.startswith(EVAL):  # a few measured points: markers, not smoothed
                line = dict(mode="lines+markers", name=name, line_color=color, legendgroup=name, **cell)
                figure.add_scatter(x=x, y=y, showlegend=not shown, **line)
            else:
                _curve(figure, x, y, name, color, smoothing, showlegend=not shown, **cell)
            shown = True
    figure.update_xaxes(title_text="step")
    legend = dict(orientation="h", y=-0.3 / rows, title_text=_smoothed(smoothing))
    figure.update_layout(height=80 + 320 * rows, margin=dict(t=40, b=40, l=40, r=20), legend=legend)
    return figure.update_layout(uirevision="keep")


def sweep_curves(
    runs: pd.DataFrame, steps: pd.DataFrame, column: str = "reward_mean", smoothing: float = SMOOTHING
) -> go.Figure:
    """A sweep's curves overlaid: per grid point, the mean over its seeds' runs of `column` per step (smoothed
    by `smoothing`), in a band from the lowest to the highest seed. `runs` is `Store.sweep(id)`, `steps`
    `Store.sweep_steps(id)`."""
    figure = go.Figure()
    by_step = steps.pivot_table(index="step", columns="run_id", values=column) if not steps.empty else None
    for k, (point, seeds) in enumerate(runs.groupby("point", sort=False)):
        color = _color(k)
        curves = by_step[by_step.columns.intersection(seeds.run_id)] if by_step is not None else pd.DataFrame()
        if curves.empty:
            continue
        low, high, mean = curves.min(axis=1), curves.max(axis=1), curves.mean(axis=1)
        band = dict(mode="lines", line_width=0, fillcolor=_fill(color), legendgroup=point, showlegend=False)
        figure.add_scatter(x=curves.index, y=high, hoverinfo="skip", **band)
        figure.add_scatter(x=curves.index, y=low, fill="tonexty", name=f"{point} (seeds' range)", **band)
        name = f"{point} ({curves.shape[1]} seed{'s' if curves.shape[1] > 1 else ''})"
        _curve(figure, curves.index, mean, name, color, smoothing)
    figure.update_xaxes(title_text="step")
    figure.update_yaxes(title_text=column)
    title = dict(text=f"{column}: each grid point's mean over its seeds, in a band from the lowest to the highest")
    legend = dict(orientation="h", y=-0.2, title_text=_smoothed(smoothing))
    figure.update_layout(height=420, margin=dict(t=40, b=40), legend=legend, title=title)
    return figure.update_layout(uirevision="keep")


def _fill(color: str) -> str:
    """A hex color as a translucent fill."""
    red, green, blue = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},0.2)"


_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _color(k: int) -> str:
    return _COLORS[k % len(_COLORS)]


def _reward_band(figure: go.Figure, steps: pd.DataFrame, smoothing: float, **cell) -> None:
    if steps.empty:
        return
    upper, lower = steps.reward_mean + steps.reward_std, steps.reward_mean - steps.reward_std
    band = dict(mode="lines", line_width=0, fillcolor="rgba(31,119,180,0.2)", **cell)
    figure.add_scatter(x=steps.step, y=upper, showlegend=False, hoverinfo="skip", **band)
    figure.add_scatter(x=steps.step, y=lower, fill="tonexty", name="within-group std", **band)
    _curve(figure, steps.step, steps.reward_mean, "reward mean", _COLORS[0], smoothing, **cell)


def _function_means(steps: pd.DataFrame) -> dict[str, list]:
    """{reward function: its mean per step} from the steps' `reward_function_means` dicts."""
    if steps.empty or "reward_function_means" not in steps:
        return {}
    names = dict.fromkeys(name for means in steps.reward_function_means for name in means)
    return {name: [means.get(name) for means in steps.reward_function_means] for name in names}
