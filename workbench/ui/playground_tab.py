"""Playground: a prompt's completions from the base model and from a run's adapter at a kept step, side by side,
each with its reward functions' values and its reward (`workbench.engine.playground`).

Generating loads a model, so it runs in a worker process (`workbench.engine.workers`), never in the app's; the
Generate button is disabled while it runs. The run picker lists the stored runs, the step picker the steps
whose adapter was kept (and 0, the base model alone); picking a run fills in its sampling settings and its
task's prompts (held-out ones first).
"""

from __future__ import annotations

import html
from types import SimpleNamespace

import gradio as gr

from workbench.config import ConfigError
from workbench.engine import workers
from workbench.engine.checkpoint import adapter_steps
from workbench.engine.hub import ModelLoadError
from workbench.engine.playground import MAX_COMPLETIONS, Generation, generate, open_run, prompt_text, run_prompts
from workbench.formatting import cut, reward_text
from workbench.rewards.scoring import RewardError
from workbench.store.database import Store, StoreError

PROMPT_CHOICES = 200  # of each kind (held out, training): the dropdown filters as one types
INTRO = (
    "Type a prompt (or pick one of the task's) and compare the base model's completions with those of the "
    "run's adapter at a saved step, each scored by the run's reward functions. Completion #i of both sides is drawn "
    "from the same random numbers: where the two differ, the adapter made the difference."
)


def build(store: Store, page: gr.Tab) -> SimpleNamespace:
    """The tab's layout and its events; `page` is its tab, which lists the runs when it is opened."""
    view = _layout()
    workspace = str(store.workspace)

    def list_runs(current):
        runs = store.runs()
        choices = [(f"{r.run_id} ({r.task}, {r.model}, {r.status})", r.run_id) for r in runs.itertuples()]
        value = current if current in set(runs.run_id) else (choices[0][1] if choices else None)
        return gr.Dropdown(choices=choices, value=value)

    def open_picked(run_id):
        """The picked run's kept steps, its task's prompts, its sampling settings, and how prompts are sent."""
        if not run_id:
            return gr.Dropdown(choices=[]), gr.Dropdown(choices=[]), None, None, "No run in this workspace yet."
        run = open_run(workspace, run_id)
        kept = adapter_steps(workspace, run_id)
        steps = [(f"step {s}" + (" (latest)" if s == kept[-1] else ""), s) for s in reversed(kept)]
        steps.append(("0: the base model alone", 0))
        prompts = run_prompts(workspace, run)
        config = run["config"]
        return (
            gr.Dropdown(choices=steps, value=steps[0][1]),
            gr.Dropdown(choices=_prompt_choices(prompts.held_out, prompts.training), value=None),
            config["max_new_tokens"],
            config["temperature"],
            _prompt_note(prompts.chat, kept),
        )

    def run_generation(run_id, step, prompt, num, max_new_tokens, temperature, greedy, seed):
        if not run_id:
            return "<p>Pick a run first.</p>"
        try:
            arguments = (workspace, run_id, prompt or "", int(step or 0), int(num or 1))
            settings = (int(max_new_tokens) if max_new_tokens else None, temperature, bool(greedy), int(seed or 0))
            return generation_html(workers.call(generate, *arguments, *settings))
        except (StoreError, ConfigError, RewardError, ModelLoadError) as error:
            return f"<p id='playground-error'><b>Cannot generate:</b> {html.escape(str(error))}</p>"

    settings = [view.num, view.max_new_tokens, view.temperature, view.greedy, view.seed]
    page.select(list_runs, view.run, view.run, api_visibility="private")
    view.run.change(
        open_picked, view.run, [view.step, view.task_prompt, view.max_new_tokens, view.temperature, view.note]
    )
    view.task_prompt.change(lambda text: text or gr.skip(), view.task_prompt, view.prompt, api_visibility="private")
    view.generate.click(
        lambda: gr.Button("Generating...", interactive=False), None, view.generate, api_visibility="private"
    ).then(
        run_generation, [view.run, view.step, view.prompt, *settings], view.result, api_name="playground_generate"
    ).then(lambda: gr.Button("Generate", interactive=True), None, view.generate, api_visibility="private")
    return view


