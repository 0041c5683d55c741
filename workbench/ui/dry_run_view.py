"""The dry-run's report: the no-signal warning, each reward function's distribution, each group, and the
completions bucketed by their reward functions' values."""

from __future__ import annotations

import html

from workbench.engine.dryrun import DryRun
from workbench.store.inspection import group_buckets
from workbench.ui.step_views import buckets_html


def dry_run_html(report: DryRun, context: str = "", advice: str = "") -> str:
    """The dry-run: what it ran on (`context`, inline HTML) and advice about it, the no-signal warning, then each
    function's distribution, each group, and the completions bucketed by their reward functions' values."""
    context = f"<p class='dry-run-context'>{context}</p>" if context else ""
    advice = f"<p class='chat-advice'>{advice}</p>" if advice else ""
    warning = f"<p><b>Warning:</b> {html.escape(report.warning)}</p>" if report.warning else ""
    groups = report.group_stats().assign(prompt=lambda f: f["prompt"].map(str))
    return (
        f"<div id='dry-run-report'>{context}{advice}{warning}"
        f"<p>{len(report.groups)} groups sampled and scored in {report.seconds:.2f} s; "
        f"groups without signal: {report.frac_zero_std:.0%}</p>"
        + report.function_stats().to_html(index=False, float_format=lambda x: f"{x:.3f}")
        + groups.to_html(index=False, float_format=lambda x: f"{x:.3f}")
        + buckets_html(group_buckets(report.groups))
        + "</div>"
    )
