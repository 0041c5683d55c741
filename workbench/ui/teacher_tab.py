"""Class (the teacher's page in classroom mode): every student's runs, the queue, stopping any run, a leaderboard
per task on the held-out prompts, publishing a task to every student, and letting a student train more at once.

What the tab reads and does is workbench.engine.classroom's; it refreshes as it opens, on Refresh, and every
few seconds while shown.
"""

from __future__ import annotations

import html
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from workbench.engine.classroom import Classroom
from workbench.formatting import number
from workbench.rewards.tasks import Task, TaskError
from workbench.ui import config_form

REFRESH_SECONDS = 10.0  # reading every student's store: kept rare, since each read waits for a writer


def build(classroom: Classroom) -> SimpleNamespace:
    """The layout; `wire` connects it (it needs the Task & reward tab's task and editor, and the Train form)."""
    page = SimpleNamespace()
    page.summary = gr.Markdown(elem_id="class-summary")
    with gr.Row():
        page.refresh = gr.Button("Refresh", elem_id="class-refresh", scale=0)
        page.stop_choice = gr.Dropdown(label="run to stop", elem_id="class-stop-run", scale=3, allow_custom_value=True)
        page.stop = gr.Button("Stop it", variant="stop", elem_id="class-stop", scale=0)
    page.runs = gr.Dataframe(label="every student's runs", max_height=420, elem_id="class-runs")
    with gr.Row():
        page.queue = gr.Dataframe(label="the queue", max_height=260, elem_id="class-queue")
        page.leaderboard = gr.Dataframe(label="leaderboard: held-out prompts", max_height=260, elem_id="class-board")
    with gr.Row():
        page.task_name = gr.Textbox(label="publish the current task as", placeholder="week1-arithmetic", scale=3)
        page.publish = gr.Button("Publish to every student", elem_id="class-publish", scale=1)
    with gr.Row():
        page.student = gr.Dropdown(classroom.students(), label="student", scale=2, elem_id="class-student")
        page.allowed = gr.Number(1, label="runs at once", precision=0, minimum=1, scale=1, elem_id="class-allowed")
        page.allow = gr.Button("Allow", scale=1, elem_id="class-allow")
    page.message = gr.Markdown(elem_id="class-message")
    page.timer = gr.Timer(REFRESH_SECONDS, active=False)
    return page


def wire(page: SimpleNamespace, classroom: Classroom, tab: gr.Tab, task: gr.State, editor: gr.Code, form: list):
    outputs = [page.summary, page.runs, page.queue, page.leaderboard, page.stop_choice]

    def refresh():
        runs = classroom.class_runs()
        active = runs[runs.status.isin(["queued", "starting", "running"])]
        choices = [(f"{r.student}: {r.run_id} ({r.status})", f"{r.student}/{r.run_id}") for r in active.itertuples()]
        summary = (
            f"**{len(classroom.students())} students** · {len(runs)} runs · "
            f"{(runs.status == 'running').sum()} training, {(runs.status == 'queued').sum()} waiting · "
            f"{classroom.scheduler.slots} at once on this machine"
        )
        return summary, _shown(runs), classroom.queue(), _shown(classroom.leaderboard()), gr.Dropdown(choices=choices)

    def stop(choice):
        if not choice:
            return "**Pick a run to stop.**"
        student, run_id = choice.split("/", 1)
        try:
            classroom.stop(student, run_id)
        except TaskError as error:
            return f"**Not stopped:** {html.escape(str(error))}"
        return f"Stopping {student}'s run `{run_id}` after its current step."

    def publish(name, current: Task, text, *values):
        try:
            config = config_form.to_config(values)
            folder = classroom.publish((name or "").strip(), current, text, config)
        except (TaskError, ValueError) as error:
            return f"**Not published:** {html.escape(str(error))}"
        changed = ", ".join(f"{k}={v!r}" for k, v in config.changed().items()) or "the defaults"
        return f"Published **{folder.name}** to every student (settings: {changed}); it is in their task list."

    def allow(student, runs):
        try:
            classroom.allow(student or "", int(runs or 0))
        except TaskError as error:
            return f"**Not allowed:** {html.escape(str(error))}"
        return f"{student} may now have {int(runs)} run{'s' * (int(runs) > 1)} training or waiting at once."

    tab.select(refresh, None, outputs, api_visibility="private").then(
        lambda: gr.Timer(active=True), None, page.timer, api_visibility="private"
    )
    page.refresh.click(refresh, None, outputs, api_name="class_runs")
    page.timer.tick(refresh, None, outputs, show_progress="hidden", api_visibility="private")
    page.stop.click(stop, page.stop_choice, page.message, api_name="stop_student_run").then(refresh, None, outputs)
    page.publish.click(publish, [page.task_name, task, editor, *form], page.message, api_name="publish_task")
    page.allow.click(allow, [page.student, page.allowed], page.message, api_name="allow_runs")


def _shown(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers to 3 significant digits, times to the minute, steps as 'done/all'."""
    frame = frame.copy()
    if "last_step" in frame:
        frame.insert(4, "progress", [f"{int(s or 0)}/{int(n)}" for s, n in zip(frame.last_step.fillna(0), frame.steps)])
        frame = frame.drop(columns=["last_step", "steps"])
    for column in ("reward_mean", "eval_reward_mean", "greedy_accuracy"):
        if column in frame:
            frame[column] = [number(v, ".3g") for v in frame[column]]
    if "created_at" in frame:
        frame["created_at"] = pd.to_datetime(frame.created_at).dt.strftime("%H:%M")
    return frame
