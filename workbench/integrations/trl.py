"""Watch a TRL GRPOTrainer run in the workbench: one line before `trainer.train()`,

    run_id = workbench.integrations.trl.watch(trainer, workspace="runs")

and the run is in the workspace's store as the workbench's own runs are: its status, every step's
metrics (`steps`), every group's completions with their rewards and advantages (`rollouts`), each
reward function's values (`reward_values`). The app's Runs tab, curves, group view and SQL read it live.

How it is captured, without copying any of TRL's math:
1. Each reward function of `trainer.reward_funcs` is wrapped (sync or async alike): TRL calls it with
   prompts=, completions=, completion_ids= and the dataset's columns, and the wrapper keeps them and
   the values it returns. The reward is their weighted sum with `trainer.reward_weights`, as TRL sums it.
   Reward models (nn.Module) are left as they are: a run with one stores no reward, only TRL's advantage.
2. `trainer._generate_and_score_completions` is wrapped: the `advantages` tensor it returns is the one
   TRL's loss uses, so the stored advantage is TRL's own, whatever its scale_rewards or aggregation.
3. A TrainerCallback: at each optimizer step's end the step's completions are gathered to rank 0 in
   TRL's global order (accelerate's gather_object; groups are G consecutive completions), and at each
   log rank 0 writes the steps logged so far, TRL's metrics mapped onto the `steps` columns (with
   logging_steps > 1, its loss, KL, ... are the window's means, on the logged step). A step whose
   completions were generated earlier (num_iterations > 1 reuses them) has a steps row only. Each step
   is one `Store.write_steps` transaction, whole or absent; the connection is let go at once, so readers
   in other processes never wait long.

The run's `config` holds the workbench Config fields that TRL's settings map onto (so the app reads
it like any run's); TRL's full arguments are kept beside it, in `<workspace>/runs/<run_id>/trl_args.json`.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list, gather_object
from transformers import TrainerCallback
from trl.trainer.utils import is_async_callable

from workbench.config import Config, ConfigError
from workbench.engine import grpo
from workbench.engine.checkpoint import run_folder
from workbench.engine.hardware import peak_memory_mib
from workbench.engine.records import reward_statistics
from workbench.events import Group
from workbench.integrations.trl_settings import workbench_values
from workbench.rewards.scoring import RewardSource
from workbench.store.database import Store, new_run_id
from workbench.store.writer import step_rows

# TRL's logged metric -> the `steps` column it fills (TRL 1.16's names; a missing one stays NULL).
METRICS = {
    "reward": "reward_mean",  # (TRL's reward_std is the batch's std: the store's is computed from the groups)
    "frac_reward_zero_std": "frac_zero_std",
    "kl": "kl",
    "loss": "loss",
    "grad_norm": "grad_norm",
    "learning_rate": "learning_rate",
    "entropy": "entropy",
    "clip_ratio/region_mean": "clip_frac",
    "completions/mean_length": "completion_tokens_mean",
    "completions/clipped_ratio": "truncated_frac",
    "sampling/sampling_logp_difference/mean": "sampling_logp_diff_mean",
    "sampling/sampling_logp_difference/max": "sampling_logp_diff_max",
}
logger = logging.getLogger(__name__)
STEP_COLUMNS = ("run_id", "step", *METRICS.values(), "reward_std", "unscored_frac", "seconds", "reward_function_means")
NOT_COLUMNS = ("trainer_state", "log_extra", "log_metric", "environments")  # reward kwargs that are not data


def watch(trainer, workspace: str | Path = "runs", task: str | None = None) -> str:
    """Store this GRPOTrainer's run in the workspace's store as it trains; returns its run id (on every rank)."""
    watcher = Watcher(trainer, Path(workspace), task)
    trainer.add_callback(StoreCallback(watcher))
    train = trainer.train

    @functools.wraps(train)
    def watched_train(*args, **kwargs):
        try:
            return train(*args, **kwargs)
        except BaseException as error:  # the run is marked, the error goes on
            watcher.failed(error)
            raise

    trainer.train = watched_train
    return watcher.run_id


class Watcher:
    """What one watched trainer captured, and the store it writes on rank 0."""

    def __init__(self, trainer, workspace: Path, task: str | None):
        self.trainer = trainer
        self.main = trainer.accelerator.is_main_process
        self.names = list(trainer.reward_func_names)
        self.weights = trainer.reward_weights.tolist()
        tokenizer = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
        self.stop_ids = {*getattr(trainer, "eos_token_ids", [tokenizer.eos_token_id]), tokenizer.pad_token_id}
        self.batch: dict = {}  # what the reward functions saw in the current generation
        self.captured: list[dict] = []  # this process's completions since the last optimizer step
        self.pending: dict[int, tuple[list[dict], float]] = {}  # rank 0: steps not yet written
        self.started = time.perf_counter()
        self.source = RewardSource(reward_source(trainer.reward_funcs), "rewards.py")
        self.source_stored = False
        task = task or dataset_name(trainer.train_dataset)
        run_id = new_run_id(task) if self.main else None
        self.run_id = broadcast_object_list([run_id])[0] if trainer.accelerator.num_processes > 1 else run_id
        if self.main:
            self.store = Store(workspace)
            model = trainer.model.config._name_or_path
            script = str(Path(sys.argv[0]).resolve()) if sys.argv and sys.argv[0] else ""
            self.store.create_run(self.run_id, task, script, model, workbench_config(trainer), self.source.text)
            folder = run_folder(workspace, self.run_id)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "trl_args.json").write_text(json.dumps(trainer.args.to_dict(), indent=1, default=str))
        for i, function in enumerate(trainer.reward_funcs):
            if not isinstance(function, torch.nn.Module):  # a reward model's values are not captured
                trainer.reward_funcs[i] = self._wrapped(function, self.names[i])
        generate = trainer._generate_and_score_completions

        @functools.wraps(generate)
        def generate_and_score(inputs):
            self.batch = {}
            output = generate(inputs)
            if trainer.model.training:  # evaluation's completions are not the run's steps
                self._capture(output["advantages"])
            return output

        trainer._generate_and_score_completions = generate_and_score

    def _wrapped(self, function, name: str):
        """The reward function, keeping what TRL gave it and what it returned."""
        if is_async_callable(function):  # TRL awaits these together: the wrapper must stay a coroutine

            @functools.wraps(function)
            async def wrapped_async(prompts, completions, completion_ids, **columns):
                values = await function(
                    prompts=prompts, completions=completions, completion_ids=completion_ids, **columns
                )
                self._keep(name, values, prompts, completions, completion_ids, columns)
                return values

            return wrapped_async

        @functools.wraps(function)
        def wrapped(prompts, completions, completion_ids, **columns):
            values = function(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
            self._keep(name, values, prompts, completions, completion_ids, columns)
            return values

        return wrapped

    def _keep(self, name, values, prompts, completions, completion_ids, columns) -> None:
        if "prompts" not in self.batch:
            data = {k: v for k, v in columns.items() if k not in NOT_COLUMNS}
            self.batch.update(prompts=prompts, completions=completions, completion_ids=completion_ids, columns=data)
            self.batch["values"] = {}
        self.batch["values"][name] = list(values)

    def _capture(self, advantages) -> None:
        """This generation's completions, one record each, with the advantages TRL computed. (B,) or (B, T)"""
        b = self.batch
        if "prompts" not in b:  # only reward models scored: no texts were seen (not captured)
            return
        advantages = advantages.detach().float().reshape(len(b["prompts"]), -1)[:, 0].tolist()  # (B,)
        for i, (prompt, completion) in enumerate(zip(b["prompts"], b["completions"], strict=True)):
            values = {name: _number(b["values"][name][i]) if name in b["values"] else None for name in self.names}
            scored = [(w, v) for w, v in zip(self.weights, values.values(), strict=True) if v is not None]
            every = len(b["values"]) == len(self.names)  # else a reward model's value is missing from the sum
            ids = [int(t) for t in b["completion_ids"][i]]
            self.captured.append(
                dict(
                    prompt=prompt if isinstance(prompt, str) else json.dumps(prompt),
                    completion=completion if isinstance(completion, str) else message_text(completion),
                    reward=sum(w * v for w, v in scored) if scored and every else None,
                    advantage=advantages[i],
                    num_tokens=len(ids),
                    truncated=bool(ids) and ids[-1] not in self.stop_ids,  # TRL's test for 'clipped'
                    completion_ids=ids,
                    columns={k: v[i] for k, v in b["columns"].items()},
                    values=values,
                )
            )

    # the callback's calls

    def began(self, max_steps: int) -> None:
        if self.main:
            config = self.store.run(self.run_id)["config"]
            self.store.set_config(self.run_id, {**config, "steps": max_steps})  # TRL's count, epochs included

    def step_ended(self, step: int, seconds: float) -> None:
        records = self.captured
        self.captured = []
        if self.trainer.accelerator.num_processes > 1:  # every rank calls it; rank 0 keeps the global order
            records = gather_object(records)
        if self.main:
            self.pending[step] = (records, seconds)

    def logged(self, step: int, logs: dict) -> None:
        if not self.main or not self.pending:
            return
        metrics = {column: logs[name] for name, column in METRICS.items() if logs.get(name) is not None}
        metrics["reward_function_means"] = {n: logs.get(f"rewards/{n}/mean") for n in self.names}
        rows = [self._rows(s, *self.pending.pop(s), metrics if s == step else {}) for s in sorted(self.pending)]
        self.store.write_steps(rows)

    def ended(self, step: int) -> None:
        if self.main:
            self.logged(-1, {})
            self.store.set_status(self.run_id, "finished")
            steps_per_second = step / (time.perf_counter() - self.started)
            self.store.set_run_stats(self.run_id, peak_memory_mib(self.trainer.accelerator.device), steps_per_second)
        # every rank leaves train() once rank 0 has stored the run: a rank that leaves the process group
        # (accelerate's end_training) while another still works in it can be aborted by gloo
        self.trainer.accelerator.wait_for_everyone()

    def failed(self, error: BaseException) -> None:
        if not self.main:
            return
        try:
            self.logged(-1, {})  # what was stepped is kept
        finally:
            status = "stopped" if isinstance(error, KeyboardInterrupt) else "failed"
            self.store.set_status(self.run_id, status, f"{type(error).__name__}: {error}")

    def _rows(self, step: int, records: list[dict], seconds: float, metrics: dict) -> dict:
        """A step's rows for each table, in the store's layout (`step_rows`)."""
        G = self.trainer.num_generations
        # the reward statistics of the step's own completions, as the workbench's trainer computes them
        metrics = dict.fromkeys(STEP_COLUMNS) | dict(seconds=seconds) | metrics | record_metrics(records, G, self.names)
        groups = [records[k : k + G] for k in range(0, len(records), G)]
        rows = step_rows(
            self.run_id,
            step,
            metrics,
            [as_group(n, group, self.names) for n, group in enumerate(groups)],
            [group[0]["columns"] for group in groups],
            [record["completion_ids"] for record in records],
            self.source,
            new_reward=bool(records) and not self.source_stored,  # the rollouts' reward_version names it
        )
        self.source_stored = self.source_stored or bool(records)
        return rows


