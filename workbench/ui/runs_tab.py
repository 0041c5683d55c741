"""Runs: the workspace's runs as a dashboard, one screen per view. Above the views, the run they show (a picker,
or a click on a row of the table), its one-line summary and the health checks that fire on it. The views:

- Overview: every run (a table that fits the screen), the opened run's name, tags and Delete, its curves;
- Groups: a step's groups (a row each; a click opens one), the group (a click on a completion opens its tokens);
- Tokens: one completion token by token, shaded by log-prob, entropy, KL or push;
- Before / after: one prompt's completions at two steps; Reward buckets: completions by reward values;
- Compare: any stored metric of several runs overlaid, smoothed;
- Sweeps: a sweep's table and curves (a band over seeds per grid point), and the form that starts one
  (wired in `workbench.ui`, as it takes the reward and the Train tab's form);
- Export: the opened run as a TRL project (a zip).

Every view shows what it has or one line saying what will appear and how, never an empty box. What the
events do is `runs_view.RunsView`. The tab opens on the run it showed before, else the newest."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from workbench.plots import SMOOTHING
from workbench.store.database import Store
from workbench.ui import step_views
from workbench.ui.run_list import COLUMN_WIDTHS, COLUMNS
from workbench.ui.runs_view import DEFAULT_METRICS, RUN_VIEWS, RunsView
from workbench.ui.token_view import DEFAULT_SHADE, OPEN_CARD_CSS, OPEN_CARD_JS, SHADE_CHOICES

NO_SWEEP = (
    "A sweep trains every combination of a grid of settings, for each seed, and shows them here side by side. "
    "This workspace has none yet: start one below."
)


def build(store: Store) -> SimpleNamespace:
    """The tab's layout, its own events wired; what `workbench.ui` wires across tabs comes back."""
    page = _layout()
    view = RunsView(store)
    _wire_listing(page, view)
    _wire_run(page, view)
    _wire_groups(page, view)
    _wire_compare_sweeps_export(page, view)
    return SimpleNamespace(
        show=view.show,
        open=view.open_all,
        opened=page.shows,  # the inputs of `show`
        open_inputs=page.open_inputs,
        outputs=page.listing,
        opened_outputs=page.opened_outputs,
        list_sweeps=view.list_sweeps,
        sweep_form=[page.sweep_grid, page.sweep_seeds, page.sweep_parallel],
        sweep_start=page.sweep_start,
        sweep_outputs=[page.sweep_message, page.sweep_command, page.sweep_opened],
        sweep_opened=page.sweep_opened,
    )


def _layout() -> SimpleNamespace:
    """The run bar, then the views as sub-tabs; the lists of components the events read and write."""
    gr.HTML(STYLE, visible="hidden")  # display: none; its style applies to the page
    with gr.Column(visible=False) as run_bar:
        bar = _run_bar()
    with gr.Tabs(elem_id="runs-views") as views:
        with gr.Tab("Overview", id="overview", elem_id="runs-overview"):
            note = gr.Markdown(elem_id="runs-note")
            overview = _overview()
        with gr.Tab("Groups", id="groups", visible=False, elem_id="runs-groups") as groups_tab:
            groups = _groups()
        with gr.Tab("Tokens", id="tokens", visible=False, elem_id="runs-tokens") as tokens_tab:
            tokens = _tokens()
        with gr.Tab("Before / after", id="before-after", visible=False) as before_tab:
            before_after = _before_after()
        with gr.Tab("Reward buckets", id="buckets", visible=False) as buckets_tab:
            buckets = _buckets()
        with gr.Tab("Compare", id="compare", visible=False, elem_id="runs-compare-view") as compare_tab:
            compare = _compare()
        with gr.Tab("Sweeps", id="sweeps", elem_id="runs-sweeps"):
            sweeps = _sweeps()
        with gr.Tab("Export", id="export", visible=False) as export_tab:
            export = _export()
    sections = (bar, overview, groups, tokens, before_after, buckets, compare, sweeps, export)
    page = SimpleNamespace(
        note=note, run_bar=run_bar, views=views, **{k: v for s in sections for k, v in vars(s).items()}
    )
    page.compare_tab = compare_tab
    run_tabs = [groups_tab, tokens_tab, before_tab, buckets_tab, compare_tab, export_tab]
    assert len(run_tabs) == len(RUN_VIEWS)
    page.shows = [page.opened, page.compared]
    page.listing = [page.table, page.opened, page.compared, note, run_bar, page.overview_body, *run_tabs]
    page.open_inputs = [page.opened, page.sort, page.examples, page.shade, page.smoothing]
    page.inspected = [page.step_view, page.prompt, page.before, page.after, page.pair, page.bucket_steps, page.buckets]
    page.opened_outputs = [
        *[page.summary, page.plot, page.step, page.group_id, page.group],  # open_run's
        page.health, page.config, page.name, page.tags,
        *page.inspected,
        page.token_step, page.token_group, page.token_completion, page.tokens,
    ]  # fmt: skip
    return page


