"""Task & reward: a sample task, uploaded prompts or a Hugging Face dataset, with a preview; the reward in a code
editor, validated, tried on a typed completion, dry-run on sampled groups (wired in `workbench.ui`).

The picker names the task in use: a sample (or published) task, or one of this page's uploads and datasets, which
join it as they load. Picking an entry, the current one too, loads it again. An edited reward is never replaced
unseen: picking another task loads its prompts, keeps the edit, and asks whether the task's own reward should replace
it. Validate and Try answer in one box, a dry-run in its own, which says what it ran on and when; an answer that
arrives after a newer action's began is dropped (`take_ticket`, `if_newest`), and each button is disabled while its
action runs.
"""

from __future__ import annotations

import html
import itertools
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from workbench.rewards.hf_datasets import hub_task, parse_hub_name
from workbench.rewards.models import source_reward_models, with_reward_models
from workbench.rewards.sandbox import sandbox_status
from workbench.rewards.scoring import RewardError, RewardSource, probes, try_rewards, validate_rewards
from workbench.rewards.tasks import Task, TaskError, keep_upload, load_task, sample_task_names
from workbench.ui import task_view
from workbench.ui.status import while_running

REWARD_FILE = "reward.py"  # the name the editor's text is reported and stored under
_TICKETS = itertools.count(1)  # every action's number, across sessions: a later action has a larger one


def take_ticket(latest: dict, box: str) -> int:
    """Number an action that answers in `box`; it is that box's newest from now on. `latest` is the session's
    gr.State dict: Gradio hands every event of a session the same object, so a slow event sees a newer one's ticket."""
    latest[box] = ticket = next(_TICKETS)
    return ticket


def if_newest(latest: dict, box: str, ticket: int, answer):
    """`answer`, or no change when an action for `box` began after this one: its answer is the one to show."""
    return answer if latest.get(box) == ticket else gr.skip()


