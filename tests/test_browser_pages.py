"""Pages that are quiet while nothing trains and never blank while the store holds runs, in Debian's chromium.

1. An idle Train tab sends (nearly) no requests (it made 40 in 10 s when its timer always ticked), nor
   does a refused Start; a started run still draws its steps live and its final status, and then the page
   goes quiet again; a page hidden in the background does not poll.
2. An app restarted on a workspace that holds runs opens on the newest: the Runs tab and the Train tab
   show its status, curves and latest group with the store's numbers, and Resume goes on with the run
   that stopped early.
3. The health banner names no_signal, what it saw and what to try, for a run whose reward is always 1
   (live in the Train tab, and stored in the Runs tab), and is empty on a healthy run.

Screenshots go to $WORKBENCH_SCREENSHOTS (default: the test's temporary folder).
"""

import os
import re
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from chromium import CHROMIUM, assert_tokens_shown, choose, fill_stable, set_code, wait_text
from conftest import serve_app

from workbench.config import Config
from workbench.engine.trainer import train
from workbench.events import RunStarted, StepFinished
from workbench.rewards.scoring import RewardSource
from workbench.rewards.tasks import load_task
from workbench.store import health
from workbench.store.database import Store

ALWAYS_ONE = "def always_one(completions, **kwargs):\n    return [1.0 for _ in completions]\n"
IDLE_SECONDS = 10

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"browser tests need Debian's chromium at {CHROMIUM}"),
]


def open_page(browser, url: str):
    """A page on the app, with `page.requests`: the URLs it asked the app for, in order."""
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.requests = []
    page.on("request", lambda request: page.requests.append(request.url) if request.url.startswith(url) else None)
    page.goto(url)
    page.wait_for_selector("#reward-editor .cm-content")
    return page


def requests_during(page, seconds: float) -> list[str]:
    before = len(page.requests)
    page.wait_for_timeout(seconds * 1000)
    return page.requests[before:]


def quiet(page, seconds: float = 1, timeout: float = 30) -> None:
    """Wait until the page has asked nothing for `seconds`."""
    for _ in range(int(timeout / seconds)):
        if not requests_during(page, seconds):
            return
    raise AssertionError(f"the page never went quiet for {seconds} s")


def live_step(page) -> int:
    return int(page.locator("#live-group #live-step").get_attribute("data-step"))


def wait_live_step(page, above: int, timeout: float = 90_000) -> None:
    page.wait_for_function(
        f"() => +document.querySelector('#live-group #live-step')?.dataset.step > {above}", timeout=timeout
    )


def set_hidden(page, hidden: bool) -> None:
    """What the browser reports when the user switches to another tab (headless chromium never does)."""
    if hidden:
        page.evaluate("Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true})")
    else:
        page.evaluate("delete document.visibilityState")
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")


def reward_curve(page, plot: str) -> list[float]:
    """The raw 'reward mean' line of a training_curves plot, as plotly drew it (the first trace of that name: the
    smoothed one is drawn over it)."""
    return page.locator(f"#{plot} .js-plotly-plot").evaluate(
        "el => Array.from(el._fullData.find(t => t.name === 'reward mean').y)"
    )


def test_an_idle_page_is_quiet_and_a_run_is_followed_live_to_its_end(browser, app_url, tmp_path):
    page = open_page(browser, app_url)
    page.get_by_role("tab", name="Train").click()
    wait_text(page, "#run-status", "idle")
    page.wait_for_selector("#reward-plot .js-plotly-plot")  # drawn once, its script loaded
    idle = requests_during(page, IDLE_SECONDS)
    print(f"an idle Train tab asked the app {len(idle)} times in {IDLE_SECONDS} s: {idle}")
    assert len(idle) <= 1

    # a refused Start does not poll: its tick, answered after the next Start's, turned the timer off under
    # that run, and the page said "idle" for the whole run
    page.get_by_role("tab", name="Task & reward").click()
    set_code(page, "def broken(:\n")
    page.get_by_role("tab", name="Train").click()
    quiet(page)  # the tab's own drawing done
    before = len(page.requests)
    page.click("#start-button")
    wait_text(page, "#train-message", "syntax error")
    page.wait_for_timeout(3000)
    events = [url for url in page.requests[before:] if "/queue/join" in url]
    assert len(events) <= 2, events  # Start, and its check whether a run started

    page.get_by_role("tab", name="Task & reward").click()
    set_code(page, ALWAYS_ONE)  # every group's rewards are equal: no_signal fires after step 5
    page.get_by_role("tab", name="Train").click()
    for elem_id, value in [("steps", 2000), ("group_size", 4), ("prompts_per_step", 2), ("max_new_tokens", 4)]:
        fill_stable(page, f"#{elem_id} input", str(value))
    page.click("#start-button")
    wait_text(page, "#train-message", "Started with reward version")
    wait_live_step(page, 1)
    wait_text(page, "#run-health", "no_signal")
    banner = page.inner_text("#run-health")
    assert "had rewards all equal" in banner and "Try:" in banner and "group_size" in banner
    wait_live_step(page, live_step(page))  # the steps go on being drawn
    assert len(requests_during(page, 2)) >= 2  # by polling

    set_hidden(page, True)
    page.wait_for_timeout(1000)  # a tick under way when the page was hidden ends
    hidden = requests_during(page, 3)
    set_hidden(page, False)
    print(f"a hidden page asked {len(hidden)} times in 3 s while its run trained")
    assert len(hidden) <= 1
    wait_live_step(page, live_step(page))

    page.click("#stop-button")
    wait_text(page, "#run-status", "stopped")
    status = page.inner_text("#run-status")
    run_id, step = re.search(r"run (\S+) · step (\d+)/2000", status).groups()
    assert int(step) == int(Store(tmp_path, create=False).steps(run_id).step.max())  # the final state, drawn
    # the last step's group 0, its first completion token by token: stored once the step ended, then drawn
    page.wait_for_selector(f"#live-token-view .token-view[data-step='{step}'][data-group='0'][data-completion='0']")
    assert_tokens_shown(page, "live-token-view", Store(tmp_path, create=False).token_view(run_id, int(step), 0, 0))
    ended = requests_during(page, 5)
    print(f"after the run ended the page asked {len(ended)} times in 5 s")
    assert len(ended) <= 1


