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


def fill_stable(page, selector: str, text: str) -> None:
    """Fill, wait, check, refill: Gradio can reset a value typed right after a page load or a tab's first showing."""
    box = page.locator(selector)
    for _ in range(20):
        box.fill(text)
        page.wait_for_timeout(150)
        if box.input_value() == text:
            return
    raise AssertionError(f"{selector} did not keep {text!r}")
