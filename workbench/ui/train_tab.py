"""Train: the config form, Start / Stop / Resume / swap the reward, the status line, the run as a
command and as code, then the live view: a group picker, the group, and the curves.

The timer re-renders only what changed since the page last drew it (a new step, another group),
so an idle page costs nothing and a zoomed plot is not redrawn under the user's cursor.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pandas as pd

from workbench.config import Config
from workbench.plots import training_curves
from workbench.runner import Runner
from workbench.store import Store
from workbench.ui import config_form, views

REFRESH_SECONDS = 0.5


def build(runner: Runner, store: Store) -> SimpleNamespace:
    form = config_form.build(Config())
    with gr.Row():
        start = gr.Button("Start", variant="primary", elem_id="start-button")
        stop = gr.Button("Stop", elem_id="stop-button")
        resume = gr.Button("Resume", elem_id="resume-button")
        swap = gr.Button("Use the edited reward from the next step", elem_id="swap-reward-button")
    status = gr.Markdown("idle", elem_id="run-status")
    message = gr.Markdown(elem_id="train-message")
    with gr.Accordion("The same run from the command line or Python", open=False):
        command = gr.Code(language="shell", label="command line", elem_id="run-command")
        code = gr.Code(language="python", label="Python", elem_id="run-code")
    with gr.Row():
        follow = gr.Checkbox(True, label="follow the latest step", elem_id="live-follow")
        step = gr.Number(0, precision=0, minimum=0, label="step", elem_id="live-step-picker")
        group_id = gr.Number(0, precision=0, minimum=0, label="group", elem_id="live-group-picker")
    group = gr.HTML(views.group_html(None, 0, Config()), elem_id="live-group")
    plot = gr.Plot(elem_id="reward-plot")
    drawn = gr.State({})  # what this page shows: {'steps': n, 'group': (run, step, group)}
    timer = gr.Timer(REFRESH_SECONDS)

    def refresh(following, picked_group, shown):
        snapshot = runner.snapshot
        shown = dict(shown)
        plot_update, group_update, step_update = gr.skip(), gr.skip(), gr.skip()
        if len(snapshot.history) != shown.get("steps") or snapshot.run_id != shown.get("run"):
            shown["steps"], shown["run"] = len(snapshot.history), snapshot.run_id
            plot_update = training_curves(pd.DataFrame(snapshot.history))
        scored = snapshot.last_groups
        if following and scored is not None:
            g = min(int(picked_group or 0), len(scored.groups) - 1)
            key = (scored.run_id, scored.step, g)
            if key != shown.get("group"):
                shown["group"] = key
                config = Config.from_dict(snapshot.config)
                group_update = views.group_html(scored.groups[g], scored.step, config, snapshot.scored_at)
                step_update = scored.step
        return views.status(snapshot), group_update, plot_update, step_update, shown

    def look_back(picked_step, picked_group, shown):
        """The picked step's group from the store; following stops until the box is ticked again."""
        snapshot = runner.snapshot
        if snapshot.run_id is None:
            return gr.skip(), False, shown
        step, g = int(picked_step or 0), int(picked_group or 0)
        config = Config.from_dict(snapshot.config)
        page = views.stored_group_html(store.group(snapshot.run_id, step, g), snapshot.run_id, step, g, config)
        return page, False, {**shown, "group": None}

    def pick_group(following, picked_step, picked_group, shown):
        if following:  # the next tick shows this group of the latest step
            return gr.skip(), True, {**shown, "group": None}
        return look_back(picked_step, picked_group, shown)

    def follow_again(following, shown):
        return {**shown, "group": None}

    timer.tick(
        refresh,
        [follow, group_id, drawn],
        [status, group, plot, step, drawn],
        show_progress="hidden",
        api_visibility="private",
    )
    step.input(look_back, [step, group_id, drawn], [group, follow, drawn])
    group_id.input(pick_group, [follow, step, group_id, drawn], [group, follow, drawn])
    follow.input(follow_again, [follow, drawn], drawn)
    stop.click(runner.stop, None, None, api_name="stop_run")
    return SimpleNamespace(
        form=form, start=start, resume=resume, swap=swap, message=message, command=command, code=code
    )
