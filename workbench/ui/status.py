"""The Train tab's status line and the health banner of the checks that fire on a run; what a page shows while an
action runs (its button disabled, saying what it does) and where error text wraps."""

from __future__ import annotations

import html

import gradio as gr

from workbench.events import Finding
from workbench.formatting import duration, nullable


def status(snapshot) -> str:
    """One line: state, run, step, pace, ETA and the latest reward; then why it paused or failed, and after a
    restart which run Resume goes on with."""
    line = f"**{snapshot.status}**"
    if snapshot.run_id:
        line += f" · run `{snapshot.run_id}` · step {snapshot.step}/{snapshot.steps}"
    if snapshot.status == "queued" and snapshot.queue_place:
        line += f" · number {snapshot.queue_place} in the queue: it starts when a run ahead of it ends"
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


# Error text (a traceback, an install command) wraps inside its box instead of running off its right edge; as a
# hidden gr.HTML, this applies to the whole page.
WRAP_STYLE = """<style>
#run-status pre, #run-status code, #train-message pre, #train-message code, #reward-message pre,
#reward-message code, #dry-run-message pre, #dry-run-message code, #data-message code, #train-context code
{ white-space: pre-wrap !important; word-break: break-word !important; overflow-wrap: anywhere }
</style>"""


def waiting_html(snapshot) -> str:
    """The live group's place while the followed run has scored no group yet (a new or resumed run, or one that paused
    before its first): never an earlier run's group."""
    return (
        f"<div id='live-step' data-step='0' data-run='{html.escape(snapshot.run_id or '')}'>No group of run "
        f"<code>{html.escape(snapshot.run_id or '')}</code> yet: its groups show here as soon as a step scores them."
        "</div>"
    )


def while_running(button: gr.Button, doing: str, fn, inputs, outputs, **listener) -> gr.events.Dependency:
    """`button.click` running `fn`, with the button disabled and saying `doing` until `fn` has returned or failed: a
    second click cannot send the same work again, and the page shows that it works (the outputs show Gradio's
    progress too). `listener`: the arguments of `fn`'s event (api_name, ...).  -> `fn`'s event, for `.then`"""
    label = button.value
    work = button.click(
        lambda: gr.Button(doing, interactive=False), None, button, queue=False, api_visibility="private"
    ).then(fn, inputs, outputs, **listener)
    work.then(lambda: gr.Button(label, interactive=True), None, button, queue=False, api_visibility="private")
    return work
