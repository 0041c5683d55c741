"""Explore: SQL over the store. A named query scoped to the run picked fills the box (the box always holds the
query the dropdown names, or the dropdown says it is your own); beside it, every table and its columns; below,
the result grid and its CSV. An error shows as DuckDB writes it, its caret under the column it points at."""

from __future__ import annotations

import atexit
import html
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import gradio as gr
import pandas as pd

from workbench.store.database import Store
from workbench.store.queries import NAMED_QUERIES, SQLError, named_sql, run_sql, tables
from workbench.ui.run_list import run_choices

DIGITS = 4  # significant digits of a decimal in the result grid
CSV_KEPT_SECONDS = 60  # a result's CSV waits this long for Gradio to copy it into its cache, then goes
OWN = "own"  # the dropdown's value while the box holds SQL the user wrote or edited
FIRST_NAMED = "reward_per_step"
NO_RUNS = (
    "<p class='sql-note'>No runs yet: train one in the Train tab, and its steps, completions and rewards can be "
    "queried here. The tables on the right are what a query can read.</p>"
)
# monospace with whitespace kept: DuckDB's caret (^) under the column of an error only lines up so
STYLE = """<style>
#sql-input textarea { font-family: ui-monospace, monospace; }
pre.sql-error { font-family: ui-monospace, monospace; white-space: pre; overflow-x: auto; color: #b00020;
    background: #fff4f4; border: 1px solid #f0c0c0; padding: 6px; margin: 0; }
.sql-tables details { margin: 2px 0 } .sql-tables summary { cursor: pointer; font-family: ui-monospace, monospace }
.sql-tables code { font-size: 85% }
</style>"""


def build(store: Store, page: gr.Tab) -> None:
    """The tab's layout and its events; `page` is the tab, whose opening lists the runs and runs the query."""
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                named = gr.Dropdown(
                    [(f"{name}: {description}", name) for name, (description, _) in NAMED_QUERIES.items()]
                    + [("your own SQL (edit the box)", OWN)],
                    value=FIRST_NAMED,
                    label="named query (scoped to the run picked; edit it, then Run)",
                    scale=3,
                    elem_id="named-query",
                )
                run = gr.Dropdown([], label="run", scale=2, visible=False, elem_id="sql-run-picker")
            sql = gr.Textbox(
                named_sql(FIRST_NAMED), lines=7, max_lines=20, label="SQL (read-only)", elem_id="sql-input"
            )
            with gr.Row():
                run_button = gr.Button("Run", variant="primary", elem_id="sql-run")
                download = gr.DownloadButton("Download CSV", interactive=False, elem_id="sql-download")
            message = gr.HTML(elem_id="sql-message")
        with gr.Column(scale=1, min_width=260):
            schema = gr.HTML(elem_id="sql-tables", max_height=420)
    with gr.Column(visible=False) as result_box:
        result = gr.Dataframe(max_height=420, interactive=False, elem_id="sql-result")
    scoped = gr.State(None)  # the run the box's SQL is scoped to
    view = ExploreView(store)
    shown = [message, result, download]
    ran = run_button.click(view.query, sql, shown, api_name="query")  # first: the private events reuse its name
    ran.then(_shown_if, result, result_box, api_visibility="private")
    opened = page.select(view.open, [named, run, sql], [run, sql, scoped, schema, message], api_visibility="private")
    opened.then(view.query_if_named, [named, run, sql], shown, api_visibility="private").then(
        _shown_if, result, result_box, api_visibility="private"
    )
    for event in (
        named.input(view.pick_named, [named, run], sql, api_visibility="private"),
        run.input(view.pick_run, [named, run, sql, scoped], [sql, scoped], api_visibility="private"),
    ):
        event.then(view.query, sql, shown, api_visibility="private").then(
            _shown_if, result, result_box, api_visibility="private"
        )
    sql.change(view.edited, [named, run, sql], named, api_visibility="private")


