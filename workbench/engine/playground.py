"""The playground: one prompt's completions from the base model and from a run's adapter at a kept step, side by
side, each scored by the run's reward functions.

`generate(workspace, run_id, prompt, step)` loads the run's model with the run's config, samples N completions
from the base model (a fresh adapter is zero: the base model exactly), then loads the adapter kept at `step`
(`checkpoint.adapter_folder`) and samples N more from the same random draws, so that a difference between the
sides is the adapter's doing, not the dice's. Sampling is the trainer's (`rollout.sample_groups`) at the run's
temperature and top_p, or greedy. Both sides are scored in the reward worker by the reward source that scored
the run's steps up to `step` (the one the run started with, at step 0), with the run's weights.

The prompt. Typed text that is one of the task's prompts (training or held out) is that prompt's row: chat
messages where the task's are, and its columns (an `answer`) go to the reward functions. Other text is a
prompt of its own, with every column None: a user message, through the model's chat template, when the run's
prompts were chat messages, else plain text, as the run trained.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from workbench.config import Config, ConfigError
from workbench.engine.checkpoint import adapter_folder, adapter_steps
from workbench.engine.evaluation import GREEDY_TOP_P
from workbench.engine.policy import load_policy
from workbench.engine.rollout import sample_groups
from workbench.engine.threads import ThreadPolicy
from workbench.formatting import reward_text
from workbench.rewards.scoring import RewardError, RewardSource, Scorer, columns_of
from workbench.rewards.tasks import TaskError, load_task
from workbench.store.database import Store, StoreError, stored_prompt

MAX_COMPLETIONS = 16  # per side: a page of them to read, a decode that stays short on a CPU


@dataclass(frozen=True)
class Completion:
    text: str
    reward: float | None  # the weighted sum of the functions' values; None when none scored it
    values: dict[str, float | None]  # each reward function's value
    num_tokens: int
    truncated: bool  # cut at max_new_tokens, no EOS
    log_prob: float  # log p of the whole completion under the model that sampled it, at the temperature


@dataclass(frozen=True)
class Side:
    model: str  # "base model" or "adapter at step N"
    step: int  # 0 for the base model
    completions: list[Completion]

    @property
    def reward_mean(self) -> float | None:
        rewards = [c.reward for c in self.completions if c.reward is not None]
        return sum(rewards) / len(rewards) if rewards else None


@dataclass(frozen=True)
class Generation:
    run_id: str
    row: dict  # the prompt as sent ('prompt': text or chat messages) and the columns the reward functions got
    origin: str  # where the prompt came from and how it went to the model, in a sentence
    model_input: str  # the prompt's tokens decoded, special tokens included: what the model saw
    sides: list[Side]  # the base model, then the adapter (none at step 0)
    reward: str  # the reward source, its version and its functions' weights
    sampling: str  # temperature, top_p or greedy, the token budget, the seed
    reward_error: str | None = None  # the reward code failed: the completions are shown unscored
    seconds: float = 0.0

    def report(self) -> str:
        """The whole comparison as text, for the CLI and notebooks."""
        lines = [
            f"run {self.run_id}: " + " vs ".join(side.model for side in self.sides),
            f"prompt: {prompt_text(self.row['prompt'])!r}",
            f"  {self.origin}",
            f"sampling: {self.sampling}",
            f"reward: {self.reward}",
        ]
        if self.reward_error:
            lines.append(f"the reward code failed, so nothing is scored: {self.reward_error}")
        for side in self.sides:
            mean = "-" if side.reward_mean is None else f"{side.reward_mean:.3f}"
            lines += ["", f"{side.model}: mean reward {mean}"]
            for i, c in enumerate(side.completions, start=1):
                values = "  ".join(f"{name}={reward_text(v)}" for name, v in c.values.items())
                tokens = f"{c.num_tokens} tokens" + (" (cut at max_new_tokens)" if c.truncated else "")
                lines.append(f"  #{i} reward {reward_text(c.reward)}  {values}  {tokens}  log p {c.log_prob:.2f}")
                lines.append(f"     {c.text!r}")
        lines += ["", f"sampled and scored in {self.seconds:.1f} s"]
        return "\n".join(lines)


@dataclass(frozen=True)
class RunPrompts:
    """The prompts of a run's task a user may pick: the held-out ones first (never trained on), then the rest."""

    held_out: list[dict]
    training: list[dict]
    chat: bool = False  # the run's prompts are chat messages

    @property
    def columns(self) -> list[str]:
        return columns_of(self.training + self.held_out)

    def row(self, text: str) -> tuple[dict, str]:
        """The row a typed prompt stands for, and where it came from and how it goes to the model, in words."""
        for kind, rows in (("held-out", self.held_out), ("training", self.training)):
            for row in rows:
                if prompt_text(row["prompt"]) == text:
                    given = ", ".join(f"{k}={v!r}" for k, v in row.items() if k != "prompt")
                    columns = f"; its {given} goes to the reward functions" if given else ""
                    sent = "as the task's chat messages" if isinstance(row["prompt"], list) else "as plain text"
                    return row, f"a {kind} prompt of the task{columns}; sent {sent}"
        row = {"prompt": [{"role": "user", "content": text}] if self.chat else text}
        row |= {column: None for column in self.columns}
        nothing = "".join(f"; the reward functions get {column}=None" for column in self.columns[:1])
        nothing += f" (and {', '.join(self.columns[1:])})" if len(self.columns) > 1 else ""
        if self.chat:
            return row, f"typed (not a task prompt){nothing}; sent as a user message through the chat template"
        return row, f"typed (not a task prompt){nothing}; sent as plain text, as the run's prompts were"


