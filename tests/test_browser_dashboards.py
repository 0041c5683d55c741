"""The Runs and Explore tabs as dashboards, driven in Debian's chromium in a 1280x900 window:

1. A fresh workspace shows no placeholder: one line says how runs get here, and no empty table, plot or picker
   is on the page (Runs, its Sweeps view, Explore).
2. Each of the Runs tab's views fits within 1.5 screens, the runs table with no horizontal scrolling and its
   numbers formatted (to the minute, 3 significant digits, "3/3").
3. Compare overlays a metric that is not a default one, of several runs, smoothed as the slider says (the
   drawn curve is `plots.ema` of the stored values); smoothing 0 draws the raw curves alone.
4. The token view opens shaded by log-prob (a shade that varies), says what the shade means, and shades by
   the measure picked; a click on a completion's card in the group opens it there.
5. A run is named and tagged (the table, the pickers and the store say so); deleting a run that trains is
   refused; deleting another removes its rows from every table and its folder.
6. Explore: the named query scoped to the run picked, the box always matching the dropdown, the tables and
   their columns, and a syntax error with DuckDB's caret under the right column (measured in pixels).

Screenshots of every view, with data and on an empty workspace, go to $WORKBENCH_SCREENSHOTS (default: the
test's temporary folder).
"""

import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from chromium import CHROMIUM, FLAGS, choose, fill_stable, wait_text
from conftest import serve_app
from test_browser_pages import trained

from workbench.config import Config
from workbench.plots import ema
from workbench.store.database import Store
from workbench.store.queries import NAMED_QUERIES, named_sql

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"browser tests need Debian's chromium at {CHROMIUM}"),
]

SCREEN = {"width": 1280, "height": 900}
FITS = 1.5 * SCREEN["height"]  # a view may scroll a little, never run on for pages
VIEWS = {  # each view of the Runs tab, and what shows once it has drawn
    "Overview": "#run-plot .js-plotly-plot",
    "Groups": "#run-group #live-step",
    "Tokens": "#token-view .token-view",
    "Before / after": "#before-after p",
    "Reward buckets": "#reward-buckets .reward-buckets",
    "Compare": "#compare-plot .js-plotly-plot",
    "Sweeps": "#sweep-plot .js-plotly-plot",
    "Export": "#export-trl",
}


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("WORKBENCH_SCREENSHOTS", tmp_path_factory.mktemp("shots")))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Oldest first: a sweep of 2 grid points x 2 seeds (steps only, as test_sweep stores them), a run that
    trains now (its process: this one), then two runs of the tiny model, the older with held-out evaluations."""
    path = tmp_path_factory.mktemp("workspace")
    store = Store(path)
    for beta in (0.0, 0.04):
        for seed in (0, 1):
            run_id = f"beta{beta}-seed{seed}"
            store.create_run(
                run_id, "t", "t", "tiny", Config(beta=beta, seed=seed).to_dict(), "", "sweep-b", {"beta": beta}
            )
            rows = [{"run_id": run_id, "step": k, "reward_mean": k * (seed + 1) / 10, "kl": k / 100} for k in (1, 2, 3)]
            store.write_steps([{"steps": rows}])
            store.set_status(run_id, "finished")
    store.create_run("training-now", "t", "t", "tiny", Config().to_dict(), "")  # 'running', by this live process
    older = trained(path)
    evals = [
        dict(run_id=older, step=s, num_prompts=4, num_generations=2, reward_mean=r, greedy_reward_mean=r,
             greedy_accuracy=r, pass_at_1=r, pass_at_k=min(1.0, 2 * r), seconds=0.1)
        for s, r in ((0, 0.25), (3, 0.5))
    ]  # fmt: skip
    store.write_steps([{"evals": evals}])
    newer = trained(path)
    return SimpleNamespace(path=path, store=store, older=older, newer=newer)


@pytest.fixture(scope="module")
def url(workspace):
    with serve_app(workspace.path) as url:
        yield url


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


def open_app(chromium, url: str, tab: str):
    page = chromium.new_page(viewport=SCREEN)
    page.goto(url)
    page.wait_for_selector("#reward-editor .cm-content")
    page.get_by_role("tab", name=tab, exact=True).click()
    return page


def view(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def height(page) -> int:
    return page.evaluate("document.body.scrollHeight")


def traces(page, plot: str) -> list[dict]:
    """A plot's traces as plotly drew them (`_fullData`: the numbers decoded from the figure's binary arrays)."""
    return page.locator(f"#{plot} .js-plotly-plot").evaluate(
        "el => el._fullData.map(t => ({name: t.name, meta: t.meta ?? null, y: Array.from(t.y), axis: t.xaxis}))"
    )


def pick_many(page, elem_id: str, label: str) -> None:
    """Add `label` to the multiselect `#elem_id`, as a user does: type the start of it, click the option, close the
    list (a click on the box while it has the focus does not open the list again)."""
    page.locator(f"#{elem_id} input").click()
    page.keyboard.type(label.split()[0])
    page.get_by_role("option", name=label, exact=True).click()
    page.keyboard.press("Escape")
    page.locator(f"#{elem_id} input").blur()
    page.wait_for_function(
        "([id, label]) => document.querySelector('#' + id).innerText.includes(label)", arg=[elem_id, label.split()[0]]
    )


def set_slider(page, elem_id: str, fraction: float) -> float:
    """Click the slider `#elem_id`'s track at `fraction` of its width, as a user does.  -> the value it took"""
    track = page.locator(f"#{elem_id} input[type=range]")
    box = track.bounding_box()
    page.mouse.click(box["x"] + box["width"] * fraction, box["y"] + box["height"] / 2)
    page.wait_for_timeout(300)
    return float(page.locator(f"#{elem_id} input[type=number]").input_value())


