"""Train: the config form, what Start trains (task, reward version, model, precision: drawn by `workbench.ui`), Start /
Stop / Resume / swap the reward, the status line, the health banner, the run as a command and as code, then the live
view: a group picker, the group, the curves, the step's groups (a row each; a click opens one), and one of the shown
group's completions token by token.

The page polls the runner only while its run is starting or running: Start and Resume turn the timer on,
and the tick that sees the run end draws its final state and turns it off, so that an idle page sends
no requests (an open Train tab used to make 40 requests in 10 s with no run). Gradio 6's Timer skips
its ticks while the page is hidden (`document.visibilityState`, gradio/templates/frontend/assets/timer-*.js),
so a tab in the background does not poll either. Opening the tab draws the runner's run, or after a
restart the newest stored run (`Runner.shown`). Each draw sends only what changed since the page last
drew it (a new step, another group, a new health finding), so a zoomed plot is not redrawn under the
user's cursor. A step's groups show as soon as they are scored; their tokens (log-probs, ratio, clip,
KL) come from the store once the step's update has written them. The live view follows the runner's run only: a new
or resumed run clears the group of the one before until its own first groups are scored, and Start is drawn plain
(secondary) while a run is active.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pandas as pd

from workbench.config import Config
from workbench.engine.runner import Runner, Snapshot
from workbench.plots import training_curves
from workbench.store.database import Store
from workbench.store.inspection import groups_table
from workbench.ui import config_form, step_views
from workbench.ui.group_view import group_html, stored_group_html
from workbench.ui.status import WRAP_STYLE, health_html, status, waiting_html
from workbench.ui.token_view import stored_tokens_html, token_view_html, tokens_pending_html

REFRESH_SECONDS = 0.5


def build(runner: Runner, store: Store) -> SimpleNamespace:
    """The tab's layout, its own events wired; what `workbench.ui` wires across tabs comes back."""
    page = _layout()
    live = LiveView(runner, store)
    shows = [page.follow, page.group_id, page.completion, page.sort, page.drawn]
    outputs = [page.status, page.health, page.group, page.plot, page.step, page.step_view, page.tokens]
    outputs += [page.drawn, page.timer, page.start]
    _wire(page, live, shows, outputs)
    return SimpleNamespace(
        form=page.form,
        start=page.start,
        resume=page.resume,
        swap=page.swap,
        context=page.context,
        chat_switch=page.chat_switch,
        message=page.message,
        command=page.command,
        code=page.code,
        timer=page.timer,
        started=page.started,
        watch=live.watch,
        open=live.open_page,
        shows=shows,
        outputs=outputs,
    )


def _layout() -> SimpleNamespace:
    """The form and the run's buttons, the status and health, the run as code, then the live view."""
    form = config_form.build(config_form.first_config())  # the app's first run: tiny's preset
    gr.HTML(WRAP_STYLE, visible="hidden")  # display: none; its style applies to the page
    context = gr.Markdown(elem_id="train-context")  # what Start trains, said where it acts
    chat_switch = gr.Button("Send prompts as chat messages", visible=False, size="sm", elem_id="chat-switch")
    with gr.Row():
        start = gr.Button("Start", variant="primary", elem_id="start-button")
        stop = gr.Button("Stop", elem_id="stop-button")
        resume = gr.Button("Resume", elem_id="resume-button")
        swap = gr.Button("Use the edited reward from the next step", elem_id="swap-reward-button")
    status = gr.Markdown("idle", elem_id="run-status")
    health = gr.HTML(elem_id="run-health")
    message = gr.Markdown(elem_id="train-message")
    with gr.Accordion("The same run from the command line or Python", open=False):
        command = gr.Code(language="shell", label="command line", elem_id="run-command")
        code = gr.Code(language="python", label="Python", elem_id="run-code")
    with gr.Row():
        follow = gr.Checkbox(True, label="follow the latest step", elem_id="live-follow")
        step = gr.Number(0, precision=0, minimum=0, label="step", elem_id="live-step-picker")
        group_id = gr.Number(0, precision=0, minimum=0, label="group", elem_id="live-group-picker")
    group = gr.HTML(group_html(None, 0, Config()), elem_id="live-group")
    plot = gr.Plot(elem_id="reward-plot")
    with gr.Accordion("The step's groups: click a row to open it above", open=True):
        sort = gr.Radio(step_views.SORT_CHOICES, value="group", label="sort by", elem_id="live-step-groups-sort")
        step_view = gr.HTML(elem_id="live-step-groups", js_on_load=step_views.SELECT_ROW_JS)
    # last on the page: its height changes as each step's tokens arrive, and nothing below it should move
    with gr.Accordion("One completion of the shown group, token by token", open=True):
        completion = gr.Number(0, precision=0, minimum=0, label="completion", elem_id="live-token-completion")
        tokens = gr.HTML(elem_id="live-token-view")
    # what this page shows: run, steps, health, group (run, step, group), groups (run, step), tokens (run, step,
    # group, completion), tokens_pending (the same, while its step updates), following
    drawn = gr.State({})
    timer = gr.Timer(REFRESH_SECONDS, active=False)
    started = gr.State(False)  # whether the last Start or Resume started a run
    return SimpleNamespace(**locals())  # every component above, by its name