# the runs table in a smaller monospace font: a run's id (31 characters) and a minute (16) each fit on one line
STYLE = """<style>
#runs-table [role=gridcell], #runs-table [role=columnheader], #sweep-table [role=gridcell],
#sweep-table [role=columnheader] { font-size: 13px !important }
</style>"""


def _run_bar() -> SimpleNamespace:
    """The run the views show, its name and tags, Delete (asked first), Refresh; its summary and health."""
    with gr.Row(equal_height=True):
        opened = gr.Dropdown([], label="the run the views show", scale=4, elem_id="runs-open")
        name = gr.Textbox(label="its name", max_lines=1, scale=2, elem_id="run-name")
        tags = gr.Textbox(label="its tags, comma-separated", max_lines=1, scale=2, elem_id="run-tags")
        with gr.Column(scale=1, min_width=150):
            save = gr.Button("Save name and tags", size="sm", elem_id="run-save")
            delete = gr.Button("Delete this run...", size="sm", variant="stop", elem_id="run-delete")
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=80, elem_id="runs-refresh")
    with gr.Row(visible=False, equal_height=True) as confirm_row:
        confirm_text = gr.Markdown(elem_id="run-delete-question")
        confirm = gr.Button("Delete it for good", variant="stop", size="sm", scale=0, elem_id="run-delete-confirm")
        cancel = gr.Button("Keep it", size="sm", scale=0, elem_id="run-delete-cancel")
    with gr.Column(visible=False) as message_box:
        manage_message = gr.Markdown(elem_id="run-manage-message")
    summary = gr.Markdown(elem_id="run-summary")
    health = gr.HTML(visible=False, elem_id="runs-health")
    return SimpleNamespace(**locals())


def _overview() -> SimpleNamespace:
    """Every run, then the opened run's curves, smoothed."""
    with gr.Column(visible=False) as overview_body:
        table = gr.Dataframe(
            headers=COLUMNS,
            column_widths=COLUMN_WIDTHS,
            max_height=230,
            interactive=False,
            label="every run of the workspace, newest first: click a row to open it",
            show_label=True,
            elem_id="runs-table",
        )
        with gr.Row(equal_height=True):
            with gr.Column(scale=2):
                gr.Markdown("**The opened run's curves**: hover for values, drag to zoom, double-click to zoom out.")
                config = gr.Markdown(elem_id="run-config")
            smoothing = _smoothing("run-smoothing")
        plot = gr.Plot(show_label=False, elem_id="run-plot")
    return SimpleNamespace(**locals())


PICKER = dict(scale=1, min_width=110)  # a number picker: narrow, so that what it picks from fits beside it


def _smoothing(elem_id: str) -> gr.Slider:
    return gr.Slider(
        0, 0.99, SMOOTHING, step=0.01, label="smoothing", info="EMA weight; the raw curve stays faint behind",
        elem_id=elem_id,
    )  # fmt: skip


