"""What the Runs tab's events do (`runs_tab` lays it out and wires them): list the runs, open one (its summary,
health, curves, groups, tokens, a prompt before and after, reward buckets), name, tag and delete it, overlay
several runs' metrics, open a sweep, export a run to TRL. The numbers come from the store and its inspection
functions; the HTML from the view modules; the figures from `workbench.plots`."""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from workbench.config import Config, ConfigError
from workbench.engine.sweep import summary as sweep_summary
from workbench.integrations.export import ExportError, export_trl_zip
from workbench.plots import SMOOTHING, available_metrics, compare_runs, sweep_curves, training_curves
from workbench.rewards.scoring import RewardError
from workbench.rewards.tasks import TaskError
from workbench.store.database import Store, StoreError
from workbench.store.health import examine
from workbench.store.inspection import InspectionError, before_after, parse_steps, recurring_prompts, reward_buckets
from workbench.ui import step_views
from workbench.ui.group_view import stored_group_html
from workbench.ui.run_list import config_details, label, run_choices, runs_table, significant, summary
from workbench.ui.status import health_html
from workbench.ui.token_view import DEFAULT_SHADE, stored_tokens_html

RUN_VIEWS = ("groups", "tokens", "before-after", "buckets", "compare", "export")  # shown once a run exists
DEFAULT_METRICS = ("reward_mean", "kl")
COMPARED = 3  # the newest runs the Compare view overlays until the user picks
PICK_COMPARED = (
    "Pick one run or more, and the metrics to draw: any column of `steps`, each reward function's mean, each "
    "held-out measure. Their curves appear right here."
)
NO_RUNS = (
    "**No runs yet.** Train one in the **Train** tab (or `python -m workbench train --task arithmetic`): each run "
    "shows here with its curves, its groups and completions token by token, beside the other runs. A sweep "
    "(**Sweeps**, below) trains several at once."
)