def _wire(page: SimpleNamespace, live: LiveView, shows: list, outputs: list) -> None:
    """The tab's own events: the timer's tick, the pickers, a click on a step's row, the sort, follow, Stop."""
    page.timer.tick(live.refresh, shows, outputs, show_progress="hidden", api_visibility="private")
    page.step.input(
        live.look_back,
        [page.step, page.group_id, page.completion, page.sort, page.drawn],
        [page.group, page.step_view, page.tokens, page.follow, page.drawn],
    )
    picked = [page.group, page.step, page.step_view, page.tokens, page.drawn, page.follow]
    gr.on(
        [page.group_id.input, page.completion.input],
        live.pick_group,
        [page.follow, page.step, page.group_id, page.completion, page.sort, page.drawn],
        picked,
    )
    page.step_view.select(
        live.open_row, [page.follow, page.step, page.completion, page.sort, page.drawn], [page.group_id, *picked]
    )
    page.sort.input(live.resort, [page.follow, page.step, page.sort, page.drawn], page.step_view)
    page.follow.input(live.latest_group, shows, [page.group, page.step, page.step_view, page.tokens, page.drawn])
    page.stop.click(live.runner.stop, None, None, api_name="stop_run")


class LiveView:
    """What the tab's events do: draw the runner's run as it goes, look back at a stored step, pick a group or a
    completion, sort the step's groups. What the page shows is in its `drawn` state, passed in and returned."""

    def __init__(self, runner: Runner, store: Store):
        self.runner, self.store = runner, store

    def draw(self, snapshot: Snapshot, following, picked_group, picked_completion, sort_by, shown):
        """The status line, and the curves, health banner, group, step, step view and token view that changed
        since `shown`."""
        line = status(snapshot)  # first: the status drawn is the one the caller's timer decision saw
        shown = dict(shown)
        plot_update, health_update, group_update, step_update = gr.skip(), gr.skip(), gr.skip(), gr.skip()
        groups_update, tokens_update = gr.skip(), gr.skip()
        if (snapshot.run_id, len(snapshot.history)) != (shown.get("run"), shown.get("steps")):
            shown["run"], shown["steps"] = snapshot.run_id, len(snapshot.history)
            plot_update = training_curves(pd.DataFrame(snapshot.history))
        if (snapshot.run_id, len(snapshot.health)) != (shown.get("health_run"), shown.get("health")):
            shown["health_run"], shown["health"] = snapshot.run_id, len(snapshot.health)
            health_update = health_html(snapshot.health)
        scored = snapshot.last_groups
        # `shown` is the session's state as the server holds it now, the checkbox as the page sent it: a tick
        # sent before a look-back but run after it must not draw the latest step over the step looked back at
        if following and shown.get("following", True) and scored is None and shown.get("group") is not None:
            # the run followed now (a new or resumed one) has scored no group yet: what is drawn is an earlier run's
            shown.update(group=None, groups=None, tokens=None, tokens_pending=None)
            group_update, groups_update, tokens_update = waiting_html(snapshot), "", ""
        if following and shown.get("following", True) and scored is not None:
            g = min(int(picked_group or 0), len(scored.groups) - 1)
            key = (scored.run_id, scored.step, g)
            if key != shown.get("group"):
                shown["group"] = key
                config = Config.from_dict(snapshot.config)
                group_update = group_html(scored.groups[g], scored.step, config, snapshot.scored_at)
                step_update = scored.step
            if (scored.run_id, scored.step) != shown.get("groups"):
                shown["groups"] = (scored.run_id, scored.step)
                groups_update = step_views.step_groups_html(groups_table(scored.groups, sort_by), scored.step, sort_by)
            tokens_update = self.live_tokens(snapshot, g, picked_completion, shown)
        updates = health_update, group_update, plot_update, step_update, groups_update, tokens_update
        return line, *updates, shown

    def live_tokens(self, snapshot: Snapshot, g: int, picked_completion, shown: dict):
        """The live group's picked completion token by token, once its step's update has stored it: until
        then a note, and the store is read again at each tick. `shown` records what was drawn."""
        scored = snapshot.last_groups
        group = scored.groups[g]
        k = min(int(picked_completion or 0), len(group.completions) - 1)
        key = (scored.run_id, scored.step, g, k)
        if key == shown.get("tokens"):
            return gr.skip()
        # read before the store: once the run is over its steps are stored (a finished or stopped run's status
        # changes after its writer closed; a paused or failed one's last step was written while the next sampled)
        coming = snapshot.active and not group.dropped and snapshot.config.get("log_token_stats", True)
        frame = self.store.token_view(*key)
        if frame.empty and coming:
            noted, shown["tokens_pending"] = shown.get("tokens_pending") == key, key
            return gr.skip() if noted else tokens_pending_html(*key)
        shown["tokens"], shown["tokens_pending"] = key, None
        return stored_tokens_html(self.store, *key) if frame.empty else token_view_html(frame, *key)

    def still_active(self, active_before: bool) -> bool:
        """Whether to poll after a draw that began with the run `active_before` (read first: a run that ends
        meanwhile is drawn in its final state). The runner is read again: a Start handled during the draw
        turns the timer on, and this answer, arriving later, must not turn it off under the new run (the page
        then said "idle" for the whole run)."""
        return active_before or self.runner.snapshot.active

    def open_page(self, following, picked_group, picked_completion, sort_by, shown):
        """The tab as it opens: everything drawn afresh; the timer on while the runner's run is active."""
        active = self.runner.snapshot.active
        *page, shown = self.draw(self.runner.shown(), following, picked_group, picked_completion, sort_by, {})
        start = self.start_look(shown)
        return *page, shown, gr.Timer(active=self.still_active(active)), start

    def refresh(self, following, picked_group, picked_completion, sort_by, shown):
        """A tick: what changed; the tick that sees the run over draws its final state and stops the timer."""
        active = self.runner.snapshot.active
        *page, shown = self.draw(self.runner.shown(), following, picked_group, picked_completion, sort_by, shown)
        start = self.start_look(shown)
        return *page, shown, gr.skip() if self.still_active(active) else gr.Timer(active=False), start

    def start_look(self, shown: dict):
        """Start, plain while a run is active (a second Start is refused: one run trains at a time), primary when
        none is; recorded in `shown`, and sent only when it changes."""
        variant = "secondary" if self.runner.snapshot.active else "primary"
        if shown.get("start") == variant:
            return gr.skip()
        shown["start"] = variant
        return gr.Button(variant=variant)

    def watch(self, started: bool):
        """After Start or Resume: poll if they started a run (the first tick stops it again if the run is over
        already), and Start's look."""
        variant = "secondary" if self.runner.snapshot.active else "primary"
        return gr.Timer(active=True) if started else gr.skip(), gr.Button(variant=variant)

    def look_back(self, picked_step, picked_group, picked_completion, sort_by, shown):
        """The picked step's group, its tokens and the step's groups from the store; following stops until the
        box is ticked again."""
        run_id = shown.get("run")
        if run_id is None:
            return gr.skip(), gr.skip(), gr.skip(), False, shown
        step, g = int(picked_step or 0), int(picked_group or 0)
        config = Config.from_dict(self.store.run(run_id)["config"])
        page = stored_group_html(self.store.group(run_id, step, g), run_id, step, g, config)
        unfollowed = dict(group=None, groups=None, tokens=None, tokens_pending=None, following=False)
        tokens_page = stored_tokens_html(self.store, run_id, step, g, int(picked_completion or 0))
        return (
            page,
            step_views.stored_step_groups_html(self.store, run_id, step, sort_by),
            tokens_page,
            False,
            {**shown, **unfollowed},
        )

    def latest_group(self, following, picked_group, picked_completion, sort_by, shown):
        """The picked group of the latest step, its tokens and the step's groups, now: no tick comes while no
        run is active."""
        drawn_now = ("group", "groups", "tokens", "tokens_pending")
        unshown = {**shown, **dict.fromkeys(drawn_now), "following": following}
        *_, group_update, _, step_update, groups_update, tokens_update, now = self.draw(
            self.runner.shown(), following, picked_group, picked_completion, sort_by, unshown
        )
        now_shown = {**shown, **{key: now.get(key) for key in drawn_now}, "following": following}
        return group_update, step_update, groups_update, tokens_update, now_shown

    def pick_group(self, following, picked_step, picked_group, picked_completion, sort_by, shown):
        """A group or completion picked by number, or a group by a click on its row: of the latest step, or
        of the step looked back at."""
        if following:
            return *self.latest_group(True, picked_group, picked_completion, sort_by, shown), True
        page, groups_page, tokens_page, following, shown = self.look_back(
            picked_step, picked_group, picked_completion, sort_by, shown
        )
        return page, gr.skip(), groups_page, tokens_page, shown, following

    def open_row(self, following, picked_step, picked_completion, sort_by, shown, row: gr.SelectData):
        return row.index, *self.pick_group(following, picked_step, row.index, picked_completion, sort_by, shown)

    def resort(self, following, picked_step, sort_by, shown):
        """The step view sorted again: the latest step's groups, or those of the step looked back at."""
        scored = self.runner.shown().last_groups
        if following and scored is not None:
            return step_views.step_groups_html(groups_table(scored.groups, sort_by), scored.step, sort_by)
        return (
            step_views.stored_step_groups_html(self.store, shown["run"], int(picked_step or 0), sort_by)
            if shown.get("run")
            else gr.skip()
        )
