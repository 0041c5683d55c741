"""The workbench in a browser: pick a task, set the knobs, train, watch each group live, query the store.

Layout first, then wiring; the functions it calls are the engine's public API.
"""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from workbench.config import Config, ConfigError, field_docs
from workbench.plots import reward_curve
from workbench.queries import NAMED_QUERIES, SQLError, named_sql, run_sql
from workbench.runner import Runner
from workbench.store import Store
from workbench.tasks import TaskError, load_task, sample_task_names

FORM_FIELDS = ("steps", "group_size", "prompts_per_step", "max_new_tokens", "learning_rate", "beta")


def build_app(workspace: str) -> gr.Blocks:
    store, runner = Store(workspace), Runner(workspace)
    defaults, docs = Config(), field_docs()
    with gr.Blocks(title="GRPO Workbench") as app:
        gr.Markdown("# GRPO Workbench")
        with gr.Tab("Train"):
            with gr.Row():
                task = gr.Dropdown(sample_task_names(), value="arithmetic", label="task", elem_id="task")
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

        def start_run(task_name, model_name, *values):
            try:
                empty = [name for name, value in zip(FORM_FIELDS, values) if value is None]
                if empty:
                    raise ConfigError(f"{', '.join(empty)} must be given")
                numbers = {name: type(getattr(defaults, name))(value) for name, value in zip(FORM_FIELDS, values)}
                config = Config.from_dict({"model": model_name, **numbers})
                runner.start(config, load_task(task_name))
            except (ConfigError, TaskError, RuntimeError) as error:
                gr.Warning(str(error))

        def refresh():
            snapshot = runner.snapshot
            steps = pd.DataFrame(snapshot.history, columns=["step", "reward_mean", "reward_std"])
            return _status(snapshot), _group_html(snapshot.last_groups), reward_curve(steps)

        def query(text):
            try:
                outcome = run_sql(store, text)
            except SQLError as error:
                return f"**error:** {html.escape(str(error))}", None
            return outcome.message, outcome.frame

        start.click(start_run, [task, model, *form], None)
        stop.click(runner.stop, None, None)
        timer.tick(refresh, None, [status, group, plot], show_progress="hidden", api_visibility="private")
        named.change(named_sql, named, sql)
        run.click(query, sql, [message, result])
    return app


def _status(snapshot) -> str:
    line = f"**{snapshot.status}**"
    if snapshot.run_id:
        line += f" · run `{snapshot.run_id}` · step {snapshot.step}/{snapshot.steps}"
    if snapshot.history:
        m = snapshot.history[-1]
        line += f" · reward {m['reward_mean']:.3f} · {m['seconds']:.2f} s/step"
    if snapshot.error:
        line += f"\n\n{snapshot.error}"
    return line


def _group_html(scored) -> str:
    """The first group of the latest step: completions, rewards and advantages colored by sign and size."""
    if scored is None:
        return "<div id='live-step' data-step='0'>No group yet: press Start.</div>"
    group = scored.groups[0]
    mean = sum(group.rewards) / len(group.rewards)
    rows = "".join(
        f"<tr><td><code>{html.escape(c)}</code></td><td>{r:.2f}</td>"
        f"<td style='background:{_color(a)}'>{a:+.2f}</td></tr>"
        for c, r, a in zip(group.completions, group.rewards, group.advantages)
    )
    return (
        f"<div id='live-step' data-step='{scored.step}'><b>step {scored.step}, prompt</b> "
        f"<code>{html.escape(str(group.prompt))}</code> · group mean reward {mean:.2f}"
        f"<table><tr><th>completion</th><th>reward</th><th>advantage</th></tr>{rows}</table></div>"
    )


def _color(advantage: float) -> str:
    alpha = min(abs(advantage) / 2, 1.0)
    return f"rgba(0,160,0,{alpha:.2f})" if advantage > 0 else f"rgba(210,0,0,{alpha:.2f})"