def prompt_text(prompt: str | list[dict]) -> str:
    """What a user reads and types for a prompt: the text, or the last user message of chat messages."""
    if isinstance(prompt, str):
        return prompt
    users = [message["content"] for message in prompt if message.get("role") == "user"]
    return users[-1] if users else prompt[-1]["content"]


def open_run(workspace: str | Path, run_id: str) -> dict:
    """The run's row from the store, or an error that names the workspace's runs."""
    store = Store(workspace, create=False)
    run = store.run(run_id)
    if run is None:
        newest = ", ".join(store.runs().run_id.head(5)) or "none"
        raise StoreError(f"no run {run_id!r} in workspace {workspace} (its newest runs: {newest})")
    return run


def run_prompts(workspace: str | Path, run: dict) -> RunPrompts:
    """The task's prompts (its eval file or the run's eval_split held out); the prompts the run stored when its
    task folder is gone."""
    try:
        task = load_task(run["task_path"]).split(Config.from_dict(run["config"]).eval_split)
        held_out, training = task.eval_rows, task.rows
    except TaskError:
        stored = Store(workspace, create=False).records(
            "SELECT DISTINCT prompt, extra_columns FROM rollouts WHERE run_id = $1 ORDER BY prompt", [run["run_id"]]
        )
        held_out = []
        training = [{"prompt": stored_prompt(r["prompt"]), **json.loads(r["extra_columns"] or "{}")} for r in stored]
    chat = any(isinstance(row["prompt"], list) for row in training + held_out)
    return RunPrompts(held_out, training, chat)


def reward_at(workspace: str | Path, run: dict, step: int) -> RewardSource:
    """The reward source that scored the run's steps up to `step` (a run's reward may be swapped mid-run); the one
    it started with at step 0."""
    scored = Store(workspace, create=False).records(
        """SELECT v.source, v.filename FROM rollouts r JOIN reward_versions v ON v.version = r.reward_version
           WHERE r.run_id = $1 AND r.step <= $2 ORDER BY r.step DESC LIMIT 1""",
        [run["run_id"], step],
    )
    if not scored:
        return RewardSource(run["reward_source"], "reward.py")
    return RewardSource(scored[0]["source"], Path(scored[0]["filename"] or "reward.py").name)


def check_step(workspace: str | Path, run_id: str, step: int) -> None:
    """Refuse a step whose adapter was not kept, naming those that were."""
    kept = adapter_steps(workspace, run_id)
    if step == 0 or step in kept:
        return
    if not kept:
        raise StoreError(
            f"run {run_id} kept no adapter (it reached no checkpoint, or it was trained before adapters were "
            "kept): only step 0, the base model alone, can be sampled"
        )
    raise StoreError(
        f"run {run_id} has no adapter at step {step}: adapters are kept at steps {', '.join(map(str, kept))} "
        "(every checkpoint_every steps and the last); step 0 is the base model alone"
    )


