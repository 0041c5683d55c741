"""The workbench in a browser: choose or upload prompts, edit and check the reward, train, watch, query.

Each tab's module builds its layout and wires its own events; the events that join tabs (dry-run,
Start, Resume and swapping the reward take the editor and the form) are wired here. What the tabs
call is the engine's public API, and what they show is rendered by the view modules: `status` (the status
line, the health banner), `group_view` and `advantages` (a group and why its advantages are what they are),
`token_view`, `step_views` (a step's groups, before and after, reward buckets), `dry_run_view`, `task_view`.
"""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from workbench.commands import command_line, python_code
from workbench.config import ConfigError
from workbench.engine import workers
from workbench.engine.dryrun import dry_run
from workbench.engine.policy import ModelLoadError
from workbench.engine.runner import Runner, latest_resumable
from workbench.engine.sweep import grid_from_text, parse_seeds, start_sweep
from workbench.rewards.scoring import RewardError, RewardSource, validate_rewards
from workbench.rewards.tasks import Task, TaskError, save_reward
from workbench.store.database import Store
from workbench.ui import api, config_form, explore_tab, runs_tab, task_tab, train_tab
from workbench.ui.dry_run_view import dry_run_html
from workbench.ui.task_tab import REWARD_FILE
from workbench.ui.task_view import reward_error

KEEP_ZOOM_JS = (Path(__file__).parent / "keep_zoom.js").read_text()  # pass as launch(js=...)


def build_app(workspace: str) -> gr.Blocks:
    store, runner = Store(workspace), Runner(workspace)
    workers.warm_up()  # runs and dry-runs fork from a server that loads the engine now, not at the first Start
    with gr.Blocks(title="GRPO Workbench") as app:
        gr.Markdown("# GRPO Workbench")
        with gr.Tab("Task & reward"):
            data = task_tab.build(workspace)
        with gr.Tab("Train") as train_page:
            live = train_tab.build(runner, store)
        with gr.Tab("Explore"):
            explore_tab.build(store)
        with gr.Tab("Runs") as runs_page:
            runs = runs_tab.build(store)

        def dry_run_reward(text, task: Task, *form):
            try:
                report = workers.call(dry_run, config_form.to_config(form), task, RewardSource(text, REWARD_FILE))
            except RewardError as error:
                return reward_error(error), ""
            except (ConfigError, ModelLoadError) as error:
                return f"**Cannot dry-run:** {html.escape(str(error))}", ""
            return "", dry_run_html(report)

        def start_run(text, task: Task, *form):
            try:
                config = config_form.to_config(form)
                task = task.with_rewards(RewardSource(text, REWARD_FILE))
                validate_rewards(task.rewards, task.rows, config)
                runner.start(config, task)
            except RewardError as error:
                return reward_error(error), gr.skip(), gr.skip(), False
            except (ConfigError, RuntimeError) as error:
                return f"**Not started:** {html.escape(str(error))}", gr.skip(), gr.skip(), False
            reward_file = str(save_reward(workspace, task))
            return (
                f"Started with reward version `{task.rewards.version}`.",
                command_line(config, task.reference, workspace, reward_file),
                python_code(config, task.reference, workspace, reward_file),
                True,
            )

        def start_a_sweep(text, task: Task, grid_text, seeds_text, parallel, *form):
            """A sweep over the grid, each run with the form's other settings, in a background process."""
            try:
                config = config_form.to_config(form)
                grid, seeds = grid_from_text(grid_text), parse_seeds(seeds_text)
                task = task.with_rewards(RewardSource(text, REWARD_FILE))
                validate_rewards(task.rewards, task.rows, config)
                reward_file = str(save_reward(workspace, task))
                sweep_id, n, command, log = start_sweep(
                    config, task.reference, grid, seeds, workspace, int(parallel or 1), reward_file
                )
            except RewardError as error:
                return reward_error(error), gr.skip(), gr.skip()
            except ConfigError as error:
                gr.Warning(str(error))
                return f"**Sweep not started:** {html.escape(str(error))}", gr.skip(), gr.skip()
            started = f"Sweep `{sweep_id}` started: {n} runs; Refresh to follow it. Its progress: `{log}`."
            return started, command, gr.Dropdown(choices=[sweep_id, *store.sweeps().sweep_id], value=sweep_id)

        def resume_run(text):
            run_id = runner.snapshot.run_id or latest_resumable(store)
            if run_id is None:
                return "**Nothing to resume:** no stopped, paused or failed run in this workspace.", False
            try:
                runner.resume(run_id, RewardSource(text, REWARD_FILE))
            except (TaskError, ConfigError, RuntimeError) as error:
                return f"**Not resumed:** {html.escape(str(error))}", False
            return f"Resuming `{run_id}` from its last checkpoint with the editor's reward.", True

        def swap_reward(text):
            if not runner.busy or runner.task is None:
                return "**No run is training:** the edited reward is used by the next Start or Resume."
            source = RewardSource(text, REWARD_FILE)
            try:
                validate_rewards(source, runner.task.rows)
            except RewardError as error:
                return reward_error(error)
            runner.swap_rewards(source)
            return f"Reward version `{source.version}` scores the running run from its next step."

        inputs = [data.editor, data.task, *live.form]
        data.dry_run.click(dry_run_reward, inputs, [data.message, data.dry_run_result], api_name="dry_run")
        # the Train tab polls while the run is active: a Start or Resume that started one turns the timer on,
        # a refused one does not (its first tick could turn the timer off under the next Start's run)
        started = live.start.click(
            start_run, inputs, [live.message, live.command, live.code, live.started], api_name="start_run"
        )
        resumed = live.resume.click(resume_run, data.editor, [live.message, live.started], api_name="resume_run")
        for event in (started, resumed):
            event.then(live.watch, live.started, live.timer, api_visibility="private")
        train_page.select(live.open, live.shows, live.outputs, api_visibility="private")
        live.swap.click(swap_reward, data.editor, live.message, api_name="swap_reward")
        runs.sweep_start.click(
            start_a_sweep,
            [data.editor, data.task, *runs.sweep_form, *live.form],
            runs.sweep_outputs,
            api_name="start_sweep",
        )
        runs_page.select(runs.show, runs.opened, runs.outputs, api_visibility="private").then(
            runs.open, runs.open_inputs, runs.opened_outputs, api_visibility="private"
        )
        runs_page.select(runs.list_sweeps, runs.sweep_opened, runs.sweep_opened, api_visibility="private")
        api.build(runner)
    return app
