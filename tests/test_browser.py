"""The app driven in Debian's chromium: upload, edit and validate a reward, dry-run, train, watch, stop, query, reload.

Screenshots go to $WORKBENCH_SCREENSHOTS (default: the test's temporary folder).
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
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

pytestmark = pytest.mark.skipif(
    not shutil.which(CHROMIUM), reason=f"browser tests need Debian's chromium at {CHROMIUM}"
)


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


def set_code(page, text: str) -> None:
    """Replace the editor's text; retried because Gradio can reset a value typed right after load."""
    lines = "Array.from(document.querySelectorAll('#reward-editor .cm-line')).map(l => l.textContent).join('\\n')"
    for _ in range(20):
        page.click("#reward-editor .cm-content")
        page.keyboard.press("Control+A")
        page.keyboard.insert_text(text)
        page.wait_for_timeout(150)
        if page.evaluate(lines).rstrip("\n") == text.rstrip("\n"):
            return
    raise AssertionError("the editor did not keep the text")


def set_number(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input")
    for _ in range(20):
        box.fill(str(value))
        page.wait_for_timeout(150)
        if box.input_value() == str(value):
            return
    raise AssertionError(f"{elem_id} did not keep {value}")


def test_upload_edit_validate_dry_run_train_watch_stop_query_and_reload(page, tmp_path):
    shots = Path(os.environ.get("WORKBENCH_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    prompts = Path(tempfile.mkdtemp()) / "sums.jsonl"
    prompts.write_text(PROMPTS)
    page.locator("#prompt-upload input[type=file]").set_input_files(str(prompts))
    page.wait_for_function("() => document.querySelector('#data-message').innerText.includes('4 prompts')")

    set_code(page, BROKEN)
    page.click("#validate-button")
    page.wait_for_function("() => document.querySelector('#reward-message').innerText.includes('Not valid')")
    assert "correct (reward.py, line 1): its signature has no **kwargs" in page.inner_text("#reward-message")

    set_code(page, REWARD)
    page.click("#validate-button")
    page.wait_for_function("() => document.querySelector('#reward-message').innerText.includes('Valid:')")
    assert "reward functions correct, short" in page.inner_text("#reward-message")
    page.click("#dry-run-button")
    page.wait_for_function("() => document.querySelector('#dry-run-result').innerText.includes('groups without')")
    assert "12+30=" in page.inner_text("#dry-run-result")
    page.screenshot(path=str(shots / "task-and-reward.png"), full_page=True)

    page.get_by_role("tab", name="Train").click()
    for elem_id, value in [("steps", 500), ("group_size", 4), ("prompts_per_step", 2), ("max_new_tokens", 6)]:
        set_number(page, elem_id, value)
    page.click("#start-button")
    page.wait_for_function("() => +document.querySelector('#live-group #live-step')?.dataset.step >= 2", timeout=90_000)
    group = page.inner_text("#live-group")
    assert "advantage" in group and any(p.split("+")[0] in group for p in ("12", "25", "41", "33"))
    page.locator("#live-group").screenshot(path=str(shots / "live-group.png"))
    page.click("#stop-button")
    page.wait_for_function("() => document.querySelector('#run-status').innerText.includes('stopped')", timeout=60_000)

    page.get_by_role("tab", name="Explore").click()
    box = page.locator("#sql-input textarea")
    sql = "SELECT count(DISTINCT reward_version) AS versions, min(step) AS first FROM rollouts"
    for _ in range(20):
        box.fill(sql)
        page.wait_for_timeout(150)
        if box.input_value() == sql:
            break
    page.click("#sql-run")
    page.wait_for_selector("#sql-result [role=gridcell]")
    assert page.inner_text("#sql-message") == "1 row"
    assert page.locator("#sql-result [role=gridcell]").first.inner_text().strip() == "1"

    page.reload()
    page.get_by_role("tab", name="Train").click()
    page.wait_for_function("() => document.querySelector('#run-status').innerText.includes('run ')")
    assert "stopped" in page.inner_text("#run-status")  # the run lives in the server, not the page
