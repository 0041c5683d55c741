"""What the Task & reward tab says: the prompt set and its preview, a reward that is not valid, and a valid
reward's scores on probe completions; and what a dry-run or Start acts on (task, reward version, model, precision,
prompt format), said wherever they act."""

from __future__ import annotations

import html

import pandas as pd

from workbench.engine.hardware import cpu_has_bf16
from workbench.engine.hub import has_chat_template
from workbench.rewards.scoring import RewardSource, Scores
from workbench.rewards.tasks import Task


def data_message(task: Task) -> str:
    """The prompt set in one line: its name, how many prompts, and the columns reward functions are passed."""
    columns = ", ".join(task.columns) or "none besides prompt"
    return f"**{html.escape(task.name)}**: {len(task.rows)} prompts; columns passed to rewards: {columns}"


def preview(rows: list[dict]) -> pd.DataFrame:
    """The first rows of a prompt set, chat prompts as text."""
    return pd.DataFrame(rows[:20]).map(lambda v: v if isinstance(v, (str, int, float)) else str(v))


def reward_error(error: Exception) -> str:
    """A reward problem as the user reads it: the explanation, in a code block to keep its traceback aligned."""
    text = error.failure.explain() if hasattr(error, "failure") else str(error)
    return f"**Not valid.**\n\n```text\n{text}\n```"


def probe_scores(scores: Scores, probes: list[tuple[dict, str]]) -> str:
    """A valid reward's scores on probe completions: each completion's reward and each function's value."""
    rows = "".join(
        f"<tr><td><code>{html.escape(repr(completion))}</code></td><td>{scores.rewards[i]:g}</td>"
        + "".join(f"<td>{values[i]}</td>" for values in scores.values.values())
        + "</tr>"
        for i, (_, completion) in enumerate(probes)
    )
    header = "".join(f"<th>{html.escape(name)}</th>" for name in scores.values)
    return (
        f"**Valid:** reward functions {', '.join(scores.values)}. On probe completions of the first prompt(s):"
        f"<table><tr><th>completion</th><th>reward</th>{header}</tr>{rows}</table>"
    )


# The lines below are inline HTML: the Markdown boxes of both tabs and the dry-run's HTML report show them alike.


def edited(text: str, task: Task) -> bool:
    """Whether the editor's text is not the task's own reward; the editor (gr.Code) drops a file's final newline."""
    return text.rstrip("\n") != task.rewards.text.rstrip("\n")


def reward_line(text: str, task: Task) -> str:
    """The editor's reward version (what Start stores), and whether it is the task's own reward or an edit of it."""
    version = f"reward version <code>{RewardSource(text).version}</code>"
    name = html.escape(task.name)
    return f"{version} (<b>edited</b>: not {name}'s own)" if edited(text, task) else f"{version} ({name}'s own)"


def model_line(model: str, precision: str, device: str) -> str:
    """The model and precision that sample and train: 'auto' said as what it gives here, without touching CUDA (the
    app forks its workers: a CUDA context in the server would break theirs)."""
    if precision == "auto":
        cpu = "bf16" if cpu_has_bf16() else "fp32"
        precision = f"auto ({cpu} on this CPU)" if device == "cpu" else f"auto (bf16 on a GPU, {cpu} on this CPU)"
    return f"model <b>{html.escape(model)}</b>, precision {precision}"


def sampler_line(model: str, precision: str, device: str, advised: bool) -> str:
    """What a dry-run samples from, set on the Train tab; and, when `advised`, the switch to chat messages."""
    line = f"Dry-run samples from {model_line(model, precision, device)} (the Train tab's settings)."
    if advised:
        line += "<br>Plain-string prompts to a chat model: tick <i>send prompts as chat messages</i> above."
    return line


def prompt_format(task: Task, chat: bool) -> str:
    """How the prompts reach the model."""
    if not any(isinstance(row["prompt"], str) for row in task.rows):
        return "chat messages"
    return "plain strings sent as chat messages" if chat else "plain strings"


def chat_advice(task: Task, model: str, chat: bool) -> str:
    """Why to send plain-string prompts as chat messages, when they go as plain strings to a chat model other than the
    tiny one (which was taught on plain strings); else nothing."""
    if prompt_format(task, chat) != "plain strings" or model == "tiny" or not has_chat_template(model):
        return ""
    message = html.escape('[{"role": "user", "content": prompt}]')
    return (
        f"<b>Plain-string prompts to a chat model:</b> {html.escape(model)} has a chat template, which is applied only "
        "to chat prompts (lists of messages), as TRL does: a plain string reaches the model without it, and an "
        "instruct model answers it as raw text (it rambles). Send the prompts as chat messages: each one becomes "
        f"<code>{message}</code>, and each completion arrives at the reward as messages too "
        '(<code>completion[0]["content"]</code>, as TRL passes them).'
    )


def context_line(lead: str, label: str, task: Task, text: str, chat: bool, model: str, precision: str, device: str):
    """What an action acts on, after `lead` ("Start trains"): the task (`label`, inline HTML: its kind and name; its
    size and prompt format), the reward version, the model and the precision."""
    return (
        f"{lead} {label} ({len(task.rows)} prompts, {prompt_format(task, chat)}) with "
        f"{reward_line(text, task)} on {model_line(model, precision, device)}."
    )
