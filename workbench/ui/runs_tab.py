"""Runs: every run in the workspace with its status and config; open one to see its curves, the health
checks that fire on it, a step's groups (a row each; a click opens one), one prompt before and after, and
the reward buckets (`workbench.store.inspection`), or export it as a TRL project (a zip); overlay several runs'
curves; open a sweep (its table and its curves, a band over seeds per grid point), or start one (wired in
`workbench.ui`, as it takes the reward and the Train tab's form).

The tab opens on the run it showed before, else the newest, with its latest step's groups and the first
of them: never on blank panels while the table lists runs."""

from __future__ import annotations

import html
import json
from types import SimpleNamespace

import gradio as gr

from workbench.config import Config, ConfigError
from workbench.engine.sweep import summary as sweep_summary
from workbench.integrations.export import ExportError, export_trl_zip
from workbench.plots import compare_runs, sweep_curves, training_curves
from workbench.rewards.scoring import RewardError
from workbench.rewards.tasks import TaskError
from workbench.store.database import Store, StoreError
from workbench.store.health import examine
from workbench.store.inspection import (
    InspectionError,
    before_after,
    parse_steps,
    recurring_prompts,
    reward_buckets,
)
from workbench.ui import step_views
from workbench.ui.group_view import stored_group_html
from workbench.ui.status import health_html
from workbench.ui.token_view import stored_tokens_html

COLUMNS = ["run_id", "created_at", "task", "model", "status", "last_step", "steps", "reward_mean", "settings"]


def build(store: Store) -> SimpleNamespace:
    """The tab's layout, its own events wired; what `workbench.ui` wires across tabs comes back."""
    page = _layout()
    view = RunsView(store)
    # what opening a run inspects: the step view, the recurring prompts, before and after, the buckets
    inspected = [page.step_view, page.prompt, page.before, page.after, page.pair, page.bucket_steps, page.buckets]
    _wire_runs(page, view)
    _wire_inspection(page, view, inspected)
    drawn = [page.summary, page.plot, page.step, page.group_id, page.group, page.health]  # by open_run, run_health
    return SimpleNamespace(
        show=view.show,
        open=view.open_with_health,
        opened=page.opened,
        open_inputs=[page.opened, page.sort, page.examples],
        outputs=[page.table, page.opened, page.compared],
        opened_outputs=[*drawn, *inspected, page.tokens],
        list_sweeps=view.list_sweeps,
        sweep_form=[page.sweep_grid, page.sweep_seeds, page.sweep_parallel],
        sweep_start=page.sweep_start,
        sweep_outputs=[page.sweep_message, page.sweep_command, page.sweep_opened],
        sweep_opened=page.sweep_opened,
    )


def _layout() -> SimpleNamespace:
    """The runs and the opened run, what inspects it, the overlay of several runs, then sweeps: every component
    by its name."""
    run = _run_section()
    inspection = _inspection_section()
    overlay = gr.Plot(elem_id="compare-plot")
    sweep = _sweep_section()
    return SimpleNamespace(**vars(run), **vars(inspection), overlay=overlay, **vars(sweep))


def _run_section() -> SimpleNamespace:
    """The runs table, the run to open and those to overlay, the opened run's summary, health, export, curves."""
    refresh = gr.Button("Refresh", elem_id="runs-refresh")
    table = gr.Dataframe(headers=COLUMNS, max_height=300, elem_id="runs-table")
    with gr.Row():
        opened = gr.Dropdown([], label="open a run", elem_id="runs-open")
        compared = gr.Dropdown([], multiselect=True, label="overlay runs", elem_id="runs-compare")
    summary = gr.Markdown(elem_id="run-summary")
    health = gr.HTML(elem_id="runs-health")
    with gr.Row():
        export = gr.Button("Export to TRL", size="sm", elem_id="export-trl")
        export_file = gr.File(label="the run as a TRL project", interactive=False, elem_id="export-trl-file")
    export_message = gr.Markdown(elem_id="export-trl-message")
    plot = gr.Plot(elem_id="run-plot")
    return SimpleNamespace(**locals())