class RunsView:
    def __init__(self, store: Store):
        self.store = store

    # the runs

    def list_runs(self):
        """The runs table and the pickers' runs (Refresh)."""
        runs = self.store.runs()
        choices = run_choices(runs)
        return runs_table(runs), gr.Dropdown(choices=choices), gr.Dropdown(choices=choices)

    def show(self, shown_run, compared):
        """The tab as it opens: every run, the one it showed before (else the newest) picked (`open_all` draws
        it), the runs overlaid; on an empty workspace, one line saying how runs get here."""
        runs = self.store.runs()
        ids, choices, any_run = runs.run_id.tolist(), run_choices(runs), not runs.empty
        run_id = shown_run if shown_run in ids else next(iter(ids), None)
        overlaid = [r for r in compared or [] if r in ids] or ids[:COMPARED]
        return (
            runs_table(runs),
            gr.Dropdown(choices=choices, value=run_id),
            gr.Dropdown(choices=choices, value=overlaid, multiselect=True),
            "" if any_run else NO_RUNS,
            gr.Row(visible=any_run),
            gr.Column(visible=any_run),
            *[gr.Tab(visible=any_run) for _ in RUN_VIEWS],
        )

    @staticmethod
    def pick_row(row: gr.SelectData):
        """A click on a row of the runs table: that run (its first cell is its id)."""
        return gr.Dropdown(value=row.row_value[0])

    # one run

    def open_all(self, run_id, sort_by, shown_examples, shade, smoothing):
        return (*self.open_run(run_id, smoothing), *self.open_rest(run_id, sort_by, shown_examples, shade, smoothing))

    def open_run(self, run_id, smoothing=None):
        """Its summary, its curves, its latest step's first group."""
        if not run_id:
            return "", None, gr.skip(), gr.skip(), ""
        run = self.store.run(run_id)
        if run is None:
            return f"No run {html.escape(run_id)} in this workspace (deleted?): press Refresh.", None, 1, 0, ""
        steps = self.store.steps(run_id)
        last = int(steps.step.max()) if not steps.empty else 1
        return (
            summary(run, len(steps)),
            training_curves(steps, self.store.evals(run_id), _weight(smoothing)),
            last,
            0,
            self._group(run_id, last, 0, Config.from_dict(run["config"])),
        )

    def open_rest(self, run_id, sort_by, shown_examples, shade, smoothing):
        """Its health banner, config, name and tags, the inspection views and its latest step's first
        completion's tokens."""
        run = self.store.run(run_id) if run_id else None
        if run is None:
            return _shown(""), "", "", "", *self.inspect(None, 1, sort_by, shown_examples), 1, 0, 0, ""
        last = self._last_step(run_id)
        return (
            _shown(health_html(examine(self.store, run_id))),
            config_details(run),
            run["name"] or "",
            ", ".join(run["tags"]),
            *self.inspect(run_id, last, sort_by, shown_examples),
            last,
            0,
            0,
            self.show_tokens(run_id, last, 0, 0, shade),
        )

    def curves(self, run_id, smoothing):
        if not run_id:
            return None
        return training_curves(self.store.steps(run_id), self.store.evals(run_id), _weight(smoothing))

    def save_run(self, run_id, name, tags):
        """The name and tags typed, stored; the table, pickers and summary relabelled; the boxes as stored."""
        if not run_id:
            return "Open a run first.", *[gr.skip()] * 6
        try:
            named = self.store.rename_run(run_id, name)
            kept = self.store.tag_run(run_id, (tags or "").split(","))
        except StoreError as error:
            return f"**Not saved:** {html.escape(str(error))}", *[gr.skip()] * 6
        table, opened, compared = self.list_runs()
        run = self.store.run(run_id)
        said = f"Saved: {html.escape(label(run_id, named))}" + (f", tags {', '.join(kept)}" if kept else "")
        shown = summary(run, len(self.store.steps(run_id)))
        return said + ".", table, opened, compared, shown, named or "", ", ".join(kept)  # as stored

    def ask_delete(self, run_id):
        if not run_id:
            return gr.Row(visible=False), ""
        steps = len(self.store.steps(run_id))
        return gr.Row(visible=True), (
            f"Delete run **{html.escape(run_id)}**: its {steps} steps, every completion and token, and its folder "
            "(checkpoint, adapters)? This cannot be undone."
        )

    def delete_run(self, run_id):
        if not run_id:
            return "Open a run first."
        try:
            deleted = self.store.delete_run(run_id)
        except StoreError as error:
            return f"**Not deleted:** {html.escape(str(error))}"
        return (
            f"Deleted run `{run_id}`: {deleted['steps']} steps, {deleted['rollouts']} completions and its folder "
            f"`runs/{run_id}/`."
        )

    def show_tokens(self, run_id, picked_step, picked_group, picked_completion, shade=None):
        """One completion token by token (`Store.token_view`), shaded by `shade`."""
        if not run_id:
            return ""
        step, group_id, sample_idx = (int(v or 0) for v in (picked_step, picked_group, picked_completion))
        return stored_tokens_html(
            self.store, run_id, step, group_id, sample_idx, shade or DEFAULT_SHADE, table_open=True
        )

    def _last_step(self, run_id) -> int:
        last = self.store.query("SELECT max(step) AS step FROM steps WHERE run_id = $1", [run_id]).step[0]
        return 1 if pd.isna(last) else int(last)  # a run with no step yet: NA

    # its groups

    def inspect(self, run_id, last, sort_by, shown_examples):
        """The run's `last` step's groups, its recurring prompts (the first one before and after) and its
        reward buckets over every step."""
        if not run_id:
            return "", gr.Dropdown(choices=[], value=None), gr.skip(), gr.skip(), "", gr.skip(), ""
        prompts = recurring_prompts(self.store, run_id)
        first = None if prompts.empty else prompts.prompt.iloc[0]
        return (
            self.show_step(run_id, last, sort_by),
            gr.Dropdown(choices=step_views.prompt_choices(prompts), value=first),
            *self.pick_prompt(run_id, first),
            "",
            self.show_buckets(run_id, "", shown_examples),
        )

    def show_step(self, run_id, picked_step, sort_by):
        """A step's groups, a row each (`inspection.step_groups`), sorted as picked."""
        if not run_id:
            return ""
        return step_views.stored_step_groups_html(self.store, run_id, int(picked_step or 0), sort_by)

    def open_row(self, run_id, picked_step, row: gr.SelectData):
        """A click on a row of the step view: its group below it."""
        return row.index, self.show_group(run_id, picked_step, row.index)

    def open_card(self, run_id, picked_step, picked_group, shade, card: gr.SelectData):
        """A click on a completion's card in the group: that completion in the Tokens view, which opens."""
        step, group_id = int(picked_step or 0), int(picked_group or 0)
        shown = self.show_tokens(run_id, step, group_id, card.index, shade)
        return step, group_id, card.index, shown, gr.Tabs(selected="tokens")

    def show_group(self, run_id, picked_step, picked_group):
        if not run_id:
            return ""
        config = Config.from_dict(self.store.run(run_id)["config"])
        return self._group(run_id, int(picked_step or 0), int(picked_group or 0), config)

    def _group(self, run_id, step, group_id, config):
        return stored_group_html(self.store.group(run_id, step, group_id), run_id, step, group_id, config)

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

    # several runs

    def _frames(self, run_ids):
        return {r: self.store.steps(r) for r in run_ids}, {r: self.store.evals(r) for r in run_ids}

    def pick_compared(self, run_ids, metrics, smoothing):
        """Runs picked to overlay: the metrics they have to pick from, and their curves."""
        steps, evals = self._frames(run_ids or [])
        known = {key: name for r in steps for key, name in available_metrics(steps[r], evals[r]).items()}
        choices = [(key if name == key else f"{key} · {name}", key) for key, name in known.items()]
        kept = [m for m in metrics or [] if m in known] or [m for m in DEFAULT_METRICS if m in known]
        return gr.Dropdown(choices=choices, value=kept, multiselect=True), *self._overlay(
            run_ids, kept, smoothing, steps, evals
        )

    def overlay_runs(self, run_ids, metrics, smoothing):
        """The runs' curves of the metrics picked, a panel per metric, right below the pickers."""
        return self._overlay(run_ids, metrics, smoothing, *self._frames(run_ids or []))

    def _overlay(self, run_ids, metrics, smoothing, steps, evals):
        if not run_ids or not metrics:
            return None, PICK_COMPARED, gr.Column(visible=False)
        runs = self.store.runs().set_index("run_id")
        labels = {r: label(r, runs.name.get(r)) for r in run_ids}
        figure = compare_runs(steps, metrics, _weight(smoothing), evals, labels)
        return figure, "", gr.Column(visible=True)

    # sweeps

    def list_sweeps(self, shown):
        """Every sweep; the one shown, else the newest, picked (its `.change` opens it)."""
        ids = self.store.sweeps().sweep_id.tolist()
        return gr.Dropdown(
            choices=ids if shown in ids or not shown else [shown, *ids], value=shown or next(iter(ids), None)
        )

    def open_sweep(self, sweep_id, metric="reward_mean", smoothing=None):
        """Grid values, seeds, final reward, steps/s and peak memory per grid point (3 significant digits),
        and the curves."""
        if not sweep_id:
            return None, None
        runs = self.store.sweep(sweep_id)
        table = sweep_summary(runs)
        for column in table.columns:
            if table[column].dtype.kind == "f":
                table[column] = table[column].map(significant)
        return table, self.sweep_plot(sweep_id, metric, smoothing)

    def sweep_shown(self, sweep_id):
        """The note (what a sweep is, while none is open), the pickers, the sweep's table and curves shown, the
        metrics to pick from."""
        if not sweep_id:
            return gr.skip(), gr.skip(), gr.Column(visible=False), gr.skip()
        steps = self.store.sweep_steps(sweep_id)
        metrics = gr.Dropdown(choices=list(available_metrics(steps)))
        return "", gr.Row(visible=True), gr.Column(visible=True), metrics

    def sweep_plot(self, sweep_id, metric, smoothing):
        if not sweep_id:
            return None
        steps = self.store.sweep_steps(sweep_id)
        return sweep_curves(self.store.sweep(sweep_id), steps, metric or "reward_mean", _weight(smoothing))

    # export

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


def _weight(smoothing) -> float:
    """The smoothing slider's value as an EMA weight (the plots' default when the API leaves it out)."""
    return SMOOTHING if smoothing is None else min(max(float(smoothing), 0.0), 0.99)


def _shown(page: str) -> gr.HTML:
    """An HTML view shown only when it has something to say (the health banner of a healthy run has not)."""
    return gr.HTML(page, visible=bool(page))