def _groups() -> SimpleNamespace:
    """A step's groups, a row each; the group that is open, its completions as cards."""
    with gr.Row():
        step = gr.Number(1, precision=0, minimum=1, label="step", **PICKER, elem_id="run-step-picker")
        group_id = gr.Number(0, precision=0, minimum=0, label="group", **PICKER, elem_id="run-group-picker")
        sort = gr.Radio(
            step_views.SORT_CHOICES, value="group", label="sort the groups by", scale=5, elem_id="step-groups-sort"
        )
    step_view = gr.HTML(elem_id="step-groups", js_on_load=step_views.SELECT_ROW_JS)
    gr.Markdown("Click a completion's card to read it token by token.")
    group = gr.HTML(elem_id="run-group", js_on_load=OPEN_CARD_JS, css_template=OPEN_CARD_CSS)
    return SimpleNamespace(**locals())


def _tokens() -> SimpleNamespace:
    """One completion, token by token, shaded by the measure picked."""
    with gr.Row():
        token_step = gr.Number(1, precision=0, minimum=1, label="step", **PICKER, elem_id="token-step")
        token_group = gr.Number(0, precision=0, minimum=0, label="group", **PICKER, elem_id="token-group")
        token_completion = gr.Number(
            0, precision=0, minimum=0, label="completion", **PICKER, elem_id="token-completion"
        )
        shade = gr.Radio(
            SHADE_CHOICES, value=DEFAULT_SHADE, label="shade the tokens by", scale=5, elem_id="token-shade"
        )
    tokens = gr.HTML(elem_id="token-view")
    return SimpleNamespace(**locals())


def _before_after() -> SimpleNamespace:
    with gr.Row():
        prompt = gr.Dropdown([], label="a prompt sampled at two steps or more", scale=3, elem_id="before-after-prompt")
        before = gr.Dropdown([], label="before (step)", elem_id="before-step")
        after = gr.Dropdown([], label="after (step)", elem_id="after-step")
    pair = gr.HTML(elem_id="before-after")
    return SimpleNamespace(**locals())


def _buckets() -> SimpleNamespace:
    with gr.Row(equal_height=True):
        bucket_steps = gr.Textbox(label="steps A-B (empty: every step)", elem_id="bucket-steps")
        examples = gr.Number(
            3, precision=0, minimum=0, maximum=20, label="examples per bucket", elem_id="bucket-examples"
        )
        bucket = gr.Button("Bucket", size="sm", elem_id="bucket-show")
    buckets = gr.HTML(elem_id="reward-buckets")
    return SimpleNamespace(**locals())


def _compare() -> SimpleNamespace:
    """The runs and metrics to overlay, the smoothing, and right below them the curves."""
    with gr.Row():
        compared = gr.Dropdown([], multiselect=True, label="runs", scale=3, elem_id="runs-compare")
        metrics = gr.Dropdown(
            list(DEFAULT_METRICS),
            value=list(DEFAULT_METRICS),
            multiselect=True,
            label="metrics",
            scale=3,
            elem_id="compare-metrics",
        )
        compare_smoothing = _smoothing("compare-smoothing")
    compare_note = gr.Markdown(elem_id="compare-note")
    with gr.Column(visible=False) as compare_body:
        overlay = gr.Plot(show_label=False, elem_id="compare-plot")
    return SimpleNamespace(**locals())


