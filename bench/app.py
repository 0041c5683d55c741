"""The app as a user meets it, measured in Debian's chromium: how long it takes to start, and how long a
scored group takes to reach the page.

    python bench/app.py [--rounds 3] [--steps 25]

Each round starts a fresh `python app.py` on a free port with a fresh workspace, in a fresh browser
context (chromium itself is launched once, before the first round, so its launch is not counted).

1. App start: seconds from launching the process to (a) the port answering HTTP 200 and (b) the page
   loaded in chromium with the reward editor visible.
2. Start -> first group: seconds from clicking Start to the first scored group on the page (the model
   loads, step 1 samples and scores).
3. Scored -> shown: the Train tab runs the tiny model (group size 4, 2 prompts per step, at most 8 new
   tokens) for --steps steps. A MutationObserver on the live group view notes, for every new step the page
   shows, `Date.now()` minus the server's `time.time()` when the trainer yielded that step's scored groups
   (`data-scored-at`; same machine, same clock). The view refreshes on a 0.5 s timer, so steps shorter than
   that are skipped and the delay is expected to be a few hundred ms.

Prints medians (with min-max) over the rounds; the delay's median, 90th percentile and max over every step
seen in every round. Needs chromium at /usr/bin/chromium and the playwright package (never
`playwright install`). The tiny model ships with the package, so a fresh machine needs no cache:
`WORKBENCH_CACHE=$(mktemp -d) python bench/app.py` measures what a new user sees.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from chromium import CHROMIUM, FLAGS, fill_stable  # noqa: E402  the browser test's helpers

CONFIG = {"group_size": 4, "prompts_per_step": 2, "max_new_tokens": 8}
OBSERVE = """() => {
    window.benchDelays = [];
    let last = 0;
    const note = () => {
        const el = document.querySelector('#live-group #live-step');
        const step = Number(el?.dataset.step);
        if (el && el.dataset.scoredAt && step > last) {
            last = step;
            window.benchDelays.push([step, Date.now() - Number(el.dataset.scoredAt)]);
        }
    };
    new MutationObserver(note).observe(document.querySelector('#live-group'),
        {childList: true, subtree: true, attributes: true, characterData: true});
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, workspace: Path, log) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, "app.py", "--port", str(port), "--workspace", str(workspace)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_http(url: str, app: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.poll() is not None:
            raise RuntimeError(f"the app exited with {app.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def scored_to_shown(page, steps: int, wait_for: int) -> tuple[float, list[tuple[int, float]]]:
    """Seconds from clicking Start to the first group on the page (the model loads in between), and
    (step, seconds from scored on the server to shown in the page) for each step the page showed."""
    page.get_by_role("tab", name="Train").click()
    for elem_id, value in [("steps", steps), *CONFIG.items()]:
        fill_stable(page, f"#{elem_id} input", str(value))
    page.evaluate(OBSERVE)
    clicked = time.perf_counter()
    page.click("#start-button")
    shown_step = "+document.querySelector('#live-group #live-step')?.dataset.step"
    page.wait_for_function(f"() => {shown_step} >= 1", timeout=180_000)
    first_group = time.perf_counter() - clicked
    page.wait_for_function(f"() => {shown_step} >= {wait_for}", timeout=180_000)
    delays = page.evaluate("window.benchDelays")
    page.click("#stop-button")
    return first_group, [(step, ms / 1000) for step, ms in delays]


def one_round(browser, steps: int, wait_for: int) -> tuple[float, float, float, list[tuple[int, float]]]:
    workspace = Path(tempfile.mkdtemp(prefix="bench-app-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    with open(workspace / "app.log", "wb") as log:
        started = time.perf_counter()
        app = start_app(port, workspace / "runs", log)
        try:
            wait_http(url, app)
            answered = time.perf_counter() - started
            page.goto(url)
            page.wait_for_selector("#reward-editor .cm-content", state="visible", timeout=60_000)
            shown = time.perf_counter() - started
            first_group, delays = scored_to_shown(page, steps, wait_for)
        except Exception:
            print(f"app log: {workspace / 'app.log'}", file=sys.stderr)
            raise
        finally:
            context.close()
            app.terminate()
            try:
                app.wait(timeout=30)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()
    shutil.rmtree(workspace, ignore_errors=True)  # kept, with the app's log, when the round failed
    return answered, shown, first_group, delays


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=25, help="steps per run; the page is watched up to step 20")
    args = parser.parse_args()
    wait_for = min(20, args.steps)
    answered, shown, first_groups, delays = [], [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        for k in range(args.rounds):
            a, s, f, d = one_round(browser, args.steps, wait_for)
            answered.append(a)
            shown.append(s)
            first_groups.append(f)
            delays.extend(d)
            seen = ", ".join(f"{step}:{ms * 1000:.0f}" for step, ms in d)
            print(f"round {k + 1}: HTTP 200 {a:.2f} s, editor {s:.2f} s, first group {f:.2f} s; step:delay ms {seen}")
        browser.close()
    late = sorted(seconds for _, seconds in delays)
    p90 = statistics.quantiles(late, n=10, method="inclusive")[-1] if len(late) > 1 else late[0]
    print(f"\n{args.rounds} rounds, tiny model, group size 4, 2 prompts per step, at most 8 new tokens")
    print(f"app start (python app.py -> HTTP 200):     {spread(answered)}")
    print(f"app start (-> editor visible in chromium): {spread(shown)}")
    print(f"Start clicked -> first group shown:        {spread(first_groups)}")
    print(
        f"group scored -> shown in browser:          median {statistics.median(late):.2f} s, p90 {p90:.2f} s, "
        f"max {late[-1]:.2f} s (n={len(late)} steps)"
    )


if __name__ == "__main__":
    main()
