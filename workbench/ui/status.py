"""The Train tab's status line and the health banner of the checks that fire on a run."""

from __future__ import annotations

import html

from workbench.events import Finding
from workbench.formatting import duration, nullable


def status(snapshot) -> str:
    """One line: state, run, step, pace, ETA and the latest reward; then why it paused or failed, and after a
    restart which run Resume goes on with."""
    line = f"**{snapshot.status}**"
    if snapshot.run_id:
        line += f" · run `{snapshot.run_id}` · step {snapshot.step}/{snapshot.steps}"
    if snapshot.history:
        line += f" · {snapshot.seconds_per_step:.2f} s/step"
        threads = nullable(snapshot.history[-1].get("threads"))  # the step's torch threads (engine.threads)
        line += f" on {threads:.0f} thread{'s' * (threads > 1)}" if threads else ""
        if snapshot.status == "running":
            line += f" · ETA {duration(snapshot.eta)}"
        reward = nullable(snapshot.history[-1]["reward_mean"])  # None when no completion was scored
        line += " · no completion scored: nothing trained" if reward is None else f" · reward {reward:.3f}"
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