def _sweeps() -> SimpleNamespace:
    """The sweep to open, its metric and smoothing, its table and curves, and the form that starts one."""
    with gr.Row(visible=False) as sweep_pickers:
        sweep_opened = gr.Dropdown([], label="sweep", scale=3, elem_id="sweep-open")
        sweep_metric = gr.Dropdown(["reward_mean"], value="reward_mean", label="metric", elem_id="sweep-metric")
        sweep_smoothing = _smoothing("sweep-smoothing")
    sweep_note = gr.Markdown(NO_SWEEP, elem_id="sweep-note")
    with gr.Column(visible=False) as sweep_body:
        sweep_table = gr.Dataframe(max_height=220, interactive=False, elem_id="sweep-table")
        sweep_plot = gr.Plot(show_label=False, elem_id="sweep-plot")
    with gr.Accordion("Start a sweep with the Train tab's settings and the editor's reward", open=False):
        with gr.Row():
            sweep_grid = gr.Textbox("group_size=2,4; beta=0,0.04", label="grid: field=V1,V2; ...", elem_id="sweep-grid")
            sweep_seeds = gr.Textbox("0,1,2", label="seeds", elem_id="sweep-seeds")
            sweep_parallel = gr.Number(1, precision=0, minimum=1, label="runs at once", elem_id="sweep-parallel")
        sweep_start = gr.Button("Start the sweep", elem_id="sweep-start")
        sweep_message = gr.Markdown(elem_id="sweep-message")
        with gr.Column(visible=False) as sweep_command_box:
            sweep_command = gr.Code(
                language="shell", label="the same sweep from the command line", elem_id="sweep-command"
            )
    return SimpleNamespace(**locals())


def _export() -> SimpleNamespace:
    gr.Markdown(
        "The opened run as a TRL project: `grpo.yaml` for `trl grpo`, the reward file unchanged, the prompts, "
        "launch scripts for accelerate, DeepSpeed and FSDP, and PARITY.md (how each setting maps to TRL's)."
    )
    export = gr.Button("Export to TRL", elem_id="export-trl")
    export_message = gr.Markdown(elem_id="export-trl-message")
    with gr.Column(visible=False) as export_body:
        export_file = gr.File(label="the run as a TRL project", interactive=False, elem_id="export-trl-file")
    return SimpleNamespace(**locals())


def _wire_listing(page: SimpleNamespace, view: RunsView) -> None:
    """Refresh, a click on a row of the table, and what opening a run draws."""
    listed = page.refresh.click(view.list_runs, None, [page.table, page.opened, page.compared], api_name="list_runs")
    listed.then(view.show, page.shows, page.listing, api_visibility="private").then(
        view.open_all, page.open_inputs, page.opened_outputs, api_visibility="private"
    )
    page.refresh.click(view.list_sweeps, page.sweep_opened, page.sweep_opened, api_visibility="private")
    page.table.select(view.pick_row, None, page.opened, api_visibility="private").then(
        view.open_all, page.open_inputs, page.opened_outputs, api_visibility="private"
    )
    # .input, not .change: when `show` picks a run, its `.then(open_all)` draws it
    # what it said or asked of the run before is closed first, so that a Delete pressed once the run shows is
    # never closed by the opening
    opened_outputs = page.opened_outputs
    closed = [page.message_box, page.confirm_row]
    opening = page.opened.input(_closed, None, closed, api_visibility="private")
    opening.then(view.open_run, [page.opened, page.smoothing], opened_outputs[:5], api_name="open_run")
    opening.then(view.open_rest, page.open_inputs, opened_outputs[5:], api_visibility="private")
    page.table.select(_closed, None, closed, api_visibility="private")


