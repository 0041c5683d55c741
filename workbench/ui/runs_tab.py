"""Runs: every run in the workspace with its status and config; open one to see its curves and browse
its groups, or export it as a TRL project (a zip); overlay several runs' curves; open a sweep (its table
and its curves, a band over seeds per grid point), or start one (wired in `workbench.ui`, as it takes the
reward and the Train tab's form)."""

from __future__ import annotations

import html
import json
from types import SimpleNamespace

import gradio as gr

from workbench.config import Config, ConfigError
from workbench.export import ExportError, export_trl_zip
from workbench.plots import compare_runs, sweep_curves, training_curves
from workbench.scoring import RewardError
from workbench.store import Store, StoreError
from workbench.sweep import summary as sweep_summary
from workbench.tasks import TaskError
from workbench.ui import views

COLUMNS = ["run_id", "created_at", "task", "model", "status", "last_step", "steps", "reward_mean", "settings"]


def build(store: Store) -> SimpleNamespace:
    refresh = gr.Button("Refresh", elem_id="runs-refresh")
    table = gr.Dataframe(headers=COLUMNS, max_height=300, elem_id="runs-table")
    with gr.Row():
        opened = gr.Dropdown([], label="open a run", elem_id="runs-open")
        compared = gr.Dropdown([], multiselect=True, label="overlay runs", elem_id="runs-compare")
    summary = gr.Markdown(elem_id="run-summary")
    with gr.Row():
        export = gr.Button("Export to TRL", size="sm", elem_id="export-trl")
        export_file = gr.File(label="the run as a TRL project", interactive=False, elem_id="export-trl-file")
    export_message = gr.Markdown(elem_id="export-trl-message")
    plot = gr.Plot(elem_id="run-plot")
    with gr.Row():
        step = gr.Number(1, precision=0, minimum=1, label="step", elem_id="run-step-picker")
        group_id = gr.Number(0, precision=0, minimum=0, label="group", elem_id="run-group-picker")
    group = gr.HTML(elem_id="run-group")
    overlay = gr.Plot(elem_id="compare-plot")
    gr.Markdown("### Sweeps: every combination of a grid of settings, for each seed")
    sweep_opened = gr.Dropdown([], label="open a sweep", elem_id="sweep-open")
    sweep_table = gr.Dataframe(max_height=300, elem_id="sweep-table")
    sweep_plot = gr.Plot(elem_id="sweep-plot")
    with gr.Accordion("Start a sweep with the Train tab's settings and the editor's reward", open=False):
        with gr.Row():
            sweep_grid = gr.Textbox("group_size=2,4; beta=0,0.04", label="grid: field=V1,V2; ...", elem_id="sweep-grid")
            sweep_seeds = gr.Textbox("0,1,2", label="seeds", elem_id="sweep-seeds")
            sweep_parallel = gr.Number(1, precision=0, minimum=1, label="runs at once", elem_id="sweep-parallel")
        sweep_start = gr.Button("Start the sweep", elem_id="sweep-start")
        sweep_message = gr.Markdown(elem_id="sweep-message")
        sweep_command = gr.Code(language="shell", label="the same sweep from the command line", elem_id="sweep-command")

    def list_runs():
        runs = store.runs()
        runs["settings"] = runs.config.map(_settings)
        ids = runs.run_id.tolist()
        return runs[COLUMNS], gr.Dropdown(choices=ids), gr.Dropdown(choices=ids)

    def open_run(run_id):
        if not run_id:
            return "", None, gr.skip(), gr.skip(), ""
        run = store.run(run_id)
        config = run["config"]
        steps = store.steps(run_id)
        text = (
            f"**{html.escape(run_id)}** · {run['status']} · task {html.escape(run['task'])} · model "
            f"{html.escape(run['model'])} · {len(steps)} steps stored · {_settings(config)}\n\n"
            f"<details><summary>config</summary>\n\n```json\n{json.dumps(config, indent=1)}\n```\n</details>"
        )
        if run["error"]:
            text += f"\n\n```text\n{run['error']}\n```"
        last = int(steps.step.max()) if not steps.empty else 1
        curves = training_curves(steps, store.evals(run_id))  # held-out evaluations beside the training curves
        return text, curves, last, 0, _group(run_id, last, 0, Config.from_dict(config))

    def show_group(run_id, picked_step, picked_group):
        if not run_id:
            return ""
        config = Config.from_dict(store.run(run_id)["config"])
        return _group(run_id, int(picked_step or 0), int(picked_group or 0), config)

    def _group(run_id, step, group_id, config):
        return views.stored_group_html(store.group(run_id, step, group_id), run_id, step, group_id, config)

    def export_run(run_id):
        """The opened run as a zip of its TRL project (workbench.export), and what it does not reproduce."""
        if not run_id:
            return None, "Open a run to export it."
        try:
            archive, warnings = export_trl_zip(store.workspace, run_id)
        except (ExportError, StoreError, TaskError, RewardError, ConfigError) as error:  # e.g. the task folder is gone
            return None, f"**Not exported:** {html.escape(str(error))}"
        text = f"`{archive.name}`: unzip it, then `bash launch.sh`; PARITY.md says how each setting maps to TRL's."
        return str(archive), text + "".join(f"\n\n**Warning:** {html.escape(w)}" for w in warnings)

    def overlay_runs(run_ids):
        if not run_ids:
            return None
        return compare_runs({run_id: store.steps(run_id) for run_id in run_ids})

    def list_sweeps(shown):
        ids = store.sweeps().sweep_id.tolist()
        return gr.Dropdown(choices=ids if shown in ids or not shown else [shown, *ids])

    def open_sweep(sweep_id):
        """Grid values, seeds, final reward, steps/s and peak memory per grid point, and the curves."""
        if not sweep_id:
            return None, None
        runs = store.sweep(sweep_id)
        return sweep_summary(runs).round(3), sweep_curves(runs, store.sweep_steps(sweep_id))

    refresh.click(list_runs, None, [table, opened, compared], api_name="list_runs")
    sweep_opened.change(open_sweep, sweep_opened, [sweep_table, sweep_plot], api_name="open_sweep")
    refresh.click(list_sweeps, sweep_opened, sweep_opened, api_visibility="private").then(
        open_sweep, sweep_opened, [sweep_table, sweep_plot], api_visibility="private"
    )
    opened.change(open_run, opened, [summary, plot, step, group_id, group], api_name="open_run")
    gr.on([step.input, group_id.input], show_group, [opened, step, group_id], group, api_visibility="private")
    compared.change(overlay_runs, compared, overlay, api_name="compare_runs")
    export.click(export_run, opened, [export_file, export_message], api_name="export_trl")
    return SimpleNamespace(
        list_runs=list_runs,
        outputs=[table, opened, compared],
        list_sweeps=list_sweeps,
        sweep_form=[sweep_grid, sweep_seeds, sweep_parallel],
        sweep_start=sweep_start,
        sweep_outputs=[sweep_message, sweep_command, sweep_opened],
        sweep_opened=sweep_opened,
    )


def _settings(config: dict) -> str:
    """The settings a run changed from the defaults, in one line."""
    changed = Config.from_dict(config).changed()
    return " ".join(f"{name}={value}" for name, value in changed.items()) or "defaults"