class ExploreView:
    """What the tab's events do: list the runs and tables, fill the box with a named query for a run, run it."""

    def __init__(self, store: Store):
        self.store = store
        self.folder = Path(tempfile.mkdtemp(prefix="workbench-query-"))  # the results' CSVs, one per query
        atexit.register(shutil.rmtree, self.folder, ignore_errors=True)

    def csv(self, frame: pd.DataFrame) -> Path:
        """The result as a CSV of its own (sessions query at once); the older ones, already served, removed."""
        for old in self.folder.glob("*.csv"):
            if old.stat().st_mtime < time.time() - CSV_KEPT_SECONDS:
                old.unlink(missing_ok=True)
        path = self.folder / f"query-{uuid.uuid4().hex[:8]}.csv"
        frame.to_csv(path, index=False)
        return path

    def query(self, text):
        try:
            outcome = run_sql(self.store, text)
        except SQLError as error:
            return error_html(str(error)), None, gr.DownloadButton(value=None, interactive=False)
        path = self.csv(outcome.frame)
        shown, rounded = readable(outcome.frame)
        message = outcome.message + (
            f" · decimals shown to {DIGITS} significant digits, the CSV has them all" * rounded
        )
        return html.escape(message), shown, gr.DownloadButton(value=str(path), interactive=True)

    def open(self, name, picked, text):
        """The runs to pick from (the one picked before, else the newest), the tables; the named query for it."""
        runs = self.store.runs()
        ids = runs.run_id.tolist()
        run_id = picked if picked in ids else next(iter(ids), None)
        listed = gr.Dropdown(choices=run_choices(runs), value=run_id, visible=run_id is not None)
        schema = tables_html(tables(self.store))
        if run_id is None:
            return listed, gr.skip(), None, schema, NO_RUNS
        return listed, text if name == OWN else named_sql(name, run_id), run_id, schema, ""

    def query_if_named(self, name, run_id, text):
        """The box's query as the tab opens, when it is a named one for a run (the user's own waits for Run)."""
        if name == OWN or not run_id:
            return gr.skip(), gr.skip(), gr.skip()
        return self.query(text)

    @staticmethod
    def pick_named(name, run_id):
        return gr.skip() if name == OWN else named_sql(name, run_id or None)

    @staticmethod
    def pick_run(name, run_id, text, before):
        """The box scoped to the run picked: the named query for it, or the user's SQL with the run's id in
        place of the one before."""
        if name != OWN:
            return named_sql(name, run_id or None), run_id
        if before and run_id:
            return text.replace(f"'{before}'", f"'{run_id}'"), run_id
        return gr.skip(), run_id

    @staticmethod
    def edited(name, run_id, text):
        """The box changed: when it no longer holds the named query (typed, pasted, filled), the dropdown says the
        SQL is the user's (`.change`, not `.input`: a paste or a script's fill sends no keystroke)."""
        return OWN if name != OWN and text != named_sql(name, run_id or None) else gr.skip()


def readable(frame: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """The result as the grid shows it: decimals to DIGITS significant digits (still numbers, so the grid sorts
    them), e.g. 0.00010116185460771834 -> 0.0001012; and whether any was rounded."""
    decimals = [c for c in frame.columns if pd.api.types.is_float_dtype(frame[c])]
    shown = frame.copy()
    for column in decimals:
        shown[column] = shown[column].map(lambda v: v if v != v else float(f"{v:.{DIGITS}g}"))
    return shown, bool(decimals) and not shown[decimals].equals(frame[decimals])


def _shown_if(frame) -> gr.Column:
    return gr.Column(visible=frame is not None and not (isinstance(frame, pd.DataFrame) and frame.empty))


def error_html(message: str) -> str:
    """A query's error as DuckDB wrote it: monospace, its whitespace kept, so the caret stays under its column."""
    return f"{STYLE}<pre class='sql-error'>error: {html.escape(message)}</pre>"


def tables_html(columns: pd.DataFrame) -> str:
    """Every table (`queries.tables`), folded, with its columns and their types."""
    folds = []
    for table, rows in columns.groupby("table", sort=False):
        listed = "".join(
            f"<div><code>{html.escape(c)}</code> <small>{html.escape(t)}</small></div>"
            for c, t in zip(rows.column, rows.type)
        )
        name = html.escape(table)
        summary = f"{name} <small>({len(rows)} columns)</small>"
        folds.append(f"<details data-table='{name}'><summary>{summary}</summary>{listed}</details>")
    return (
        f"{STYLE}<div class='sql-tables'><b>Tables</b> <small>(click one for its columns; "
        f"<code>run_id</code> joins them)</small>{''.join(folds)}</div>"
    )
