"""Task & reward: a sample task or uploaded prompts, with a preview; the reward in a code editor,
validated, tried on a typed completion, dry-run on sampled groups (wired in `workbench.ui`)."""

from __future__ import annotations

import html
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from workbench.rewards.scoring import RewardError, RewardSource, probes, try_rewards, validate_rewards
from workbench.rewards.tasks import Task, TaskError, keep_upload, load_task, sample_task_names
from workbench.ui import task_view

REWARD_FILE = "reward.py"  # the name the editor's text is reported and stored under


def build(workspace: str) -> SimpleNamespace:
    first = load_task("arithmetic")
    task_state = gr.State(first)
    with gr.Row():
        task = gr.Dropdown(sample_task_names(), value=first.name, label="sample task", elem_id="task")
        upload = gr.File(
            label="or upload prompts (JSONL, CSV, Parquet, TXT)",
            file_types=[".jsonl", ".csv", ".parquet", ".txt"],
            elem_id="prompt-upload",
        )
    data_message = gr.Markdown(task_view.data_message(first), elem_id="data-message")
    rows = gr.Dataframe(task_view.preview(first.rows), label="prompts", max_height=240, elem_id="prompt-preview")
    editor = gr.Code(first.rewards.text, language="python", label=REWARD_FILE, elem_id="reward-editor")
    with gr.Row():
        validate = gr.Button("Validate", elem_id="validate-button")
        dry_run = gr.Button("Dry-run on sampled groups", elem_id="dry-run-button")
    with gr.Row():
        completion = gr.Textbox(label="try a completion for the first prompt", elem_id="try-completion")
        attempt = gr.Button("Try", elem_id="try-button")
    reward_message = gr.Markdown(elem_id="reward-message")
    dry_run_result = gr.HTML(elem_id="dry-run-result")

    def choose_task(name):
        chosen = load_task(name)
        return chosen, task_view.data_message(chosen), task_view.preview(chosen.rows), chosen.rewards.text

    def upload_prompts(path, current: Task):
        """The uploaded prompts, or why they are refused; the upload box is emptied for the next file."""
        if path is None:
            return current, gr.skip(), gr.skip(), None
        try:
            uploaded = keep_upload(workspace, Path(path), current.rewards)
        except TaskError as error:
            return current, f"**Upload refused:** {html.escape(str(error))}", gr.skip(), None
        return uploaded, task_view.data_message(uploaded), task_view.preview(uploaded.rows), None

    def validate_reward(text, current: Task):
        try:
            scores = validate_rewards(RewardSource(text, REWARD_FILE), current.rows)
        except RewardError as error:
            return task_view.reward_error(error)
        return task_view.probe_scores(scores, probes(current.rows))

    def try_reward(text, typed, current: Task):
        try:
            scores = try_rewards(RewardSource(text, REWARD_FILE), typed or "", current.rows[0])
        except RewardError as error:
            return task_view.reward_error(error)
        values = ", ".join(f"{name} = {v[0]}" for name, v in scores.values.items())
        return f"reward **{scores.rewards[0]:g}** ({values}) for `{typed!r}` on `{current.rows[0]['prompt']!r}`"

    task.change(choose_task, task, [task_state, data_message, rows, editor], api_visibility="private")
    upload.upload(
        upload_prompts, [upload, task_state], [task_state, data_message, rows, upload], api_name="upload_prompts"
    )
    validate.click(validate_reward, [editor, task_state], reward_message, api_name="validate_reward")
    attempt.click(try_reward, [editor, completion, task_state], reward_message, api_name="try_reward")
    return SimpleNamespace(
        task=task_state, editor=editor, dry_run=dry_run, message=reward_message, dry_run_result=dry_run_result
    )
