"""DataFrame -> plotly Figure, shared by the app and notebooks."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go


def reward_curve(steps: pd.DataFrame) -> go.Figure:
    """Reward mean per step with a band of the within-group std; `steps` has the store's columns."""
    figure = go.Figure()
    if not steps.empty:
        upper, lower = steps.reward_mean + steps.reward_std, steps.reward_mean - steps.reward_std
        figure.add_scatter(x=steps.step, y=upper, line_width=0, showlegend=False, hoverinfo="skip")
        figure.add_scatter(x=steps.step, y=lower, fill="tonexty", line_width=0, name="within-group std")
        figure.add_scatter(x=steps.step, y=steps.reward_mean, name="reward mean")
    figure.update_layout(
        xaxis_title="step", yaxis_title="reward", height=320, margin=dict(t=20, b=40), uirevision="keep"
    )  # keeps the user's zoom across refreshes
    return figure