def _wire_run(page: SimpleNamespace, view: RunsView) -> None:
    """The opened run's curves, name and tags, Delete (asked first), and its tokens."""
    # .change, not .release: a click on the track or a typed number is a change too; always_last drops the values
    # a drag passes through while a draw is under way
    page.smoothing.change(
        view.curves, [page.opened, page.smoothing], page.plot, trigger_mode="always_last", api_visibility="private"
    )
    renamed = [page.manage_message, page.table, page.opened, page.compared, page.summary, page.name, page.tags]
    saved = page.save.click(view.save_run, [page.opened, page.name, page.tags], renamed, api_name="rename_run")
    saved.then(_shown_if, page.manage_message, page.message_box, api_visibility="private")
    page.delete.click(view.ask_delete, page.opened, [page.confirm_row, page.confirm_text], api_visibility="private")
    page.cancel.click(_hidden_row, None, page.confirm_row, api_visibility="private")
    deleted = page.confirm.click(view.delete_run, page.opened, page.manage_message, api_name="delete_run")
    deleted.then(_hidden_row, None, page.confirm_row, api_visibility="private")
    deleted.then(_shown_if, page.manage_message, page.message_box, api_visibility="private")
    deleted.then(view.show, page.shows, page.listing, api_visibility="private").then(
        view.open_all, page.open_inputs, page.opened_outputs, api_visibility="private"
    )
    picked = [page.opened, page.token_step, page.token_group, page.token_completion, page.shade]
    gr.on(
        [page.token_step.input, page.token_group.input, page.token_completion.input, page.shade.input],
        view.show_tokens,
        picked,
        page.tokens,
        api_name="token_view",
    )


def _wire_groups(page: SimpleNamespace, view: RunsView) -> None:
    """The step view and the group by the pickers or a click on a row; a click on a card opens its tokens; one
    prompt before and after; the reward buckets."""
    opened, step, group_id = page.opened, page.step, page.group_id
    gr.on([step.input, group_id.input], view.show_group, [opened, step, group_id], page.group, api_visibility="private")
    gr.on(
        [step.input, page.sort.input], view.show_step, [opened, step, page.sort], page.step_view, api_name="step_groups"
    )
    page.step_view.select(view.open_row, [opened, step], [group_id, page.group], api_visibility="private")
    card = [page.token_step, page.token_group, page.token_completion, page.tokens, page.views]
    page.group.select(view.open_card, [opened, step, group_id, page.shade], card, api_visibility="private")
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


def _wire_compare_sweeps_export(page: SimpleNamespace, view: RunsView) -> None:
    """Overlaying runs; opening a sweep and redrawing its curves; exporting the opened run."""
    overlaid = [page.compared, page.metrics, page.compare_smoothing]
    drawn = [page.overlay, page.compare_note, page.compare_body]
    # drawn as the view opens and as the user picks runs: not on .change, which a dropdown also sends as its tab
    # first shows it, late enough to draw over a smoothing the user picked meanwhile
    gr.on(
        [page.compare_tab.select, page.compared.input],
        view.pick_compared,
        overlaid,
        [page.metrics, *drawn],
        api_visibility="private",
    )
    gr.on(
        [page.metrics.input, page.compare_smoothing.change],
        view.overlay_runs,
        overlaid,
        drawn,
        trigger_mode="always_last",
        api_name="compare_runs",
    )
    sweep = [page.sweep_opened, page.sweep_metric, page.sweep_smoothing]
    shown = [page.sweep_table, page.sweep_plot]
    page.sweep_opened.change(view.open_sweep, sweep, shown, api_name="open_sweep")
    page.sweep_opened.change(
        view.sweep_shown,
        page.sweep_opened,
        [page.sweep_note, page.sweep_pickers, page.sweep_body, page.sweep_metric],
        api_visibility="private",
    )
    gr.on(
        [page.sweep_metric.input, page.sweep_smoothing.change],
        view.sweep_plot,
        sweep,
        page.sweep_plot,
        trigger_mode="always_last",
        api_visibility="private",
    )
    page.sweep_command.change(_shown_if, page.sweep_command, page.sweep_command_box, api_visibility="private")
    exported = page.export.click(
        view.export_run, page.opened, [page.export_file, page.export_message], api_name="export_trl"
    )
    exported.then(_shown_if, page.export_file, page.export_body, api_visibility="private")


def _shown_if(value) -> gr.Column:
    """A container shown once the component it holds has a value."""
    return gr.Column(visible=bool(value))


def _hidden_row() -> gr.Row:
    return gr.Row(visible=False)


def _closed() -> tuple[gr.Column, gr.Row]:
    return gr.Column(visible=False), gr.Row(visible=False)
