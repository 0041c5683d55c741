"""How long a step view of 16 groups x 8 completions takes to reach the screen, in Debian's chromium.

    python bench/step_view.py [--renders 15]

Trains a 3-step run of the tiny model on arithmetic (16 prompts x 8 completions a step, at most 16 new
tokens) in a fresh workspace, serves the app on it (`python app.py`), opens the Runs tab and measures:

1. server: `inspection.step_groups` (the query) and `step_views.step_groups_html` (the HTML), in this process.
2. render: the step view's HTML, as the app drew it, set into the page with innerHTML and laid out (a forced
   layout: reading the table's height), then to the next painted frame (two requestAnimationFrames).
3. pick -> shown: from typing a step in the step box to the page showing that step's groups: the browser's
   clock before the fill, and a MutationObserver's when the view's data-step changes (Gradio's round trip,
   the query, the HTML, its morph into the page and the layout).

Prints the median (min-max) of --renders of each. Needs chromium at /usr/bin/chromium and the playwright
package (never `playwright install`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from chromium import CHROMIUM, FLAGS, fill_stable  # noqa: E402  the browser test's helpers
from conftest import serve_app  # noqa: E402

from workbench import Config, RunStarted, Store, load_task, train  # noqa: E402
from workbench.store.inspection import step_groups  # noqa: E402
from workbench.ui import step_views  # noqa: E402

CONFIG = Config(prompts_per_step=16, group_size=8, steps=3, max_new_tokens=16)
OBSERVE = """() => {
    window.shown = [];
    const note = () => {
        const view = document.querySelector('#step-groups .step-groups');
        const step = view && +view.dataset.step;
        if (step && (window.shown.length === 0 || window.shown.at(-1)[0] !== step))
            window.shown.push([step, performance.now()]);
    };
    new MutationObserver(note).observe(document.querySelector('#step-groups'),
        {childList: true, subtree: true, attributes: true});
}"""
RENDER = """async (html) => {
    const host = document.createElement('div');
    document.querySelector('#step-groups').appendChild(host);
    const started = performance.now();
    host.innerHTML = html;
    host.querySelector('table').getBoundingClientRect();  // style and layout, now
    const laid_out = performance.now() - started;
    await new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
    const painted = performance.now() - started;
    host.remove();
    return [laid_out, painted];
}"""


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ms ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=15)
    args = parser.parse_args()
    workspace = Path(tempfile.mkdtemp(prefix="bench-step-view-"))
    events = list(train(CONFIG, load_task("arithmetic"), workspace))
    run_id = next(event.run_id for event in events if isinstance(event, RunStarted))
    store = Store(workspace, create=False)
    assert store.run(run_id)["status"] == "finished", store.run(run_id)

    query, render_html = [], []
    for k in range(args.renders):
        started = time.perf_counter()
        frame = step_groups(store, run_id, 1 + k % 3, sort_by="spread")
        query.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        page_html = step_views.step_groups_html(frame, 1 + k % 3, "spread")
        render_html.append((time.perf_counter() - started) * 1000)
    assert len(frame) == 16 and {len(r) for r in frame.rewards} == {8}

    with serve_app(workspace) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(url)
        page.get_by_role("tab", name="Runs").click()
        page.wait_for_selector("#step-groups .step-groups[data-step='3']", timeout=60_000)
        assert page.locator("#step-groups tr[data-group]").count() == 16
        fill_stable(page, "#run-step-picker input", "2")  # past Gradio's reset of a value typed right after load
        page.wait_for_selector("#step-groups .step-groups[data-step='2']")
        drawn = page.locator("#step-groups .step-groups").evaluate("el => el.outerHTML")
        laid_out, painted = zip(*(page.evaluate(RENDER, drawn) for _ in range(args.renders)))

        page.evaluate(OBSERVE)
        shown, current = [], 2
        for k in range(args.renders):
            step = [1, 3][k % 2] if current == 2 else 2
            before = page.evaluate("performance.now()")
            page.fill("#run-step-picker input", str(step))
            page.wait_for_function(f"() => window.shown.length && window.shown.at(-1)[0] === {step}", timeout=30_000)
            shown.append(page.evaluate("window.shown.at(-1)[1]") - before)
            current = step
            page.wait_for_timeout(200)  # the group view, asked for by the same input, lands too
        browser.close()

    print(f"step view: 16 groups x 8 completions, {len(drawn) / 1024:.1f} KiB of HTML; {args.renders} renders each")
    print(f"server: query {summary(query)}, HTML {summary(render_html)} (page of {len(page_html) / 1024:.1f} KiB)")
    print(f"render in chromium: laid out {summary(list(laid_out))}, next frame painted {summary(list(painted))}")
    print(f"pick a step -> its groups shown: {summary(shown)}")


if __name__ == "__main__":
    main()
