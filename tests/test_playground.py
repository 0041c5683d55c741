"""The playground: a run keeps the adapter of every checkpoint step; `generate` (the CLI command and the app's tab)
shows the base model's and an adapter's completions of a prompt side by side, with the run's rewards.

1. A 3-step tiny run with checkpoint_every=1 keeps adapters at steps 1, 2, 3 (peft's format, the LoRA weights
   only); step 2's equals, tensor for tensor, what the checkpoint held after step 2; peft loads it.
2. `python -m workbench generate` prints both sides; the adapter's completions differ from the base model's on
   the same random draws (and so do their log-probs); every printed reward is what the task's reward gives when
   recomputed; step 0 samples the base model alone, the same completions as the base side.
3. Refusals name the problem: no such run, a step without a kept adapter (naming the kept ones), an empty prompt;
   `generate --help` loads no torch.
4. A typed prompt of a chat run becomes a user message; a task prompt brings its columns.
5. The Playground tab in chromium: pick the run and a step, type a prompt, Generate: both sides, each completion
   with its reward function's value and its reward, the numbers the engine gives. Screenshot: playground.png in
   $WORKBENCH_SCREENSHOTS (default: the test's temporary folder).
"""

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from chromium import CHROMIUM
from safetensors.torch import load_file

from workbench.cli import main
from workbench.config import Config
from workbench.engine.checkpoint import ADAPTER_FILES, adapter_folder, adapter_steps, checkpoint_folder
from workbench.engine.playground import RunPrompts, generate
from workbench.engine.trainer import train
from workbench.events import GroupsScored, RunFinished
from workbench.rewards.scoring import Scorer
from workbench.rewards.tasks import load_task

PROMPT = "17+22="  # a training prompt of the arithmetic task (answer 39) on which 3 steps visibly change the model
# lr 5e-3 (10x the default) so that 3 steps move the tiny model enough to change what it samples
CONFIG = Config(steps=3, checkpoint_every=1, group_size=8, prompts_per_step=8, max_new_tokens=8, learning_rate=5e-3)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The trained run: (workspace, run_id, the checkpoint's adapter tensors and step as they were after step 2)."""
    workspace = tmp_path_factory.mktemp("playground")
    after_two = None
    for event in train(CONFIG, load_task("arithmetic"), workspace=workspace):
        if isinstance(event, GroupsScored) and event.step == 3:  # step 2 is recorded and checkpointed by now
            folder = checkpoint_folder(workspace, event.run_id)
            state = torch.load(folder / "trainer_state.pt", weights_only=True)
            after_two = (load_file(folder / "adapter_model.safetensors"), state["step"])
        if isinstance(event, RunFinished):
            run_id = event.run_id
    return workspace, run_id, after_two


def generate_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["generate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def printed_sides(out: str) -> dict[str, list[dict]]:
    """The report's sides: each completion's reward, function values, log p and text."""
    sides, side = {}, None
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if match := re.match(r"^(base model|adapter at step \d+): mean reward", line):
            side = sides.setdefault(match.group(1), [])
        elif match := re.match(r"^  #\d+ reward (\S+)  (.*?)  \d+ tokens.*log p (\S+)$", line):
            values = dict(pair.split("=") for pair in match.group(2).split("  "))
            text = ast.literal_eval(lines[i + 1].strip())
            side.append(dict(reward=float(match.group(1)), values=values, log_p=float(match.group(3)), text=text))
    return sides


def test_a_run_keeps_the_adapter_of_every_checkpoint_step(run):
    workspace, run_id, (after_two, checkpoint_step) = run
    assert adapter_steps(workspace, run_id) == [1, 2, 3]
    assert checkpoint_step == 2
    for step in (1, 2, 3):
        assert sorted(p.name for p in adapter_folder(workspace, run_id, step).iterdir()) == sorted(ADAPTER_FILES)
    kept = load_file(adapter_folder(workspace, run_id, 2) / "adapter_model.safetensors")
    assert kept.keys() == after_two.keys() and all(torch.equal(kept[k], after_two[k]) for k in kept)
    final = load_file(checkpoint_folder(workspace, run_id) / "adapter_model.safetensors")
    last = load_file(adapter_folder(workspace, run_id, 3) / "adapter_model.safetensors")
    assert all(torch.equal(final[k], last[k]) for k in final)
    assert not all(torch.equal(kept[k], last[k]) for k in kept)  # each step's own weights
    assert all("lora_" in k for k in kept)  # the adapter only, no base weight

    from peft import PeftModel, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from workbench.engine.tiny import tiny_model_path

    base = AutoModelForCausalLM.from_pretrained(tiny_model_path(), dtype=torch.float32)
    loaded = get_peft_model_state_dict(PeftModel.from_pretrained(base, adapter_folder(workspace, run_id, 2)))
    assert loaded.keys() == kept.keys() and all(torch.equal(loaded[k], kept[k]) for k in kept)  # peft loads it


def test_generate_prints_both_sides_with_the_runs_rewards(run, capsys):
    workspace, run_id, _ = run
    code, out, _ = generate_cli(capsys, run_id, "--step", 3, "--prompt", PROMPT, "--workspace", workspace, "--num", 6)
    assert code == 0
    assert "a training prompt of the task; its answer='39' goes to the reward functions" in out
    sides = printed_sides(out)
    base, adapter = sides["base model"], sides["adapter at step 3"]
    assert len(base) == len(adapter) == 6
    assert [c["text"] for c in base] != [c["text"] for c in adapter]  # the same draws: the adapter's doing
    assert all(b["log_p"] != a["log_p"] for b, a in zip(base, adapter))

    task = load_task("arithmetic")
    texts = [c["text"] for c in base + adapter]
    with Scorer(task.rewards, task.columns, CONFIG) as scorer:
        recomputed = scorer.score([{"prompt": PROMPT, "answer": "39"}] * len(texts), texts)
    assert [c["reward"] for c in base + adapter] == pytest.approx(recomputed.rewards, abs=0.005)
    assert [float(c["values"]["correct"]) for c in base + adapter] == pytest.approx(recomputed.values["correct"])
    assert sum(c["reward"] for c in adapter) > sum(c["reward"] for c in base)  # 3 steps of GRPO already help here

    same = generate(workspace, run_id, PROMPT, step=3, num=6)  # the API gives what the command printed
    assert [c.text for side in same.sides for c in side.completions] == texts
    alone = generate(workspace, run_id, PROMPT, step=0, num=6)
    assert [side.model for side in alone.sides] == ["base model"]
    assert [c.text for c in alone.sides[0].completions] == [c["text"] for c in base]


def test_generate_refuses_what_it_cannot_sample(run, capsys):
    workspace, run_id, _ = run
    code, _, err = generate_cli(capsys, "nope", "--prompt", PROMPT, "--workspace", workspace)
    assert code == 2 and "no run 'nope'" in err and run_id in err
    code, _, err = generate_cli(capsys, run_id, "--step", 5, "--prompt", PROMPT, "--workspace", workspace)
    assert code == 2 and "no adapter at step 5" in err and "steps 1, 2, 3" in err and "step 0" in err
    code, _, err = generate_cli(capsys, run_id, "--prompt", " ", "--workspace", workspace)
    assert code == 2 and "the prompt is empty" in err
    code, _, err = generate_cli(capsys, run_id, "--prompt", PROMPT, "--workspace", workspace, "--temperature", 0)
    assert code == 2 and "temperature must be above 0" in err and "greedy" in err


def test_greedy_and_typed_prompts(run, capsys):
    workspace, run_id, _ = run
    code, out, _ = generate_cli(capsys, run_id, "--prompt", "1+1=", "--workspace", workspace, "--greedy")
    assert code == 0 and "typed (not a task prompt); the reward functions get answer=None" in out
    sides = printed_sides(out)
    assert list(sides) == ["base model", "adapter at step 3"]  # the latest kept adapter by default
    assert [len(completions) for completions in sides.values()] == [1, 1]


def test_a_typed_prompt_of_a_chat_run_is_a_user_message():
    row = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]}
    prompts = RunPrompts(held_out=[], training=[row | {"answer": "Paris"}], chat=True)
    picked, origin = prompts.row("Capital of France?")
    assert picked["prompt"] == row["prompt"] and picked["answer"] == "Paris"  # the system message comes along
    assert "its answer='Paris' goes to the reward functions" in origin
    typed, origin = prompts.row("Capital of Italy?")
    assert typed == {"prompt": [{"role": "user", "content": "Capital of Italy?"}], "answer": None}
    assert "user message through the chat template" in origin
    plain, origin = RunPrompts([], [{"prompt": "2+2="}]).row("3+3=")
    assert plain == {"prompt": "3+3="} and "plain text" in origin


