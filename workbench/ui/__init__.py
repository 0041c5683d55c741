"""The workbench in a browser: choose or upload prompts, edit and check the reward, train, watch, query.

Layout first, then wiring; the functions it calls are the engine's public API, and what it shows is
rendered in `views`.
"""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr
import pandas as pd

from workbench.config import Config, ConfigError, field_docs
from workbench.dry_run import dry_run
from workbench.plots import reward_curve
from workbench.policy import ModelLoadError
from workbench.queries import NAMED_QUERIES, SQLError, named_sql, run_sql
from workbench.runner import Runner
from workbench.scoring import RewardError, RewardSource, probes, try_rewards, validate_rewards
from workbench.store import Store
from workbench.tasks import Task, TaskError, load_prompts, load_task, sample_task_names
from workbench.ui import views

FORM_FIELDS = ("steps", "group_size", "prompts_per_step", "max_new_tokens", "learning_rate", "beta")
REWARD_FILE = "reward.py"  # the name the editor's text is reported and stored under


def build_app(workspace: str) -> gr.Blocks:
    store, runner = Store(workspace), Runner(workspace)
    defaults, docs = Config(), field_docs()
    first = load_task("arithmetic")
    with gr.Blocks(title="GRPO Workbench") as app:
        gr.Markdown("# GRPO Workbench")
        task_state = gr.State(first)
        with gr.Tab("Task & reward"):
            with gr.Row():
                task = gr.Dropdown(sample_task_names(), value=first.name, label="sample task", elem_id="task")
                upload = gr.File(
                    label="or upload prompts (JSONL, CSV, Parquet, TXT)",
                    file_types=[".jsonl", ".csv", ".parquet", ".txt"],
                    elem_id="prompt-upload",
                )
            data_message = gr.Markdown(views.data_message(first), elem_id="data-message")
            rows = gr.Dataframe(views.preview(first.rows), label="prompts", max_height=240, elem_id="prompt-preview")
            editor = gr.Code(first.rewards.text, language="python", label=REWARD_FILE, elem_id="reward-editor")
            with gr.Row():
                validate = gr.Button("Validate", elem_id="validate-button")
                dry = gr.Button("Dry-run on sampled groups", elem_id="dry-run-button")
            with gr.Row():
                completion = gr.Textbox(label="try a completion for the first prompt", elem_id="try-completion")
                attempt = gr.Button("Try", elem_id="try-button")
            reward_message = gr.Markdown(elem_id="reward-message")
            dry_result = gr.HTML(elem_id="dry-run-result")
        with gr.Tab("Train"):
            model = gr.Textbox(defaults.model, label="model", info=docs["model"], elem_id="model")
            with gr.Row():
                form = [
                    gr.Number(getattr(defaults, name), label=name, info=docs[name], elem_id=name)
                    for name in FORM_FIELDS
                ]
            with gr.Row():
                start = gr.Button("Start", variant="primary", elem_id="start-button")
                stop = gr.Button("Stop", elem_id="stop-button")
            status = gr.Markdown("idle", elem_id="run-status")
            group = gr.HTML(elem_id="live-group")
            plot = gr.Plot(elem_id="reward-plot")
        with gr.Tab("Explore"):
            named = gr.Dropdown(list(NAMED_QUERIES), label="named query", elem_id="named-query")
            sql = gr.Textbox(
                "SELECT step, reward_mean, kl FROM steps ORDER BY step DESC",
                lines=4,
                label="SQL (read-only)",
                elem_id="sql-input",
            )
            run = gr.Button("Run", elem_id="sql-run")
            message = gr.Markdown(elem_id="sql-message")
            result = gr.Dataframe(elem_id="sql-result")
        timer = gr.Timer(1.0)

        def choose_task(name):
            chosen = load_task(name)
            return chosen, views.data_message(chosen), views.preview(chosen.rows), chosen.rewards.text

        def upload_prompts(path, current: Task):
            if path is None:
                return current, gr.update(), gr.update()
            try:
                prompts = load_prompts(path)
            except TaskError as error:
                return current, f"**Upload refused:** {html.escape(str(error))}", gr.update()
            uploaded = Task(Path(path).stem, str(Path(path).parent), prompts, current.rewards)
            return uploaded, views.data_message(uploaded), views.preview(prompts)

        def validate_reward(text, current: Task):
            try:
                scores = validate_rewards(RewardSource(text, REWARD_FILE), current.rows)
            except RewardError as error:
                return views.reward_error(error)
            return views.probe_scores(scores, probes(current.rows))

        def try_reward(text, typed, current: Task):
            try:
                scores = try_rewards(RewardSource(text, REWARD_FILE), typed or "", current.rows[0])
            except RewardError as error:
                return views.reward_error(error)
            values = ", ".join(f"{name} = {v[0]}" for name, v in scores.values.items())
            return f"reward **{scores.rewards[0]:g}** ({values}) for `{typed!r}` on `{current.rows[0]['prompt']!r}`"

        def dry_run_reward(text, current: Task, model_name, *values):
            try:
                config = _config(model_name, values)
                report = dry_run(config, current, RewardSource(text, REWARD_FILE))
            except RewardError as error:
                return views.reward_error(error), ""
            except (ConfigError, ModelLoadError) as error:
                return f"**Cannot dry-run:** {html.escape(str(error))}", ""
            return "", views.dry_run_html(report)

        def start_run(text, current: Task, model_name, *values):
            try:
                runner.start(_config(model_name, values), current.with_rewards(RewardSource(text, REWARD_FILE)))
            except (ConfigError, RuntimeError) as error:
                gr.Warning(str(error))

        def refresh():
            snapshot = runner.snapshot
            steps = pd.DataFrame(snapshot.history, columns=["step", "reward_mean", "reward_std"])
            return views.status(snapshot), views.group_html(snapshot.last_groups), reward_curve(steps)

        def query(text):
            try:
                outcome = run_sql(store, text)
            except SQLError as error:
                return f"**error:** {html.escape(str(error))}", None
            return outcome.message, outcome.frame

        task.change(choose_task, task, [task_state, data_message, rows, editor], api_visibility="private")
        upload.upload(upload_prompts, [upload, task_state], [task_state, data_message, rows], api_name="upload_prompts")
        validate.click(validate_reward, [editor, task_state], reward_message, api_name="validate_reward")
        attempt.click(try_reward, [editor, completion, task_state], reward_message, api_name="try_reward")
        dry.click(dry_run_reward, [editor, task_state, model, *form], [reward_message, dry_result], api_name="dry_run")
        start.click(start_run, [editor, task_state, model, *form], None, api_name="start_run")
        stop.click(runner.stop, None, None)
        timer.tick(refresh, None, [status, group, plot], show_progress="hidden", api_visibility="private")
        named.change(named_sql, named, sql)
        run.click(query, sql, [message, result])
    return app


def _config(model_name: str, values) -> Config:
    """The run's config from the form; empty or mistyped numbers name their field."""
    empty = [name for name, value in zip(FORM_FIELDS, values) if value is None]
    if empty:
        raise ConfigError(f"{', '.join(empty)} must be given")
    defaults = Config()
    numbers = {name: type(getattr(defaults, name))(value) for name, value in zip(FORM_FIELDS, values)}
    return Config.from_dict({"model": model_name, **numbers})