def trained(workspace, reward: str | None = None, stop_after: int | None = None, steps: int = 3) -> str:
    """A run of the tiny model on arithmetic, trained here; stopped after `stop_after` steps if given."""
    task = load_task("arithmetic")
    if reward:
        task = task.with_rewards(RewardSource(reward))
    stop = threading.Event()
    config = Config(prompts_per_step=4, group_size=4, steps=steps, precision="fp32")
    for event in train(config, task, workspace, stop=stop):
        if isinstance(event, RunStarted):
            run_id = event.run_id
        if isinstance(event, StepFinished) and event.step == stop_after:
            stop.set()
    return run_id


@pytest.fixture
def workspace(tmp_path):
    """Three runs, oldest first: a reward that is always 1, a healthy run stopped after step 2, a healthy run."""
    runs = SimpleNamespace(
        no_signal=trained(tmp_path, ALWAYS_ONE, steps=health.WINDOW),  # no_signal looks at a window of steps
        stopped=trained(tmp_path, stop_after=2),
        finished=trained(tmp_path),
    )
    store = Store(tmp_path, create=False)
    assert store.runs().status.tolist() == ["finished", "stopped", "finished"]
    return SimpleNamespace(path=tmp_path, store=store, **vars(runs))


def test_a_restarted_app_opens_on_the_newest_run_with_its_health(browser, workspace):
    store, run_id = workspace.store, workspace.finished
    steps = store.steps(run_id)
    group = store.group(run_id, 3, 0)
    group_mean = sum(group.rewards) / len(group.rewards)
    with serve_app(workspace.path) as url:
        page = open_page(browser, url)

        page.get_by_role("tab", name="Runs").click()
        wait_text(page, "#run-summary", run_id)  # opened without picking it
        assert f"{run_id} · finished" in page.inner_text("#run-summary")
        assert "3 steps stored" in page.inner_text("#run-summary")
        page.wait_for_selector("#run-plot .js-plotly-plot")
        assert reward_curve(page, "run-plot") == pytest.approx(steps.reward_mean.tolist())
        page.get_by_role("tab", name="Groups", exact=True).click()
        wait_text(page, "#run-group", "step 3, group 0")
        assert f"group mean reward {group_mean:.2f}" in page.inner_text("#run-group")
        assert not page.locator("#runs-health").is_visible()  # a healthy run: no banner

        choose(page, "runs-open", workspace.no_signal)
        wait_text(page, "#run-summary", workspace.no_signal)
        wait_text(page, "#runs-health", "no_signal")
        assert "had rewards all equal" in page.inner_text("#runs-health")
        assert page.locator("#runs-health .health-banner").get_attribute("data-checks") == "no_signal"
        shots = Path(os.environ.get("WORKBENCH_SCREENSHOTS", workspace.path))
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "runs-health.png"), full_page=True)

        page.get_by_role("tab", name="Train").click()
        wait_text(page, "#run-status", run_id)
        status = page.inner_text("#run-status")
        assert status.startswith(f"finished · run {run_id} · step 3/3")
        assert f"reward {steps.reward_mean.iloc[-1]:.3f}" in status
        assert f"Resume goes on with run {workspace.stopped}" in status
        page.wait_for_selector("#reward-plot .js-plotly-plot")
        assert reward_curve(page, "reward-plot") == pytest.approx(steps.reward_mean.tolist())
        assert live_step(page) == 3 and f"group mean reward {group_mean:.2f}" in page.inner_text("#live-group")
        assert page.inner_text("#run-health").strip() == ""
        assert len(requests_during(page, 3)) <= 1  # a stored run: nothing to poll

        page.click("#resume-button")
        wait_text(page, "#train-message", f"Resuming {workspace.stopped}")
        wait_text(page, "#run-status", f"finished · run {workspace.stopped} · step 3/3")
        assert reward_curve(page, "reward-plot") == pytest.approx(store.steps(workspace.stopped).reward_mean.tolist())