def build(workspace: str, classroom=None) -> SimpleNamespace:
    """The tab; in classroom mode (`classroom`: a workbench.engine.classroom.Classroom) the tasks the teacher
    published are offered beside the sample tasks."""
    first = load_task("arithmetic")
    task_state = gr.State(first)
    entries = gr.State({})  # label -> Task: this page's uploads and datasets, which the picker offers too
    latest = gr.State({})  # box -> the ticket of the newest action that answers there

    def task_names() -> list[str]:
        return sample_task_names() + (classroom.published_tasks() if classroom is not None else [])

    def describe(entry: str) -> str:
        """A picker entry as the context lines name it (inline HTML): its kind, then its name."""
        kind = next((kind for kind in ("upload", "dataset") if entry.endswith(f" ({kind})")), None)
        if kind is None:
            kind = "sample task" if entry in sample_task_names() else "published task"
        return f"the {kind} <b>{html.escape(entry.removesuffix(f' ({kind})'))}</b>"

    gr.Markdown(
        "**First run:** keep the arithmetic task and its reward, open **Train** and press **Start**: within a "
        "minute the reward curve climbs as the tiny model learns two-digit sums. Then edit the reward below.",
        elem_id="first-run-hint",
    )
    with gr.Row():
        picker = gr.Dropdown(
            task_names(),
            value=first.name,
            label="task",
            info="a sample task, or one of your uploads and datasets; picking one loads it again",
            elem_id="task",
        )
        upload = gr.File(
            label="or upload prompts (JSONL, CSV, Parquet, TXT)",
            file_types=[".jsonl", ".csv", ".parquet", ".txt"],
            elem_id="prompt-upload",
        )
    with gr.Accordion("or a dataset from the Hugging Face hub (scored by the reward below)", open=False):
        with gr.Row():
            hub_id = gr.Textbox(label="dataset id[:config]", placeholder="openai/gsm8k:main", elem_id="hub-dataset")
            hub_split = gr.Textbox("train", label="split", placeholder="train[:500]", elem_id="hub-split")
            hub_columns = gr.Textbox(
                label="columns kept, renamed (empty: all)", placeholder="question=prompt,answer", elem_id="hub-columns"
            )
            hub_load = gr.Button("Load dataset", elem_id="hub-load")
    data_message = gr.Markdown(task_view.data_message(first), elem_id="data-message")
    chat = gr.Checkbox(
        False,
        label="send prompts as chat messages",
        info='each plain-string prompt goes to the model as [{"role": "user", "content": prompt}], so that a chat '
        "model's template is applied (it is applied to message lists only, as in TRL); the tiny model was taught "
        "plain strings",
        elem_id="chat-prompts",
    )
    rows = gr.Dataframe(task_view.preview(first.rows), label="prompts", max_height=240, elem_id="prompt-preview")
    with gr.Row(visible=False, elem_id="reward-kept") as kept:
        kept_note = gr.Markdown(elem_id="reward-kept-note")
        with gr.Column(scale=0, min_width=240):
            replace = gr.Button("Load the task's own reward", size="sm", variant="stop", elem_id="reward-replace")
            keep = gr.Button("Keep my edited reward", size="sm", elem_id="reward-keep")
    editor = gr.Code(first.rewards.text, language="python", label=REWARD_FILE, elem_id="reward-editor")
    reward_models = gr.Textbox(
        label="reward models",
        info="hub ids or folders of sequence classifiers, one a line: scored beside the functions as TRL scores "
        "them (the file's REWARD_MODELS; JUDGE_RUBRIC = '...' in it adds an LLM judge)",
        lines=2,
        elem_id="reward-models",
    )
    version = gr.Markdown(elem_id="reward-version")
    with gr.Row():
        validate = gr.Button("Validate", elem_id="validate-button")
        dry_run = gr.Button("Dry-run on sampled groups", elem_id="dry-run-button")
    sampler = gr.Markdown(elem_id="dry-run-model")  # which model a dry-run samples from: the Train tab's
    with gr.Row():
        completion = gr.Textbox(label="try a completion for the first prompt", elem_id="try-completion")
        attempt = gr.Button("Try", elem_id="try-button")
    reward_message = gr.Markdown(elem_id="reward-message")
    gr.Markdown(f"<small>{html.escape(sandbox_status())}.</small>", elem_id="sandbox-status")
    dry_run_message = gr.Markdown(elem_id="dry-run-message")
    dry_run_result = gr.HTML(elem_id="dry-run-result")

    def choose_task(entry, text, current: Task, kept_tasks: dict):
        """The entry's task loaded (again); the editor gets its reward unless it holds an edit, which is kept and
        the choice asked for."""
        published = classroom is not None and entry in classroom.published_tasks()
        if entry in kept_tasks:
            chosen = kept_tasks[entry]
        else:
            chosen = classroom.published_task(entry)[0] if published else load_task(entry)
        shown = chosen, task_view.data_message(chosen), task_view.preview(chosen.rows)
        if not task_view.edited(text, current) or not task_view.edited(text, chosen):  # no edit to lose
            return *shown, chosen.rewards.text, gr.Row(visible=False), gr.skip(), gr.skip()
        note = (
            f"**The editor keeps your edited reward** (version `{RewardSource(text).version}`): "
            f"{html.escape(chosen.name)}'s prompts are loaded, and its own reward would replace your edit."
        )
        return *shown, gr.skip(), gr.Row(visible=True), note, gr.Button(f"Load {chosen.name}'s own reward")

    def upload_prompts(path, current: Task, kept_tasks: dict):
        """The uploaded prompts, or why they are refused, naming the user's file (not the server's copy of it);
        the upload box is emptied for the next file."""
        if path is None:
            return current, kept_tasks, gr.skip(), gr.skip(), None
        try:
            uploaded = keep_upload(workspace, Path(path), current.rewards)
        except TaskError as error:
            named = str(error).replace(str(Path(path)), Path(path).name)
            return current, kept_tasks, f"**Upload refused:** {html.escape(named)}", gr.skip(), None
        entry = f"{Path(path).name} (upload)"
        shown = task_view.data_message(uploaded), task_view.preview(uploaded.rows)
        return uploaded, {**kept_tasks, entry: uploaded}, *shown, None

    def load_hub_dataset(dataset, split, columns, text, current: Task, kept_tasks: dict):
        """The dataset's rows (a hub id, from the datasets cache offline; never a folder of the server), or why not."""
        split = (split or "").strip() or "train"
        try:
            path, config = parse_hub_name((dataset or "").strip())
            chosen = hub_task(
                path,
                config,
                split=split,
                columns=(columns or "").strip() or None,
                reward=RewardSource(text, REWARD_FILE),
                workspace=workspace,
                paths=False,
            )
        except TaskError as error:
            return current, kept_tasks, f"**Dataset refused:** {html.escape(str(error))}", gr.skip()
        entry = f"{chosen.name}, {split} (dataset)"
        return chosen, {**kept_tasks, entry: chosen}, task_view.data_message(chosen), task_view.preview(chosen.rows)

    def show_entry(current: Task, kept_tasks: dict):
        """The picker on the upload or dataset in use, offered beside the sample tasks (nothing changes after a
        refused one)."""
        entry = next((entry for entry, task in kept_tasks.items() if task.folder == current.folder), None)
        return gr.skip() if entry is None else gr.Dropdown(choices=task_names() + list(kept_tasks), value=entry)

    def validate_reward(text, current: Task, latest_actions: dict):
        ticket = take_ticket(latest_actions, "reward")
        try:
            scores = validate_rewards(RewardSource(text, REWARD_FILE), current.rows)
        except RewardError as error:
            return if_newest(latest_actions, "reward", ticket, task_view.reward_error(error))
        return if_newest(latest_actions, "reward", ticket, task_view.probe_scores(scores, probes(current.rows)))

    def try_reward(text, typed, current: Task, latest_actions: dict):
        ticket = take_ticket(latest_actions, "reward")
        try:
            scores = try_rewards(RewardSource(text, REWARD_FILE), typed or "", current.rows[0])
        except RewardError as error:
            return if_newest(latest_actions, "reward", ticket, task_view.reward_error(error))
        values = ", ".join(f"{name} = {v[0]}" for name, v in scores.values.items())
        answer = f"reward **{scores.rewards[0]:g}** ({values}) for `{typed!r}` on `{current.rows[0]['prompt']!r}`"
        return if_newest(latest_actions, "reward", ticket, answer)

    shown = [task_state, data_message, rows]
    chosen = picker.select(
        choose_task,
        [picker, editor, task_state, entries],
        [*shown, editor, kept, kept_note, replace],
        api_visibility="private",
    )
    replaced = replace.click(
        lambda current: (current.rewards.text, gr.Row(visible=False)),
        task_state,
        [editor, kept],
        queue=False,
        api_visibility="private",
    )
    keep.click(lambda: gr.Row(visible=False), None, kept, queue=False, api_visibility="private")
    uploaded = upload.upload(
        upload_prompts, [upload, task_state, entries], [task_state, entries, data_message, rows, upload],
        api_name="upload_prompts",
    )  # fmt: skip
    loaded = while_running(
        hub_load,
        "Loading…",
        load_hub_dataset,
        [hub_id, hub_split, hub_columns, editor, task_state, entries],
        [task_state, entries, data_message, rows],
        api_name="load_hub_dataset",
    )
    for event in (uploaded, loaded):
        event.then(show_entry, [task_state, entries], picker, api_visibility="private")
    while_running(
        validate, "Validating…", validate_reward, [editor, task_state, latest], reward_message,
        api_name="validate_reward",
    )  # fmt: skip
    while_running(
        attempt, "Trying…", try_reward, [editor, completion, task_state, latest], reward_message, api_name="try_reward"
    )
    editor.change(  # the field lists the editor's REWARD_MODELS, and writes them back into it
        lambda text: "\n".join(source_reward_models(text)), editor, reward_models, api_visibility="private"
    )
    reward_models.blur(
        lambda text, listed: with_reward_models(text, (listed or "").split()),
        [editor, reward_models],
        editor,
        api_visibility="private",
    )
    return SimpleNamespace(
        task=task_state,
        editor=editor,
        chat=chat,
        dry_run=dry_run,
        message=reward_message,
        dry_run_message=dry_run_message,
        dry_run_result=dry_run_result,
        version=version,
        sampler=sampler,
        latest=latest,
        picker=picker,
        task_names=task_names,
        describe=describe,
        task_events=[chosen, replaced, uploaded, loaded],  # what changes the task or the editor's reward
    )