def _layout() -> SimpleNamespace:
    gr.Markdown(INTRO)
    with gr.Row():
        run = gr.Dropdown([], label="run", scale=3, elem_id="playground-run")
        step = gr.Dropdown([], label="adapter at step", scale=1, elem_id="playground-step")
    task_prompt = gr.Dropdown(
        [],
        label="a prompt of the run's task (fills the box below)",
        info="the held-out prompts first: the run never trained on them; type to filter",
        elem_id="playground-pick",
    )
    prompt = gr.Textbox(lines=2, label="prompt", placeholder="or type any prompt", elem_id="playground-prompt")
    note = gr.Markdown(elem_id="playground-note")
    with gr.Row():
        num = gr.Slider(1, MAX_COMPLETIONS, value=4, step=1, label="completions per side", elem_id="playground-num")
        max_new_tokens = gr.Number(precision=0, minimum=1, label="max new tokens", elem_id="playground-max-tokens")
        temperature = gr.Number(minimum=0, step=0.1, label="temperature", elem_id="playground-temperature")
        seed = gr.Number(0, precision=0, minimum=0, label="seed", elem_id="playground-seed")
        greedy = gr.Checkbox(label="greedy (one completion: the most likely tokens)", elem_id="playground-greedy")
    generate = gr.Button("Generate", variant="primary", elem_id="playground-generate")
    result = gr.HTML(elem_id="playground-result")
    return SimpleNamespace(**locals())


def _prompt_choices(held_out: list[dict], training: list[dict]) -> list[tuple[str, str]]:
    """(label, text) of the held-out prompts, then the training ones: PROMPT_CHOICES of each, each text once."""
    texts = {}
    for kind, rows in (("held out: ", held_out), ("", training)):
        for row in rows[:PROMPT_CHOICES]:
            text = prompt_text(row["prompt"])
            texts.setdefault(text, kind + cut(text, 80))
    return [(label, text) for text, label in texts.items()]


def _prompt_note(chat: bool, kept: list[int]) -> str:
    sent = (
        "This run's prompts are chat messages: a typed prompt is sent as a user message through the model's "
        "chat template."
        if chat
        else "This run's prompts are plain text: a typed prompt is sent as it is."
    )
    where = f"Adapters are kept at steps {', '.join(map(str, kept))}." if kept else "This run kept no adapter."
    return f"{sent} A task prompt also gives the reward functions its columns (an answer). {where}"


def generation_html(generation: Generation) -> str:
    """The prompt and how it was sent, then the sides in columns, completion #i of each on one row."""
    sides = generation.sides
    header = "".join(_side_header(side, sides[0].reward_mean) for side in sides)
    rows = ""
    for i in range(len(sides[0].completions)):
        base = sides[0].completions[i].text
        rows += "".join(_card(side, i, same=k > 0 and side.completions[i].text == base) for k, side in enumerate(sides))
    error = (
        f"<p><b>The reward code failed, so nothing is scored:</b> {html.escape(generation.reward_error)}</p>"
        if generation.reward_error
        else ""
    )
    return (
        f"<div id='playground-output' data-sides='{len(sides)}'>"
        f"<p>prompt <code>{html.escape(prompt_text(generation.row['prompt']))}</code>: "
        f"{html.escape(generation.origin)}.</p>"
        f"<details><summary>what the model saw</summary><pre style='white-space:pre-wrap'>"
        f"{html.escape(generation.model_input)}</pre></details>"
        f"<p>sampling: {html.escape(generation.sampling)}<br>reward: {html.escape(generation.reward)}</p>{error}"
        f"<div style='display:grid;grid-template-columns:repeat({len(sides)},minmax(0,1fr));gap:8px'>"
        f"{header}{rows}</div>"
        f"<p style='opacity:.7'>log p: the log-probability of the whole completion under the model that sampled it "
        f"(closer to 0: likelier). Sampled and scored in {generation.seconds:.1f} s.</p></div>"
    )


def _side_header(side, base_mean: float | None) -> str:
    """The side's name and its mean reward; the adapter's with its change from the base model's."""
    mean = "-" if side.reward_mean is None else f"{side.reward_mean:.2f}"
    if side.step > 0 and None not in (side.reward_mean, base_mean):
        mean += f" ({side.reward_mean - base_mean:+.2f} from the base model)"
    return (
        f"<div class='playground-side' data-step='{side.step}'><h3 style='margin:4px 0'>{html.escape(side.model)}"
        f"</h3>mean reward <b class='playground-mean'>{mean}</b></div>"
    )


def _card(side, i: int, same: bool) -> str:
    c = side.completions[i]
    values = "".join(f" · {html.escape(name)} {reward_text(v)}" for name, v in c.values.items())
    notes = " · <i>cut at max new tokens</i>" if c.truncated else ""
    notes += " · <i>the same text as the base model's</i>" if same else ""
    return (
        f"<div class='playground-completion' data-step='{side.step}' data-reward='{reward_text(c.reward)}' "
        "style='border:1px solid #ccc;border-radius:6px;padding:6px'>"
        f"<div><b>#{i + 1}</b> reward <b>{reward_text(c.reward)}</b>{values}</div>"
        f"<pre style='white-space:pre-wrap;margin:4px 0'>{html.escape(c.text) or '<i>(empty)</i>'}</pre>"
        f"<div style='opacity:.7'>{c.num_tokens} tokens · log p {c.log_prob:.2f}{notes}</div></div>"
    )