def test_a_fresh_workspace_shows_one_line_instead_of_empty_boxes(chromium, tmp_path, shots):
    with serve_app(tmp_path) as empty:
        page = open_app(chromium, empty, "Runs")
        wait_text(page, "#runs-note", "No runs yet")
        assert "Train" in page.inner_text("#runs-note")
        views = page.locator("#runs-views [role=tab]").all_inner_texts()
        assert [v.strip() for v in views] == ["Overview", "Sweeps"]  # the views of a run wait for one
        for hidden in ("#runs-table", "#run-plot", "#runs-open", "#run-summary", "#run-name"):
            assert not page.locator(hidden).is_visible(), hidden
        assert height(page) <= SCREEN["height"]
        page.screenshot(path=str(shots / "empty-runs.png"), full_page=True)

        view(page, "Sweeps")
        wait_text(page, "#sweep-note", "This workspace has none yet")
        for hidden in ("#sweep-open", "#sweep-table", "#sweep-plot", "#sweep-command"):
            assert not page.locator(hidden).is_visible(), hidden
        page.screenshot(path=str(shots / "empty-sweeps.png"), full_page=True)

        page.get_by_role("tab", name="Explore", exact=True).click()
        wait_text(page, "#sql-message", "No runs yet")
        assert page.locator("#sql-tables details[data-table='rollouts']").count() == 1
        for hidden in ("#sql-run-picker", "#sql-result"):
            assert not page.locator(hidden).is_visible(), hidden
        page.screenshot(path=str(shots / "empty-explore.png"), full_page=True)