def _inspection_section() -> SimpleNamespace:
    """A step's groups, a group, a completion token by token, one prompt before and after, reward buckets."""
    with gr.Row():
        step = gr.Number(1, precision=0, minimum=1, label="step", elem_id="run-step-picker")
        group_id = gr.Number(0, precision=0, minimum=0, label="group", elem_id="run-group-picker")
        sort = gr.Radio(step_views.SORT_CHOICES, value="group", label="sort the groups by", elem_id="step-groups-sort")
    step_view = gr.HTML(elem_id="step-groups", js_on_load=step_views.SELECT_ROW_JS)
    group = gr.HTML(elem_id="run-group")
    completion = gr.Number(
        0, precision=0, minimum=0, label="completion of the group, token by token", elem_id="token-completion"
    )
    tokens = gr.HTML(elem_id="token-view")
    gr.Markdown("### Before and after: one prompt's completions at two steps")
    with gr.Row():
        prompt = gr.Dropdown([], label="a prompt sampled at two steps or more", scale=3, elem_id="before-after-prompt")
        before = gr.Dropdown([], label="before (step)", elem_id="before-step")
        after = gr.Dropdown([], label="after (step)", elem_id="after-step")
    pair = gr.HTML(elem_id="before-after")
    gr.Markdown("### Reward buckets: the completions by their reward functions' values")
    with gr.Row():
        bucket_steps = gr.Textbox(label="steps A-B (empty: every step)", elem_id="bucket-steps")
        examples = gr.Number(
            3, precision=0, minimum=0, maximum=20, label="examples per bucket", elem_id="bucket-examples"
        )
        bucket = gr.Button("Bucket", size="sm", elem_id="bucket-show")
    buckets = gr.HTML(elem_id="reward-buckets")
    return SimpleNamespace(**locals())


def _sweep_section() -> SimpleNamespace:
    """The sweep to open, its table and curves, and the form that starts one (wired in `workbench.ui`)."""
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
    return SimpleNamespace(**locals())


def _wire_runs(page: SimpleNamespace, view: RunsView) -> None:
    """Listing runs and sweeps, opening a sweep, opening a run (its summary, curves, health), overlaying runs,
    exporting the opened run."""
    refresh, opened, sweep_opened = page.refresh, page.opened, page.sweep_opened
    sweep_shown = [page.sweep_table, page.sweep_plot]
    refresh.click(view.list_runs, None, [page.table, opened, page.compared], api_name="list_runs")
    sweep_opened.change(view.open_sweep, sweep_opened, sweep_shown, api_name="open_sweep")
    refresh.click(view.list_sweeps, sweep_opened, sweep_opened, api_visibility="private").then(
        view.open_sweep, sweep_opened, sweep_shown, api_visibility="private"
    )
    # .input, not .change: when `show` picks a run, its `.then(open)` draws it
    opened.input(
        view.open_run, opened, [page.summary, page.plot, page.step, page.group_id, page.group], api_name="open_run"
    )
    opened.input(view.run_health, opened, page.health, api_visibility="private")
    page.compared.change(view.overlay_runs, page.compared, page.overlay, api_name="compare_runs")
    page.export.click(view.export_run, opened, [page.export_file, page.export_message], api_name="export_trl")


