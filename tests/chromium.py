"""Driving the app in a headless Chromium through playwright: used by the browser tests and by bench/app.py.

Which Chromium: `find_chromium` looks in this order, and the first one found is `CHROMIUM`:
1. $WORKBENCH_CHROMIUM, when set (and only it: a path that is not there is a skip, not a fall-back);
2. Debian's chromium, /usr/bin/chromium (`apt-get install chromium`; what CI uses);
3. Chromium or Google Chrome on PATH (chromium, chromium-browser, google-chrome, google-chrome-stable, chrome);
4. Google Chrome or Chromium in /Applications or ~/Applications (macOS);
5. playwright's own, after `playwright install chromium`.
With none, `MISSING` says why, and conftest.py skips every browser test with that one reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ENV = "WORKBENCH_CHROMIUM"
DEBIAN = "/usr/bin/chromium"
ON_PATH = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
MAC_APPS = ("Google Chrome.app/Contents/MacOS/Google Chrome", "Chromium.app/Contents/MacOS/Chromium")
MAC_ROOTS = ("/Applications", "~/Applications")
HOW_TO_GET_ONE = (
    "install one (Debian/Ubuntu: apt-get install chromium; elsewhere: playwright install chromium) "
    f"or set {ENV}=/path/to/chrome"
)


def find_chromium(
    environ=os.environ, debian: str = DEBIAN, mac_roots=MAC_ROOTS, playwright: bool = True
) -> tuple[str | None, str]:
    """(the browser's path, where it was found), or (None, why there is none and how to get one)."""
    chosen = environ.get(ENV)
    if chosen:
        if _runnable(chosen):
            return chosen, f"${ENV}"
        return None, f"${ENV} is {chosen}, which is not an executable file: point it to a Chromium or Chrome binary"
    if _runnable(debian):
        return debian, "Debian's chromium"
    for name in ON_PATH:
        found = shutil.which(name, path=environ.get("PATH", ""))
        if found:
            return found, f"{name} on PATH"
    for root in mac_roots:
        for app in MAC_APPS:
            path = Path(root).expanduser() / app
            if _runnable(str(path)):
                return str(path), str(Path(root) / app.split("/")[0])
    own = _playwrights_own() if playwright else None
    if own:
        return own, "playwright's own (playwright install chromium)"
    looked = [debian, f"PATH ({', '.join(ON_PATH)})", *(str(Path(r) / "<Chrome|Chromium>.app") for r in mac_roots)]
    return None, f"no Chromium found (looked at {', '.join(looked)}, playwright's own): {HOW_TO_GET_ONE}"


def _runnable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _playwrights_own() -> str | None:
    """The Chromium `playwright install chromium` downloads, when it has been."""
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            path = playwright.chromium.executable_path
    except Exception:  # no playwright package, or its driver cannot start: no browser from it either
        return None
    return path if _runnable(path) else None


FOUND, WHERE = find_chromium()
MISSING = None if FOUND else WHERE  # why the browser tests skip, or None
# A path either way: where none was found, the one that was asked for (or Debian's), so that a test's own
# `skipif(not shutil.which(CHROMIUM))` is true as well.
CHROMIUM = FOUND or os.environ.get(ENV) or DEBIAN
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


def wait_text(page, selector: str, text: str, timeout: float = 60_000) -> None:
    """Wait until `selector` shows `text`; on a time-out, say what it showed instead."""
    from playwright.sync_api import TimeoutError

    try:
        page.wait_for_function(
            "([s, t]) => document.querySelector(s)?.innerText.includes(t)", arg=[selector, text], timeout=timeout
        )
    except TimeoutError:
        shown = page.locator(selector).inner_text() if page.locator(selector).count() else "(no such element)"
        waited = f"{selector} never showed {text!r} in {timeout / 1000:.0f} s"
        raise AssertionError(f"{waited}; it shows {shown!r}") from None


def choose(page, elem_id: str, value: str | None = None) -> str:
    """Pick `value` (None: the first option) from the dropdown `#elem_id` as a user does: open it, click the
    option. Reopened when the click fails: a list opened while the tab still draws stays where it opened, and
    what the tab draws above can move the dropdown away from it (the option ends up under another element or
    outside the viewport)."""
    from playwright.sync_api import TimeoutError

    selector = f"#{elem_id} input"
    box = page.locator(selector)
    option = page.get_by_role("option").first if value is None else page.get_by_role("option", name=value, exact=True)
    for _ in range(5):
        box.click()
        try:
            name = option.get_attribute("aria-label", timeout=5_000)
            option.click(timeout=5_000)
            page.wait_for_function(
                "([s, v]) => document.querySelector(s)?.value === v", arg=[selector, name], timeout=5_000
            )
            return name
        except TimeoutError:
            box.blur()  # closes the list, after its closing animation: only then does a click open a new one
            page.wait_for_function("() => !document.querySelector('[role=option]')")
    raise AssertionError(f"#{elem_id} never took {value or 'its first option'!r}")


def fill_stable(page, selector: str, text: str) -> None:
    """Fill, wait, check, refill: Gradio can reset a value typed right after a page load or a tab's first showing."""
    box = page.locator(selector)
    for _ in range(20):
        box.fill(text)
        page.wait_for_timeout(150)
        if box.input_value() == text:
            return
    raise AssertionError(f"{selector} did not keep {text!r}")


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


def assert_tokens_shown(page, view: str, tokens) -> None:
    """The token view `#view` shows `tokens` (`Store.token_view`'s frame): a span per token, its numbers as stored."""
    import pytest

    spans = page.locator(f"#{view} span.token")
    assert spans.count() == len(tokens) > 0
    for column in ("logprob", "ref_logprob", "ratio", "kl", "entropy", "contribution"):
        shown = spans.evaluate_all(f"s => s.map(t => JSON.parse(t.getAttribute('data-{column.replace('_', '-')}')))")
        assert shown == pytest.approx(tokens[column].tolist(), abs=1e-6), column