def generate(
    workspace: str | Path,
    run_id: str,
    prompt: str,
    step: int | None = None,
    num: int = 4,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    greedy: bool = False,
    seed: int = 0,
) -> Generation:
    """`num` completions of `prompt` from the base model and from the adapter kept at `step` (None: the latest;
    0: the base model alone), each scored by the run's reward. Sampling settings default to the run's."""
    run = open_run(workspace, run_id)
    step = max(adapter_steps(workspace, run_id), default=0) if step is None else step
    check_step(workspace, run_id, step)
    config = Config.from_dict(run["config"])
    temperature = config.temperature if temperature is None else temperature
    max_new_tokens = config.max_new_tokens if max_new_tokens is None else max_new_tokens
    check_request(prompt, num, max_new_tokens, temperature)
    top_p, num = (GREEDY_TOP_P, 1) if greedy else (config.top_p, num)  # greedy: every draw would be the same
    prompts = run_prompts(workspace, run)
    row, origin = prompts.row(prompt)
    source = reward_at(workspace, run, step)

    started = time.perf_counter()
    ThreadPolicy(config.threads).decide()  # beside a training run, the cores it leaves
    policy = load_policy(config)
    prompt_ids = policy.encode_prompt(row["prompt"])
    adapter = adapter_folder(workspace, run_id, step) if step > 0 else None
    drawn = sample_sides(policy, prompt_ids, adapter, step, num, max_new_tokens, temperature, top_p, seed)
    with Scorer(source, prompts.columns, config) as scorer:
        sides, error = score_sides(scorer, row, drawn)
    weights = ", ".join(f"{name} (weight {config.reward_weights.get(name, 1.0):g})" for name in scorer.names)
    draws = "greedy (the most likely token each time: one completion)" if greedy else f"temperature {temperature:g}, "
    draws += "" if greedy else f"top_p {top_p:g}, seed {seed} (both sides draw the same random numbers)"
    return Generation(
        run_id,
        row,
        origin,
        policy.tokenizer.decode(prompt_ids, skip_special_tokens=False),
        sides,
        f"{source.filename} version {source.version}: {weights}",
        f"{draws}; at most {max_new_tokens} new tokens",
        error,
        time.perf_counter() - started,
    )


def sample_sides(policy, prompt_ids, adapter: Path | None, step: int, num: int, *sampling) -> list[tuple]:
    """(side's name, step, Rollouts) for the base model (the policy's fresh adapter is zero), then for `adapter`
    loaded into it; both from the same seeded draws.  sampling: max_new_tokens, temperature, top_p, seed"""
    *settings, seed = sampling
    drawn = [("base model", 0, sample_groups(policy, [prompt_ids], num, *settings, seeds=[seed]))]
    if adapter is not None:
        policy.load_adapter(adapter)
        rollouts = sample_groups(policy, [prompt_ids], num, *settings, seeds=[seed])
        drawn.append((f"adapter at step {step}", step, rollouts))
    return drawn


def score_sides(scorer: Scorer, row: dict, drawn: list[tuple]) -> tuple[list[Side], str | None]:
    """Each side's completions scored in the reward worker, as of its step; a reward that fails leaves them
    unscored, with its error."""
    sides, error = [], None
    for model, step, rollouts in drawn:
        count = len(rollouts.completions)
        try:
            scores = scorer.score([row] * count, rollouts.completions, rollouts.completion_id_lists, global_step=step)
            values, rewards = scores.values, scores.rewards
        except RewardError as failure:  # show what was sampled, and why it is not scored
            error, values, rewards = str(failure), {}, [None] * count
        sides.append(Side(model, step, _completions(rollouts, values, rewards)))
    return sides, error


def _completions(rollouts, values: dict, rewards: list) -> list[Completion]:
    log_probs = rollouts.sampling_log_probs.sum(dim=1).tolist()  # (B,): 0 past each EOS
    return [
        Completion(
            text,
            rewards[i],
            {name: v[i] for name, v in values.items()},
            int(rollouts.num_tokens[i]),
            bool(rollouts.truncated[i]),
            log_probs[i],
        )
        for i, text in enumerate(rollouts.completions)
    ]


def check_request(prompt: str, num: int, max_new_tokens: int, temperature: float) -> None:
    """Refuse a prompt or sampling settings that sample nothing, with what to give instead."""
    if not prompt.strip():
        raise ConfigError("the prompt is empty: type one, or pick one of the task's prompts")
    if num < 1 or num > MAX_COMPLETIONS:
        raise ConfigError(f"the number of completions per side must be 1 to {MAX_COMPLETIONS}, got {num}")
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature <= 0:
        raise ConfigError(f"temperature must be above 0, got {temperature:g} (for the most likely tokens: greedy)")
