"""Which Chromium the browser tests drive (tests/chromium.py), and one clear skip where there is none.

What it proves: $WORKBENCH_CHROMIUM wins, and a path it names that is not there is a skip that says so rather
than a fall-back; Debian's chromium comes next, then a Chrome or Chromium on PATH, then the macOS apps; with
none, the reason says how to get one; a pytest run of a browser test file with no browser skips its tests
with that reason and says it in its last lines; and on a machine with Debian's chromium it is the one found
and playwright drives it.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from chromium import DEBIAN, ENV, find_chromium


def executable(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


def find(tmp_path, environ: dict, debian: str | None = None) -> tuple[str | None, str]:
    """find_chromium on a made-up machine: no Debian chromium unless given, no macOS apps, no playwright browser."""
    environ = {"PATH": str(tmp_path / "empty")} | environ
    return find_chromium(environ, debian=debian or str(tmp_path / "no-debian"), mac_roots=(), playwright=False)


def test_the_variable_wins_and_a_missing_path_it_names_is_a_skip_not_a_fall_back(tmp_path):
    chrome = executable(tmp_path / "my" / "chrome")
    debian = executable(tmp_path / "usr" / "bin" / "chromium")
    assert find(tmp_path, {ENV: chrome}, debian) == (chrome, f"${ENV}")
    found, reason = find(tmp_path, {ENV: str(tmp_path / "nowhere")}, debian)
    assert found is None and f"${ENV} is {tmp_path / 'nowhere'}" in reason and "not an executable" in reason


def test_debian_then_path_then_nothing_with_how_to_get_one(tmp_path):
    debian = executable(tmp_path / "usr" / "bin" / "chromium")
    on_path = executable(tmp_path / "bin" / "google-chrome")
    assert find(tmp_path, {"PATH": str(tmp_path / "bin")}, debian) == (debian, "Debian's chromium")
    assert find(tmp_path, {"PATH": str(tmp_path / "bin")}) == (on_path, "google-chrome on PATH")
    found, reason = find(tmp_path, {})
    assert found is None
    assert "apt-get install chromium" in reason and "playwright install chromium" in reason and ENV in reason


def test_the_macos_apps_are_looked_at(tmp_path):
    app = executable(tmp_path / "Applications" / "Google Chrome.app" / "Contents" / "MacOS" / "Google Chrome")
    environ = {"PATH": str(tmp_path / "empty")}
    found = find_chromium(environ, str(tmp_path / "no"), mac_roots=(str(tmp_path / "Applications"),), playwright=False)
    assert found[0] == app


@pytest.mark.slow
def test_a_browser_test_file_with_no_browser_skips_with_the_reason(tmp_path):
    """The test command on a machine with no browser: skipped tests and the reason, no errors."""
    env = os.environ | {ENV: str(tmp_path / "no-chrome"), "PATH": f"{Path(sys.executable).parent}{os.pathsep}/bin"}
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests/test_browser_inspection.py"],
        cwd=Path(__file__).parents[1],
        env=env,
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0, ran.stdout[-3000:]
    last = ran.stdout.strip().splitlines()[-2:]
    assert f"browser tests skipped: ${ENV} is {tmp_path / 'no-chrome'}" in last[0]
    assert "skipped" in last[1] and "error" not in last[1] and "passed" not in last[1], last


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(DEBIAN) or ENV in os.environ, reason="needs Debian's chromium, no override")
def test_debians_chromium_is_found_and_driven(browser):
    assert find_chromium(playwright=False) == (DEBIAN, "Debian's chromium")
    page = browser.new_page()
    page.set_content("<p id='said'>found</p>")
    assert page.inner_text("#said") == "found"
