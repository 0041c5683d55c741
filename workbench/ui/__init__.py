"""The workbench in a browser: choose or upload prompts, edit and check the reward, train, watch, query.

Each tab's module builds its layout and wires its own events; the events that join tabs (dry-run,
Start, Resume and swapping the reward take the editor and the form) are wired here. What the tabs
call is the engine's public API, and what they show is rendered by the view modules: `status` (the status
line, the health banner), `group_view` and `advantages` (a group and why its advantages are what they are),
`token_view`, `step_views` (a step's groups, before and after, reward buckets), `dry_run_view`, `task_view`.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import gradio as gr

from workbench.commands import command_line, python_code
from workbench.config import Config, ConfigError
from workbench.engine import workers
from workbench.engine.classroom import Classroom
from workbench.engine.dryrun import dry_run
from workbench.engine.policy import ModelLoadError
from workbench.engine.runner import Runner, latest_resumable
from workbench.engine.sweep import grid_from_text, parse_seeds, start_sweep
from workbench.rewards.scoring import RewardError, RewardSource, validate_rewards
from workbench.rewards.tasks import Task, TaskError, as_chat, save_reward
from workbench.store.database import Store
from workbench.ui import (
    api,
    config_form,
    explore_tab,
    playground_tab,
    runs_tab,
    task_tab,
    task_view,
    teacher_tab,
    train_tab,
)
from workbench.ui.dry_run_view import dry_run_html
from workbench.ui.status import while_running
from workbench.ui.task_tab import REWARD_FILE, if_newest, take_ticket
from workbench.ui.task_view import reward_error

KEEP_ZOOM_JS = (Path(__file__).parent / "keep_zoom.js").read_text()  # pass as launch(js=...)
ACTING = ("model", "precision", "device")  # the form's fields that the page names wherever a model acts
# Sessions whose state the app keeps (Gradio keeps 10,000). Each holds the state of every component of the page,
# ~0.5 MB here, and an API call without a session_hash (a plain HTTP poller's) opens one: at Gradio's number a
# script polling once a second would grow the server by 1.8 GB an hour, up to 5 GB. A browser tab is one session.
SESSIONS = 200


def build_app(
    workspace: str, runner: Runner | None = None, classroom: Classroom | None = None, user: str | None = None
) -> gr.Blocks:
    """The workbench on `workspace`; in classroom mode, `user`'s page: their runner on the class's queue, the
    tasks the teacher published, and for a teacher the Class tab."""
    store, runner = Store(workspace), runner or Runner(workspace)
    teacher = classroom is not None and classroom.users[user].teacher
    workers.warm_up()  # runs and dry-runs fork from a server that loads the engine now, not at the first Start
    # Gradio's copies of served files (CSVs, exports) are removed after an hour, checked hourly
    with gr.Blocks(title="GRPO Workbench", delete_cache=(3600, 3600)) as app:
        app.state_session_capacity = SESSIONS  # as mounted in a classroom; launch() is given it too
        gr.Markdown(f"# GRPO Workbench{f' · {user}' if user else ''}")
        with gr.Tab("Task & reward"):
            data = task_tab.build(workspace, classroom)
        with gr.Tab("Train") as train_page:
            live = train_tab.build(runner, store)
        with gr.Tab("Explore") as explore_page:
            explore_tab.build(store, explore_page)  # its opening lists the runs and tables, and runs the query
        with gr.Tab("Runs") as runs_page:
            runs = runs_tab.build(store)
        with gr.Tab("Playground") as playground_page:
            playground_tab.build(store, playground_page)  # wires its own events: it shares nothing with other tabs
        if teacher:
            with gr.Tab("Class") as class_page:
                page = teacher_tab.build(classroom)

        form_size = len(live.form)  # the form's values come after the editor and the task, then the page's other inputs
        acting_on = [data.picker, data.task, data.editor, data.chat, *config_form.pick(live.form, *ACTING)]

        def dry_run_reward(text, task: Task, *values):
            """The dry-run's report, headed by what it ran on and when; in a box of its own, so that it never
            replaces a newer Validate's answer, and dropped when a newer dry-run began (`if_newest`)."""
            form, (latest, entry, chat) = values[:form_size], values[form_size:]
            ticket = take_ticket(latest, "dry-run")
            config = dict(zip(config_form.FIELDS, form))
            context = task_view.context_line(
                f"Dry-run at {time.strftime('%H:%M:%S')} of", data.describe(entry), task, text, chat,
                *(config[name] for name in ACTING),
            )  # fmt: skip
            try:
                sampled = as_chat(task) if chat else task
                report = workers.call(dry_run, config_form.to_config(form), sampled, RewardSource(text, REWARD_FILE))
            except RewardError as error:
                answer = f"{context}\n\n{reward_error(error)}", ""
            except (ConfigError, ModelLoadError) as error:
                answer = f"{context}\n\n**Cannot dry-run:** {html.escape(str(error))}", ""
            else:
                advice = task_view.chat_advice(task, config["model"], chat)
                answer = "", dry_run_html(report, context, advice)
            return tuple(if_newest(latest, "dry-run", ticket, part) for part in answer)

        def start_run(text, task: Task, *values):
            form, chat = values[:form_size], values[form_size]
            try:
                config = config_form.to_config(form)
                task = (as_chat(task, workspace) if chat else task).with_rewards(RewardSource(text, REWARD_FILE))
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

        def start_a_sweep(text, task: Task, grid_text, seeds_text, parallel, *values):
            """A sweep over the grid, each run with the form's other settings, in a background process."""
            form, chat = values[:form_size], values[form_size]
            try:
                config = config_form.to_config(form)
                grid, seeds = grid_from_text(grid_text), parse_seeds(seeds_text)
                task = (as_chat(task, workspace) if chat else task).with_rewards(RewardSource(text, REWARD_FILE))
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

        def show_context(entry, task: Task, text, chat, model, precision, device):
            """Where the page says what acts on what: the reward's version under the editor, the model a dry-run
            samples from, what Start trains, and the switch to chat messages where a chat model gets plain strings."""
            advice = task_view.chat_advice(task, model, chat)
            start = task_view.context_line(
                "Start trains", data.describe(entry), task, text, chat, model, precision, device
            )
            return (
                task_view.reward_line(text, task),
                task_view.sampler_line(model, precision, device, advised=bool(advice)),
                "<br>".join(filter(None, [start, advice])),
                gr.Button(visible=bool(advice)),
            )

        context = [data.version, data.sampler, live.context, live.chat_switch]
        gr.on(
            [app.load, data.editor.change, data.chat.change, train_page.select]
            + [widget.change for widget in config_form.pick(live.form, *ACTING)],
            show_context,
            acting_on,
            context,
            trigger_mode="always_last",
            show_progress="hidden",
            api_visibility="private",
        )
        for event in data.task_events:
            event.then(show_context, acting_on, context, show_progress="hidden", api_visibility="private")
        live.chat_switch.click(lambda: True, None, data.chat, queue=False, api_visibility="private")

        inputs = [data.editor, data.task, *live.form]  # the API's arguments: the editor's text, then the form's
        while_running(
            data.dry_run, "Dry-running…", dry_run_reward, [*inputs, data.latest, data.picker, data.chat],
            [data.dry_run_message, data.dry_run_result], api_name="dry_run",
        )  # fmt: skip
        # the Train tab polls while the run is active: a Start or Resume that started one turns the timer on,
        # a refused one does not (its first tick could turn the timer off under the next Start's run)
        started = while_running(
            live.start, "Starting…", start_run, [*inputs, data.chat],
            [live.message, live.command, live.code, live.started], api_name="start_run",
        )  # fmt: skip
        resumed = while_running(
            live.resume, "Resuming…", resume_run, data.editor, [live.message, live.started], api_name="resume_run"
        )
        for event in (started, resumed):
            event.then(live.watch, live.started, [live.timer, live.start], api_visibility="private")
        train_page.select(live.open, live.shows, live.outputs, api_visibility="private")
        live.swap.click(swap_reward, data.editor, live.message, api_name="swap_reward")
        runs.sweep_start.click(
            start_a_sweep,
            [data.editor, data.task, *runs.sweep_form, *live.form, data.chat],
            runs.sweep_outputs,
            api_name="start_sweep",
        )
        runs_page.select(runs.show, runs.opened, runs.outputs, api_visibility="private").then(
            runs.open, runs.open_inputs, runs.opened_outputs, api_visibility="private"
        )
        runs_page.select(runs.list_sweeps, runs.sweep_opened, runs.sweep_opened, api_visibility="private")
        api.build(runner, classroom)
        if classroom is not None:  # the teacher's published tasks: listed as the page opens, their settings applied
            app.load(lambda: gr.Dropdown(choices=data.task_names()), None, data.picker, api_visibility="private")

            def published_settings(name):
                if name not in classroom.published_tasks():
                    return [gr.skip()] * len(live.form)
                return config_form.values(Config.from_dict(classroom.published_task(name)[1]))

            data.picker.select(published_settings, data.picker, live.form, api_visibility="private")
        if teacher:
            teacher_tab.wire(page, classroom, class_page, data.task, data.editor, live.form)
    app.queue()  # Gradio's default: one call of each event at a time; in a classroom each user has an app of their own
    return app