class StoreCallback(TrainerCallback):
    """Hands the trainer's step ends, logs and end to the Watcher."""

    def __init__(self, watcher: Watcher):
        self.watcher = watcher
        self.step_started = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.watcher.began(state.max_steps)

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.watcher.step_ended(state.global_step, time.perf_counter() - self.step_started)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.watcher.logged(state.global_step, logs or {})

    def on_train_end(self, args, state, control, **kwargs):
        self.watcher.ended(state.global_step)


def as_group(group_id: int, records: list[dict], names: list[str]) -> Group:
    """G records of one prompt as the workbench's Group."""
    return Group(
        group_id=group_id,
        prompt=records[0]["prompt"],
        completions=[r["completion"] for r in records],
        rewards=[r["reward"] for r in records],
        reward_values={name: [r["values"][name] for r in records] for name in names},
        advantages=[r["advantage"] for r in records],
        num_tokens=[r["num_tokens"] for r in records],
        truncated=[r["truncated"] for r in records],
    )


def record_metrics(records: list[dict], group_size: int, names: list[str]) -> dict:
    """A step's reward and length statistics from its stored completions (they replace TRL's logged ones:
    TRL 1.16's reward_std is the whole batch's, the store's the mean within-group std)."""
    if not records:
        return {}
    rewards = grpo.reward_tensor([r["reward"] for r in records])
    means = {}
    for name in names:
        values = [r["values"][name] for r in records if r["values"][name] is not None]
        means[name] = sum(values) / len(values) if values else None
    return reward_statistics(rewards, group_size) | dict(
        completion_tokens_mean=sum(r["num_tokens"] for r in records) / len(records),
        truncated_frac=sum(r["truncated"] for r in records) / len(records),
        reward_function_means=means,
    )