def _wire_inspection(page: SimpleNamespace, view: RunsView, inspected: list) -> None:
    """The opened run's step view, group and tokens by the pickers or a click on a row, one prompt before and
    after, the reward buckets; and all of them as a run opens."""
    opened, step, group_id, completion, tokens = page.opened, page.step, page.group_id, page.completion, page.tokens
    picked = [opened, step, group_id, completion]
    gr.on([step.input, group_id.input], view.show_group, [opened, step, group_id], page.group, api_visibility="private")
    gr.on([step.input, group_id.input, completion.input], view.show_tokens, picked, tokens, api_name="token_view")
    opened.input(view.first_tokens, opened, tokens, api_visibility="private")
    gr.on(
        [step.input, page.sort.input], view.show_step, [opened, step, page.sort], page.step_view, api_name="step_groups"
    )
    page.step_view.select(view.open_row, [opened, step], [group_id, page.group], api_visibility="private").then(
        view.show_tokens, picked, tokens, api_visibility="private"
    )
    prompt, before, after, pair = page.prompt, page.before, page.after, page.pair
    prompt.input(view.pick_prompt, [opened, prompt], [before, after, pair], api_visibility="private")
    gr.on([before.input, after.input], view.compare, [opened, prompt, before, after], pair, api_name="before_after")
    gr.on(
        [page.bucket.click, page.bucket_steps.submit],
        view.show_buckets,
        [opened, page.bucket_steps, page.examples],
        page.buckets,
        api_name="buckets",
    )
    opened.input(view.inspect, [opened, page.sort, page.examples], inspected, api_visibility="private")