def test_each_view_of_the_runs_tab_fits_a_screen(chromium, url, workspace, shots):
    page = open_app(chromium, url, "Runs")
    wait_text(page, "#run-summary", workspace.newer)
    page.wait_for_selector("#runs-table [role=gridcell]")
    heights = {}
    for name, drawn in VIEWS.items():
        view(page, name)
        page.wait_for_selector(drawn, timeout=60_000)
        page.wait_for_timeout(500)  # what else the view draws (a plot's layout, a table's rows)
        heights[name] = height(page)
        page.screenshot(path=str(shots / f"runs-{name.lower().replace(' / ', '-').replace(' ', '-')}.png"))
    print(f"page heights at 1280x900: {heights}")
    assert max(heights.values()) <= FITS, heights

    # the runs table: no horizontal scrolling, every cell's text whole but the settings, numbers formatted
    view(page, "Overview")
    page.wait_for_selector("#runs-table [role=gridcell]")
    scrolls = "Array.from(document.querySelectorAll('#runs-table *')).some(e => e.scrollWidth > e.clientWidth + 2"
    scrolls += " && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX))"
    assert not page.evaluate(scrolls)
    row = page.locator("#runs-table [role=row].virtual-row").first.locator("[role=gridcell]")
    cells = [cell.strip() for cell in row.all_inner_texts()]
    newest = workspace.store.runs().iloc[0]
    assert cells[0] == workspace.newer and cells[5:8] == ["finished", "3/3", f"{newest.reward_mean:.3g}"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", cells[8])  # to the minute
    cut = row.evaluate_all("cs => cs.slice(0, 9).map(c => c.scrollWidth > c.clientWidth + 1)")
    assert not any(cut), cells


def test_compare_overlays_a_metric_of_several_runs_smoothed_as_the_slider_says(chromium, url, workspace, shots):
    page = open_app(chromium, url, "Runs")
    wait_text(page, "#run-summary", workspace.newer)
    view(page, "Compare")
    page.wait_for_selector("#compare-plot .js-plotly-plot")
    overlaid = {t["name"] for t in traces(page, "compare-plot")}
    assert {workspace.newer, workspace.older} <= overlaid  # the newest runs, until the user picks
    pick_many(page, "compare-metrics", "entropy · entropy (per token)")
    pick_many(page, "compare-metrics", "eval/pass_at_k · held-out pass_at_k")
    weight = set_slider(page, "compare-smoothing", 0.85)
    assert 0.7 <= weight <= 0.99 and weight != 0.6  # moved from the default
    legend = "() => document.querySelector('#compare-plot .js-plotly-plot')?.layout.legend.title.text"
    try:
        page.wait_for_function(f"() => ({legend})().includes('EMA {weight:g}')")  # drawn with the weight picked
    except Exception:
        raise AssertionError(f"weight {weight}; legend {page.evaluate(legend)!r}") from None
    page.wait_for_timeout(500)
    shown = traces(page, "compare-plot")
    titles = page.locator("#compare-plot .js-plotly-plot").evaluate("el => el.layout.annotations.map(a => a.text)")
    assert titles == ["reward_mean", "KL to the reference", "entropy (per token)", "held-out pass_at_k"]
    for run_id in (workspace.newer, workspace.older):
        entropy = workspace.store.steps(run_id).entropy.tolist()
        raw, smoothed = [t for t in shown if t["name"] == run_id and t["axis"] == "x3"]
        assert (raw["meta"], smoothed["meta"]) == ("raw", "smoothed")
        assert raw["y"] == pytest.approx(entropy) and smoothed["y"] == pytest.approx(ema(entropy, weight), abs=1e-9)
    (held_out,) = [t for t in shown if t["axis"] == "x4"]  # the older run's evaluations, as measured
    assert held_out["name"] == workspace.older and held_out["y"] == [0.5, 1.0]
    page.screenshot(path=str(shots / "runs-compare-entropy.png"))

    view(page, "Overview")  # the run's own curves: smoothing 0 draws the raw values alone
    page.wait_for_selector("#run-plot .js-plotly-plot")
    assert "smoothed" in [t["meta"] for t in traces(page, "run-plot")]
    assert set_slider(page, "run-smoothing", 0.0) == 0
    page.wait_for_function(
        "() => !document.querySelector('#run-plot .js-plotly-plot')?.data.some(t => t.meta === 'smoothed')"
    )


def test_the_token_view_shades_by_the_measure_picked_and_a_card_click_opens_a_completion(
    chromium, url, workspace, shots
):
    page = open_app(chromium, url, "Runs")
    wait_text(page, "#run-summary", workspace.newer)
    view(page, "Groups")
    page.wait_for_selector("#run-group #live-step[data-step='3'][data-group='0']")
    page.locator("#run-group #live-step div[style*='grid-template-columns'] > div").nth(1).click()
    shown = "#token-view .token-view[data-step='3'][data-group='0'][data-completion='1']"
    page.wait_for_selector(f"{shown}[data-shade='logprob']")
    assert page.get_by_role("tab", name="Tokens", exact=True).get_attribute("aria-selected") == "true"
    assert page.input_value("#token-completion input") == "1"
    legend = page.inner_text("#token-view .token-legend")
    assert "log-prob" in legend and "the less likely the policy found the token" in legend
    backgrounds = "ss => ss.map(s => s.style.background)"
    tokens = workspace.store.token_view(workspace.newer, 3, 0, 1)
    shades = page.locator("#token-view span.token").evaluate_all(backgrounds)
    assert len(shades) == len(tokens) and len(set(shades)) > 1  # the default shade varies
    page.screenshot(path=str(shots / "runs-tokens-logprob.png"))

    page.locator("#token-shade").get_by_text("entropy").click()
    page.wait_for_selector(f"{shown}[data-shade='entropy']")
    assert "the less sure the sampler was" in page.inner_text("#token-view .token-legend")
    darkest = tokens.entropy.idxmax()
    alphas = page.locator("#token-view span.token").evaluate_all(
        "ss => ss.map(s => +getComputedStyle(s).backgroundColor.split(',')[3]?.replace(')', '') || 0)"
    )
    assert max(alphas) == alphas[darkest] == pytest.approx(0.8)
    page.locator("#token-shade").get_by_text("push (A x ratio)").click()
    page.wait_for_selector(f"{shown}[data-shade='contribution']")
    if tokens.contribution.nunique() == 1:  # one update per batch: the ratio is 1, and the view says so
        assert "Every token here has the same push" in page.inner_text("#token-view .token-legend")


def test_explore_scopes_the_named_query_to_the_run_picked_lists_the_tables_and_points_at_an_error(
    chromium, url, workspace, shots
):
    page = open_app(chromium, url, "Explore")
    box = "#sql-input textarea"
    page.wait_for_function(f"() => document.querySelector('{box}').value.includes('{workspace.newer}')")
    assert page.input_value(box) == named_sql("reward_per_step", workspace.newer)
    page.wait_for_selector("#sql-result [role=gridcell]")
    assert page.inner_text("#sql-message").startswith("3 rows")
    page.screenshot(path=str(shots / "explore.png"))

    choose(page, "sql-run-picker", workspace.older)
    page.wait_for_function(f"() => document.querySelector('{box}').value.includes(\"'{workspace.older}'\")")
    assert page.input_value(box) == named_sql("reward_per_step", workspace.older)
    label = f"no_signal_groups: {NAMED_QUERIES['no_signal_groups'][0]}"
    choose(page, "named-query", label)
    page.wait_for_function(f"() => document.querySelector('{box}').value.startsWith('WITH flat')")
    assert page.input_value(box) == named_sql("no_signal_groups", workspace.older)

    tables = page.locator("#sql-tables details").evaluate_all("ds => ds.map(d => d.dataset.table)")
    assert tables[:4] == ["runs", "steps", "rollouts", "reward_values"] and "tokens" in tables
    page.locator("#sql-tables details[data-table='steps'] summary").click()
    assert "reward_mean DOUBLE" in page.inner_text("#sql-tables details[data-table='steps']")

    fill_stable(page, box, "SELECT step FROM FROM steps")
    page.wait_for_function("() => document.querySelector('#named-query input').value.startsWith('your own SQL')")
    page.click("#sql-run")
    page.wait_for_selector("#sql-message pre.sql-error")
    page.wait_for_selector("#sql-result", state="hidden")  # no grid of the query before
    # DuckDB's caret stands under the second FROM: the same x on the page, in a monospace font
    x = page.locator("#sql-message pre.sql-error").evaluate(
        """pre => {
            const text = pre.firstChild, at = (i) => {
                const range = document.createRange(); range.setStart(text, i); range.setEnd(text, i + 1);
                return range.getBoundingClientRect().x;
            };
            const line = text.data.indexOf('LINE 1:');
            return [at(text.data.indexOf('FROM steps', line)), at(text.data.indexOf('^', line))];
        }"""
    )
    assert x[0] == pytest.approx(x[1], abs=1)
    page.screenshot(path=str(shots / "explore-error.png"))


def test_a_run_is_named_tagged_and_deleted_and_one_that_trains_is_not(chromium, url, workspace, shots):
    store, run_id = workspace.store, workspace.newer
    page = open_app(chromium, url, "Runs")
    wait_text(page, "#run-summary", run_id)
    fill_stable(page, "#run-name :is(input, textarea)", "baseline, beta 0.04")
    fill_stable(page, "#run-tags :is(input, textarea)", "demo, beta , demo")
    page.click("#run-save")
    wait_text(page, "#run-manage-message", "Saved")
    assert (store.run(run_id)["name"], store.run(run_id)["tags"]) == ("baseline, beta 0.04", ["demo", "beta"])
    wait_text(page, "#runs-table", "baseline, beta 0.04")
    assert "demo, beta" in page.inner_text("#runs-table") and "baseline, beta 0.04" in page.inner_text("#run-summary")
    assert page.input_value("#runs-open input") == f"baseline, beta 0.04 · {run_id}"
    page.screenshot(path=str(shots / "runs-named.png"))

    choose(page, "runs-open", "training-now")
    wait_text(page, "#run-summary", "training-now")
    page.click("#run-delete")
    page.click("#run-delete-confirm")
    wait_text(page, "#run-manage-message", "Not deleted")
    assert "training-now is training now" in page.inner_text("#run-manage-message")
    assert store.run("training-now") is not None

    choose(page, "runs-open", f"baseline, beta 0.04 · {run_id}")
    wait_text(page, "#run-summary", run_id)
    folder = workspace.path / "runs" / run_id
    assert (folder / "checkpoint").is_dir()
    page.click("#run-delete")
    wait_text(page, "#run-delete-question", "cannot be undone")
    page.screenshot(path=str(shots / "runs-delete-question.png"))
    page.click("#run-delete-confirm")
    wait_text(page, "#run-manage-message", f"Deleted run {run_id}")
    for table in ("runs", "steps", "rollouts", "reward_values", "tokens", "reward_logs", "evals", "health"):
        assert store.query(f"SELECT count(*) AS n FROM {table} WHERE run_id = $1", [run_id]).n[0] == 0, table
    assert not folder.exists()
    wait_text(page, "#run-summary", workspace.older)  # the tab goes on with the newest run left
    assert run_id not in page.inner_text("#runs-table")
