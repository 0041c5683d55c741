import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests never download: a hub id must fail at once rather than after network retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


APP = os.path.join(os.path.dirname(__file__), "..", "app.py")


@contextmanager
def serve_app(workspace):
    """`python app.py` on a free port for `workspace`, until the block ends.  -> its URL"""
    with app_process(workspace) as (url, _):
        yield url


@contextmanager
def app_process(workspace):
    """`serve_app`, with the server's process too (to read its memory).  -> (its URL, the process)"""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen(
        [sys.executable, APP, "--port", str(port), "--workspace", str(workspace)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    try:
        yield f"http://127.0.0.1:{port}/", process
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def app_url(tmp_path):
    with serve_app(tmp_path) as url:
        yield url


def pytest_collection_modifyitems(config, items):
    """Where no Chromium is found, every browser test (marked `browser`, or using the fixture) skips with the one
    reason chromium.py gives, said once more at the end of the run."""
    needing = [
        item for item in items if item.get_closest_marker("browser") or "browser" in getattr(item, "fixturenames", ())
    ]
    if not needing:
        return  # chromium.py is not even imported: finding a browser can start playwright
    from chromium import MISSING

    if MISSING:
        config.browser_missing = (len(needing), MISSING)
        for item in needing:  # in front of the tests' own skipif, so that this reason is the one reported
            item.add_marker(pytest.mark.skipif(True, reason=MISSING), append=False)


def pytest_terminal_summary(terminalreporter, config):
    if hasattr(config, "browser_missing"):
        count, reason = config.browser_missing
        terminalreporter.write_line(f"{count} browser tests skipped: {reason}", yellow=True)


@pytest.fixture
def browser():
    """A headless Chromium (the one chromium.py found), through playwright."""
    from chromium import CHROMIUM, FLAGS
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()