@pytest.mark.slow
def test_generate_help_loads_no_torch():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "workbench", "generate", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "--max-new-tokens" in result.stdout
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert "workbench" in imported and not imported & {"torch", "transformers", "peft", "gradio"}


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"browser tests need a Chromium ({CHROMIUM} is not one)")
def test_the_playground_tab(run, browser, tmp_path):
    from chromium import choose, fill_stable, wait_text
    from conftest import serve_app
    from playwright.sync_api import expect

    workspace, run_id, _ = run
    with serve_app(workspace) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url)
        page.wait_for_selector("#reward-editor .cm-content")
        page.get_by_role("tab", name="Playground").click()
        page.wait_for_function("() => document.querySelector('#playground-step input')?.value === 'step 3 (latest)'")
        assert page.locator("#playground-run input").input_value().startswith(run_id)
        assert "Adapters are kept at steps 1, 2, 3" in page.locator("#playground-note").inner_text()
        choose(page, "playground-step", "step 2")
        fill_stable(page, "#playground-prompt textarea", PROMPT)
        page.click("#playground-generate")
        expect(page.locator("#playground-generate")).to_be_disabled()  # while it generates
        wait_text(page, "#playground-result", "Sampled and scored")
        expect(page.locator("#playground-generate")).to_be_enabled()
        output = page.locator("#playground-output")
        headers = output.locator(".playground-side h3").all_inner_texts()
        assert headers == ["base model", "adapter at step 2"]
        cards = output.locator(".playground-completion")
        assert cards.count() == 8  # 4 per side, row by row
        assert all("correct" in text and "reward" in text for text in cards.all_inner_texts())

        expected = generate(workspace, run_id, PROMPT, step=2, num=4)  # the engine's numbers, side by side
        rewards = [f"{c.reward:.2f}" for pair in zip(*(s.completions for s in expected.sides)) for c in pair]
        assert cards.evaluate_all("cs => cs.map(c => c.dataset.reward)") == rewards

        choose(page, "playground-step", "step 3 (latest)")  # again, with the last adapter: what 3 steps changed
        page.click("#playground-generate")
        wait_text(page, "#playground-output .playground-side:nth-child(2)", "adapter at step 3")
        expect(page.locator("#playground-generate")).to_be_enabled()
        shots = Path(os.environ.get("WORKBENCH_SCREENSHOTS", tmp_path))
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "playground.png"), full_page=True)