def workbench_config(trainer) -> dict:
    """The workbench Config of this TRL run: each field TRL's arguments map onto, kept where Config accepts it."""
    args = trainer.args
    trl = args.to_dict() | {"num_processes": trainer.accelerator.num_processes}  # TRL's values by TRL's names
    lora = getattr(trainer.model, "peft_config", {}).get("default")
    if lora is not None:  # the adapter's settings, under the names of TRL's LoRA options
        trl |= dict(lora_r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout)
        trl["lora_target_modules"] = lora.target_modules
    mapped = dict(
        model=trainer.model.config._name_or_path,
        reward_weights=dict(zip(trainer.reward_func_names, trainer.reward_weights.tolist(), strict=True)),
        device="cpu" if args.use_cpu else "auto",  # one way: the export leaves the devices to accelerate
        **workbench_values(trl),
    )
    accepted: dict = {}
    # One by one: a value Config does not take (e.g. loss_type 'cispo') stays out, and is said; trl_args.json has it.
    for name, value in mapped.items():
        try:
            Config.from_dict({**accepted, name: value})
        except (ConfigError, TypeError) as error:
            logger.warning("the run's stored config leaves out TRL's %s=%r (%s)", name, value, error)
            continue
        accepted[name] = value
    return Config.from_dict(accepted).to_dict()


def reward_source(functions: list) -> str:
    """The reward functions' file when they share one that is not the training script, else their sources."""
    functions = [f for f in functions if not isinstance(f, torch.nn.Module)]
    try:
        files = {inspect.getsourcefile(f) for f in functions}
        script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
        if len(files) == 1 and None not in files and Path(next(iter(files))).resolve() != script:
            return Path(next(iter(files))).read_text()
        return "\n\n".join(inspect.getsource(f) for f in functions)
    except (OSError, TypeError):  # defined in a notebook cell or built at run time
        return ""


def dataset_name(dataset) -> str:
    info = getattr(dataset, "info", None)
    return (getattr(info, "dataset_name", None) or "trl").replace("/", "_")


def message_text(messages: list[dict]) -> str:
    """A conversational completion ([{'role', 'content'}, ...]) as the text of its contents."""
    return "".join(m["content"] if isinstance(m["content"], str) else json.dumps(m["content"]) for m in messages)


def _number(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
