"""Driving the app in Debian's chromium (playwright; never `playwright install`): used by the browser
test and by bench/app.py."""

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
