"""The app driven in Debian's chromium: upload, edit and validate a reward, dry-run, train, watch, stop, query, reload.

Screenshots go to $WORKBENCH_SCREENSHOTS (default: the test's temporary folder).
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from chromium import CHROMIUM, FLAGS, choose, fill_stable, set_code, wait_text

PROMPTS = "".join(
    f'{{"prompt": "{a}+{b}=", "answer": "{a + b}"}}\n' for a, b in [(12, 30), (25, 25), (41, 17), (33, 9)]
)
REWARD = (
    "def correct(completions, answer, **kwargs):\n"
    "    return [1.0 if c.strip() == a else 0.0 for c, a in zip(completions, answer)]\n"
    "\n"
    "def short(completions, **kwargs):\n"
    "    return [-0.01 * len(c) for c in completions]\n"
)
BROKEN = "def correct(completions):\n    return [0.0] * len(completions)\n"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"browser tests need Debian's chromium at {CHROMIUM}"),
]


@pytest.fixture
def page(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(app_url)
        page.wait_for_selector("#reward-editor .cm-content")
        yield page
        browser.close()


def zoom_first_panel(page) -> list[float]:
    """Drag across the first panel of the live curves, as a user zooms; the x range it zoomed to.

    Retried: a redraw that lands in the middle of the drag cancels it, as it would a user's, and a panel
    caught while the plot remounts has no box yet."""
    plot = page.locator("#reward-plot .js-plotly-plot")
    for _ in range(20):
        box = page.locator("#reward-plot .nsewdrag").first.bounding_box()
        if box is None:
            page.wait_for_timeout(200)
            continue
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] * 0.2, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.6, y + 5, steps=3)
        page.mouse.up()
        page.wait_for_timeout(300)
        if plot.evaluate("el => el.layout.xaxis.autorange === false"):
            return plot.evaluate("el => el.layout.xaxis.range")
    raise AssertionError("the live curves could not be zoomed")


def test_the_whole_flow_from_upload_to_query_runs_and_reload(page, tmp_path):
    shots = Path(os.environ.get("WORKBENCH_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp())
    (folder / "bad.jsonl").write_text('{"prompt": "1+1=", "answer": "2"}\n{"prompt": 3}\n')
    page.locator("#prompt-upload input[type=file]").set_input_files(str(folder / "bad.jsonl"))
    wait_text(page, "#data-message", "Upload refused")
    assert "bad.jsonl, line 2: the prompt must be a string or a list of chat messages" in page.inner_text(
        "#data-message"
    )
    (folder / "sums.jsonl").write_text(PROMPTS)
    page.locator("#prompt-upload input[type=file]").set_input_files(str(folder / "sums.jsonl"))
    wait_text(page, "#data-message", "4 prompts")

    set_code(page, BROKEN)
    page.click("#validate-button")
    wait_text(page, "#reward-message", "Not valid")
    assert "correct (reward.py, line 1): its signature has no **kwargs" in page.inner_text("#reward-message")
    set_code(page, REWARD)
    page.click("#validate-button")
    wait_text(page, "#reward-message", "Valid:")
    assert "reward functions correct, short" in page.inner_text("#reward-message")
    page.click("#dry-run-button")
    wait_text(page, "#dry-run-result", "groups without")
    assert "12+30=" in page.inner_text("#dry-run-result")
    page.screenshot(path=str(shots / "task-and-reward.png"), full_page=True)

    page.get_by_role("tab", name="Train").click()
    for elem_id, value in [("steps", 500), ("group_size", 4), ("prompts_per_step", 2), ("max_new_tokens", 6)]:
        fill_stable(page, f"#{elem_id} input", str(value))
    page.click("#start-button")
    wait_text(page, "#train-message", "Started with reward version")
    page.wait_for_function("() => +document.querySelector('#live-group #live-step')?.dataset.step >= 3", timeout=90_000)
    group = page.inner_text("#live-group")
    assert "advantage" in group and "group mean reward" in group and "correct" in group and "short" in group
    assert any(p.split("+")[0] in group for p in ("12", "25", "41", "33"))
    assert "A = " in page.inner_text("#advantage-explanation") or "no learning" in group
    page.locator("#live-group").screenshot(path=str(shots / "live-group.png"))
    page.screenshot(path=str(shots / "train.png"), full_page=True)
    assert page.locator("#reward-plot .js-plotly-plot").evaluate("el => el.data.length") >= 8
    zoomed = zoom_first_panel(page)
    step = int(page.locator("#live-group #live-step").get_attribute("data-step"))
    page.wait_for_function(
        f"() => +document.querySelector('#live-group #live-step')?.dataset.step >= {step + 2}", timeout=60_000
    )
    plot = page.locator("#reward-plot .js-plotly-plot")
    assert plot.evaluate("el => el._fullData[2].x.length") >= step + 1  # the curves were redrawn with new steps
    assert plot.evaluate("el => el.layout.xaxis.range") == zoomed  # and kept the user's zoom
    page.click("#start-button")  # one run at a time
    wait_text(page, "#train-message", "one run trains at a time")

    fill_stable(page, "#live-step-picker input", "1")  # look back: following stops
    page.wait_for_function("() => document.querySelector('#live-group #live-step')?.dataset.step === '1'")
    assert not page.locator("#live-follow input").is_checked()
    page.click("#stop-button")
    wait_text(page, "#run-status", "stopped", timeout=60_000)

    page.get_by_role("tab", name="Explore").click()
    wait_text(page, "#sql-message", "rows")  # the tab opens on the run's named query, run at once
    sql = "SELECT count(DISTINCT reward_version) AS versions, min(step) AS first FROM rollouts"
    fill_stable(page, "#sql-input textarea", sql)
    page.click("#sql-run")
    page.wait_for_function("() => document.querySelector('#sql-message')?.innerText.trim() === '1 row'")
    assert page.locator("#sql-result [role=gridcell]").first.inner_text().strip() == "1"
    with page.expect_download() as download:
        page.click("#sql-download")
    assert Path(download.value.path()).read_text().splitlines() == ["versions,first", "1,1"]
    fill_stable(page, "#sql-input textarea", "SELECT nothing FROM nowhere")
    page.click("#sql-run")
    wait_text(page, "#sql-message", "error:")
    assert "nowhere" in page.inner_text("#sql-message")

    page.get_by_role("tab", name="Runs").click()
    page.wait_for_selector("#runs-table [role=gridcell]")
    assert "sums" in page.inner_text("#runs-table") and "stopped" in page.inner_text("#runs-table")
    choose(page, "runs-open")
    page.wait_for_selector("#run-plot .js-plotly-plot")
    page.get_by_role("tab", name="Groups", exact=True).click()  # the Runs tab's view of the opened run's groups
    wait_text(page, "#run-group", "group mean reward")
    page.screenshot(path=str(shots / "runs.png"), full_page=True)

    page.reload()
    page.get_by_role("tab", name="Train").click()
    wait_text(page, "#run-status", "run ")
    assert "stopped" in page.inner_text("#run-status")  # the run lives in the server, not the page


def test_the_estimator_and_its_knobs_from_the_form(page, tmp_path):
    """PPO's critic chosen in the form: refused with group scaling (the message names both fields), then
    trained with none, and its group explained by the critic's values."""
    page.get_by_role("tab", name="Train").click()
    for elem_id, value in [("steps", 3), ("group_size", 4), ("prompts_per_step", 2), ("max_new_tokens", 6)]:
        fill_stable(page, f"#{elem_id} input", str(value))
    page.get_by_text("All settings").click()
    choose(page, "advantage_estimator", "ppo")
    fill_stable(page, "#gae_lambda input", "0.9")
    page.click("#start-button")
    wait_text(page, "#train-message", "scale_rewards")
    assert "'ppo'" in page.inner_text("#train-message")
    choose(page, "scale_rewards", "none")
    page.click("#start-button")
    wait_text(page, "#train-message", "Started with reward version")
    wait_text(page, "#run-status", "finished", timeout=90_000)
    wait_text(page, "#advantage-explanation", "critic")
    assert "GAE with lambda 0.9" in page.inner_text("#advantage-explanation")
    page.screenshot(path=str(tmp_path / "ppo.png"), full_page=True)