class RunsView:
    """What the tab's events do: list the runs and sweeps, open a run and inspect it (a step, a group, a
    completion's tokens, a prompt before and after, reward buckets), export it, overlay runs, open a sweep."""

    def __init__(self, store: Store):
        self.store = store

    def list_runs(self):
        runs = self.store.runs()
        runs["settings"] = runs.config.map(_settings)
        ids = runs.run_id.tolist()
        return runs[COLUMNS], gr.Dropdown(choices=ids), gr.Dropdown(choices=ids)

    def show(self, shown_run):
        """The tab as it opens: every run, the one it showed before (else the newest) picked; `open` draws it."""
        table, _, compared_update = self.list_runs()
        ids = table.run_id.tolist()
        run_id = shown_run if shown_run in ids else next(iter(ids), None)
        return table, gr.Dropdown(choices=ids, value=run_id), compared_update

    def open_run(self, run_id):
        if not run_id:
            return "", None, gr.skip(), gr.skip(), ""
        run = self.store.run(run_id)
        config = run["config"]
        steps = self.store.steps(run_id)
        text = (
            f"**{html.escape(run_id)}** · {run['status']} · task {html.escape(run['task'])} · model "
            f"{html.escape(run['model'])} · {len(steps)} steps stored · {_settings(config)}\n\n"
            f"<details><summary>config</summary>\n\n```json\n{json.dumps(config, indent=1)}\n```\n</details>"
        )
        if run["error"]:
            text += f"\n\n```text\n{run['error']}\n```"
        last = self._last_step(run_id)
        curves = training_curves(steps, self.store.evals(run_id))  # held-out evaluations beside the training curves
        return text, curves, last, 0, self._group(run_id, last, 0, Config.from_dict(config))

    def run_health(self, run_id):
        """The banner of the health checks that fire on the run now (`workbench.store.health.examine`)."""
        return health_html(examine(self.store, run_id)) if run_id else ""

    def open_with_health(self, run_id, sort_by, shown_examples):
        return (
            *self.open_run(run_id),
            self.run_health(run_id),
            *self.inspect(run_id, sort_by, shown_examples),
            self.first_tokens(run_id),
        )

    def first_tokens(self, run_id):
        """The token view of the latest step's first completion, as a run opens."""
        return self.show_tokens(run_id, self._last_step(run_id), 0, 0) if run_id else ""

    def show_tokens(self, run_id, picked_step, picked_group, picked_completion):
        """One completion token by token (`Store.token_view`): log-probs, ratio, clip, KL, entropy, push."""
        if not run_id:
            return ""
        step, group_id, sample_idx = (int(v or 0) for v in (picked_step, picked_group, picked_completion))
        return stored_tokens_html(self.store, run_id, step, group_id, sample_idx)

    def inspect(self, run_id, sort_by, shown_examples):
        """The run's latest step's groups, its recurring prompts (the first one before and after) and its
        reward buckets over every step."""
        if not run_id:
            return "", gr.Dropdown(choices=[], value=None), gr.skip(), gr.skip(), "", gr.skip(), ""
        prompts = recurring_prompts(self.store, run_id)
        first = None if prompts.empty else prompts.prompt.iloc[0]
        return (
            self.show_step(run_id, self._last_step(run_id), sort_by),
            gr.Dropdown(choices=step_views.prompt_choices(prompts), value=first),
            *self.pick_prompt(run_id, first),
            "",
            self.show_buckets(run_id, "", shown_examples),
        )

    def _last_step(self, run_id) -> int:
        steps = self.store.steps(run_id)
        return int(steps.step.max()) if not steps.empty else 1

    def show_step(self, run_id, picked_step, sort_by):
        """A step's groups, a row each (`inspection.step_groups`), sorted as picked."""
        if not run_id:
            return ""
        return step_views.stored_step_groups_html(self.store, run_id, int(picked_step or 0), sort_by)

    def open_row(self, run_id, picked_step, row: gr.SelectData):
        """A click on a row of the step view: its group below it."""
        return row.index, self.show_group(run_id, picked_step, row.index)

    def pick_prompt(self, run_id, picked_prompt):
        """The prompt's first and latest step, side by side; the steps it was sampled at to pick from."""
        if not picked_prompt:
            none = gr.Dropdown(choices=[], value=None)
            return none, none, step_views.NO_RECURRING_PROMPT
        shown = before_after(self.store, run_id, picked_prompt)
        return (
            gr.Dropdown(choices=shown.steps, value=shown.first_step),
            gr.Dropdown(choices=shown.steps, value=shown.last_step),
            step_views.before_after_html(shown),
        )

    def compare(self, run_id, picked_prompt, first, last):
        if not (run_id and picked_prompt and first and last):
            return gr.skip()
        try:
            return step_views.before_after_html(before_after(self.store, run_id, picked_prompt, int(first), int(last)))
        except InspectionError as error:
            return step_views.problem(error)

    def show_buckets(self, run_id, steps_text, shown_examples):
        """The completions of the steps given (all when empty) by their reward functions' values."""
        if not run_id:
            return ""
        try:
            steps = parse_steps(steps_text) if (steps_text or "").strip() else None
            return step_views.buckets_html(reward_buckets(self.store, run_id, steps, int(shown_examples or 0)))
        except InspectionError as error:
            return step_views.problem(error)

    def show_group(self, run_id, picked_step, picked_group):
        if not run_id:
            return ""
        config = Config.from_dict(self.store.run(run_id)["config"])
        return self._group(run_id, int(picked_step or 0), int(picked_group or 0), config)

    def _group(self, run_id, step, group_id, config):
        return stored_group_html(self.store.group(run_id, step, group_id), run_id, step, group_id, config)

    def export_run(self, run_id):
        """The opened run as a zip of its TRL project (integrations.export), and what it does not reproduce."""
        if not run_id:
            return None, "Open a run to export it."
        try:
            archive, warnings = export_trl_zip(self.store.workspace, run_id)
        except (ExportError, StoreError, TaskError, RewardError, ConfigError) as error:  # e.g. the task folder is gone
            return None, f"**Not exported:** {html.escape(str(error))}"
        text = f"`{archive.name}`: unzip it, then `bash launch.sh`; PARITY.md says how each setting maps to TRL's."
        return str(archive), text + "".join(f"\n\n**Warning:** {html.escape(w)}" for w in warnings)

    def overlay_runs(self, run_ids):
        if not run_ids:
            return None
        return compare_runs({run_id: self.store.steps(run_id) for run_id in run_ids})

    def list_sweeps(self, shown):
        ids = self.store.sweeps().sweep_id.tolist()
        return gr.Dropdown(choices=ids if shown in ids or not shown else [shown, *ids])

    def open_sweep(self, sweep_id):
        """Grid values, seeds, final reward, steps/s and peak memory per grid point, and the curves."""
        if not sweep_id:
            return None, None
        runs = self.store.sweep(sweep_id)
        return sweep_summary(runs).round(3), sweep_curves(runs, self.store.sweep_steps(sweep_id))


def _settings(config: dict) -> str:
    """The settings a run changed from the defaults, in one line."""
    changed = Config.from_dict(config).changed()
    return " ".join(f"{name}={value}" for name, value in changed.items()) or "defaults"
