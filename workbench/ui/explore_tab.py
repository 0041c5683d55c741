"""Explore: SQL over the store, the named queries one click away, a result grid and its CSV."""

from __future__ import annotations

import html
import tempfile
from pathlib import Path

import gradio as gr

from workbench.store.database import Store
from workbench.store.queries import NAMED_QUERIES, SQLError, named_sql, run_sql

FIRST_QUERY = "SELECT step, reward_mean, kl FROM steps ORDER BY step DESC"


def build(store: Store) -> None:
    named = gr.Dropdown(
        [(f"{name}: {description}", name) for name, (description, _) in NAMED_QUERIES.items()],
        label="named query (fills the box; edit it, then Run)",
        elem_id="named-query",
    )
    sql = gr.Textbox(FIRST_QUERY, lines=4, label="SQL (read-only)", elem_id="sql-input")
    with gr.Row():
        run = gr.Button("Run", variant="primary", elem_id="sql-run")
        download = gr.DownloadButton("Download CSV", interactive=False, elem_id="sql-download")
    message = gr.Markdown(elem_id="sql-message")
    result = gr.Dataframe(elem_id="sql-result")

    def query(text):
        try:
            outcome = run_sql(store, text)
        except SQLError as error:
            return f"**error:** {html.escape(str(error))}", None, gr.DownloadButton(value=None, interactive=False)
        path = Path(tempfile.mkdtemp(prefix="workbench-query-")) / "query.csv"  # one per query: sessions run at once
        outcome.frame.to_csv(path, index=False)
        return outcome.message, outcome.frame, gr.DownloadButton(value=str(path), interactive=True)

    named.change(named_sql, named, sql)
    run.click(query, sql, [message, result, download], api_name="query")
