"""A run's life: open it (new, or resumed from its checkpoint), record each step, end it however it ends.

`open_run` gives a `Run`, a context manager. Each `Run.record` stores the step whole (on the writer thread),
evaluates when due, runs the health checks and checkpoints. On exit the run stores its status (finished,
stopped, paused when reward code failed, failed otherwise), a last checkpoint, its peak memory and pace, and
keeps the event that says how it ended (`Run.ended`): a reward that fails pauses the run, and a resume redoes
the failed step. Under torchrun every process starts from rank 0's adapter; rank 0 alone writes the store,
evaluates and checkpoints.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.config import Config, ConfigError
from workbench.engine import distributed
from workbench.engine.checkpoint import (
    checkpoint_folder,
    hold,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from workbench.engine.evaluation import due, evaluate
from workbench.engine.hardware import peak_memory_mib, reset_peak_memory
from workbench.engine.policy import Policy, load_policy
from workbench.engine.ppo import Critic, load_critic
from workbench.engine.records import Checkup, StepRecord, step_metrics
from workbench.engine.threads import ThreadPolicy
from workbench.engine.trackers import check_tracker, open_tracker
from workbench.events import (
    Evaluated,
    Event,
    GroupsScored,
    HealthWarning,
    RewardFailure,
    RunFailed,
    RunFinished,
    RunPaused,
    RunStarted,
    StepFinished,
)
from workbench.rewards.scoring import RewardError, Scorer
from workbench.rewards.tasks import Task
from workbench.store.database import Store, new_run_id
from workbench.store.writer import StepWriter, step_rows


@dataclass
class Learner:
    """What the steps train: the policy's adapter with its optimizer, and PPO's critic (None otherwise)."""

    policy: Policy
    optimizer: torch.optim.Optimizer
    critic: Critic | None = None

    def save(self, folder: Path, step: int, rng: dict) -> None:
        save_checkpoint(folder, self.policy, self.optimizer, step, rng, self.critic)


def load_learner(config: Config) -> Learner:
    policy = load_policy(config)
    optimizer = torch.optim.AdamW(
        policy.trainable_parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    critic = load_critic(config) if config.advantage_estimator == "ppo" else None  # PPO's value model
    return Learner(policy, optimizer, critic)


def open_run(
    config: Config,
    task: Task,
    scorer: Scorer,
    workspace: str | Path,
    resume: str | None = None,
    *,
    sweep_id: str | None = None,
    grid: dict | None = None,
    run_id: str | None = None,
) -> Run:
    """A new run (named `run_id`, or a new id), or run `resume` restored from its checkpoint (steps stored after
    it are redone)."""
    store = Store(workspace)
    run_id = distributed.broadcast(resume or run_id or new_run_id(task.name))
    lock = hold(workspace, run_id) if distributed.is_main() else None  # one process trains a run at a time
    try:
        if resume is not None:
            check_resumable(store, resume, config)
        threads = ThreadPolicy(config.threads)  # what other processes use while the model loads decides the first
        check_tracker(config)  # report_to's package and login, before the model loads
        learner = load_learner(config)
        step = 0 if resume is None else restore(store, config, learner, resume)
        if resume is None:
            distributed.broadcast_parameters(learner.policy.trainable_parameters())
            if distributed.is_main():
                rewards = task.rewards.text
                store.create_run(
                    run_id, task.name, task.folder, config.model, config.to_dict(), rewards, sweep_id, grid
                )
        return Run(store, config, task, scorer, learner, run_id, step, threads, lock)
    except BaseException:
        if lock is not None:
            lock.close()
        raise


def restore(store: Store, config: Config, learner: Learner, run_id: str) -> int:
    """The learner as the run's checkpoint holds it, and the RNG; the steps stored after it are dropped (redone).
    -> the checkpoint's step"""
    state = load_checkpoint(
        checkpoint_folder(store.workspace, run_id), learner.policy, learner.optimizer, learner.critic
    )
    set_rng_state(state.rng)
    if distributed.is_main():
        store.truncate_run(run_id, state.step)
        store.set_status(run_id, "running")
        store.set_config(run_id, config.to_dict())  # a resumed run may run to another last step
    return state.step


class Run:
    """An open run: its id, the last step it completed, what it trains, and where its steps go."""

    def __init__(self, store, config, task: Task, scorer: Scorer, learner: Learner, run_id: str, step, threads, lock):
        self.store, self.config, self.task, self.scorer, self.learner = store, config, task, scorer, learner
        self.run_id, self.step, self.first_step = run_id, step, step
        self.threads: ThreadPolicy = threads
        self.lock = lock  # the run's lock file, held until the run ends (checkpoint.hold)
        threads.decide()
        self.main = distributed.is_main()
        self.checkpoint = checkpoint_folder(store.workspace, run_id)
        self.rng = rng_state()  # at the start of step + 1: what a checkpoint keeps
        self.writer = StepWriter(store) if self.main else None  # commits each step on a background thread
        self.checkup = Checkup(store, run_id, config) if self.main else None
        self.tracker = open_tracker(config, run_id, task.name) if self.main else None  # report_to
        scorer.models.use_policy(learner.policy)  # the LLM judge asks its base model (adapter off): no second copy
        self.stored_source = None  # the reward source whose version the store holds
        self.ended: Event | None = None  # RunFinished, RunPaused or RunFailed, once the run is over
        reset_peak_memory(learner.policy.device)  # the run's peak and pace, stored as it ends
        self.opened = time.perf_counter()

    def start(self) -> Iterator[Event]:
        started = (self.run_id, self.task.name, self.config.model, self.config.to_dict(), self.step + 1)
        yield RunStarted(*started, threads=self.threads.choice.reason)
        if self.step == 0:
            yield from self.evaluate(0)  # the base model's held-out metrics: where the curves start

    def scored(self, record: StepRecord) -> Iterator[Event]:
        """The step's groups, for the live view, before the update."""
        if self.main:
            yield GroupsScored(self.run_id, record.step, record.groups, record.output)

    def record(self, record: StepRecord, metrics: dict, tokens: list | None) -> Iterator[Event]:
        """Store the step whole, evaluate when due, check its health, checkpoint when due."""
        if tokens is not None:  # each completion's, every process's, on rank 0
            parts = distributed.gather_objects(tokens)
            tokens = None if parts is None else [one for part in parts for one in part]
        finished = time.perf_counter()
        self.step, self.rng = record.step, rng_state()  # what the next step starts from
        threads = self.threads.choice.threads
        self.threads.decide()  # the next step's, from what other processes used during this one
        seconds_judge = self.scorer.models.step_seconds.pop(record.step, None)  # of seconds_score; None: no judge
        if not self.main:
            return
        step, source = record.step, self.scorer.source
        metrics = step_metrics(record, self.config.group_size) | metrics | timings(record, finished, threads)
        metrics["seconds_judge"] = seconds_judge
        rows = step_rows(
            self.run_id,
            step,
            metrics,
            record.groups,
            record.columns,
            record.completion_ids,
            source,
            new_reward=source is not self.stored_source,  # its version is stored with the first step it scores
            reward_output=record.output,
            tokens=tokens,
        )
        self.writer.write(rows)
        self.stored_source = source
        if self.tracker is not None:
            self.tracker.log(step, metrics, record.groups)  # TRL's metric names and completions table
        yield StepFinished(self.run_id, step, metrics)
        yield from self.evaluate(step)
        for finding in self.checkup.after(step, metrics, record.groups):  # the checks that start firing at this step
            self.writer.write({"health": [dict(run_id=self.run_id, step=step, name=finding.check, **finding.words)]})
            yield HealthWarning(self.run_id, finding)
        if step % self.config.checkpoint_every == 0:
            self.writer.flush()  # the store holds every step the checkpoint has
            self.learner.save(self.checkpoint, step, self.rng)

    def evaluate(self, step: int) -> Iterator[Event]:
        """The held-out metrics after `step` when due (workbench.engine.evaluation), stored in `evals`."""
        if self.main and due(self.config, step):
            metrics = evaluate(self.learner.policy, self.scorer, self.task.eval_rows, self.config, step)
            self.writer.write({"evals": [{"run_id": self.run_id, **metrics}]})
            self.checkup.evals.append(metrics)
            yield Evaluated(self.run_id, step, metrics)  # evaluating leaves the RNG as it was

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind, error, trace) -> bool:
        """Store how the run ended; an error in reward code (paused) or elsewhere (failed) is kept in `ended`
        rather than raised. A closed generator (GeneratorExit: stopped) or an interrupt goes on up."""
        distributed.ignore_sigterm()  # a process that failed (gloo: another one died) still says why
        status, text = "failed", None
        if kind is None:
            status = "finished" if self.step == self.config.steps else "stopped"
        elif issubclass(kind, GeneratorExit):  # the caller closed the generator: keep what is done
            status = "stopped"
        elif issubclass(kind, RewardError):  # reward code failed: pause, so that a fixed reward redoes this step
            failure = getattr(error, "failure", None) or RewardFailure(None, str(error))
            status, text = "paused", failure.explain()
            self.ended = RunPaused(self.run_id, self.step + 1, failure)
        elif issubclass(kind, Exception):
            text = distributed.describe(error)
            self.ended = RunFailed(self.run_id, self.step + 1, text, "".join(traceback.format_exception(error)))
        self.close(status, text)
        if status in ("finished", "stopped"):
            self.ended = RunFinished(self.run_id, self.step, status, str(self.checkpoint))
        return kind is not None and issubclass(kind, Exception)

    def close(self, status: str, error: str | None) -> None:
        if not self.main:
            return
        try:
            if self.tracker is not None:
                self.tracker.finish()
            self.writer.close()
            self.learner.save(self.checkpoint, self.step, self.rng)  # at step 0 too: a run paused there resumes
            self.store.set_status(self.run_id, status, error)
            steps_per_second = (self.step - self.first_step) / (time.perf_counter() - self.opened)  # checkpoints in
            self.store.set_run_stats(self.run_id, peak_memory_mib(self.learner.policy.device), steps_per_second or None)
        finally:
            if self.lock is not None:
                self.lock.close()


def timings(record: StepRecord, finished: float, threads: int) -> dict:
    """How long the step took, in all and per phase, and on how many threads."""
    return dict(
        threads=threads,
        seconds=finished - record.started,
        seconds_sample=record.seconds_sample,
        seconds_score=record.seconds_score,
        seconds_update=finished - record.scored,
    )


# What a resumed run may change: when it ends, how it is run and evaluated, never what its steps compute
# (an evaluation leaves the RNG as it found it; eval_split is not here: it decides the training prompts).
RESUMABLE_CHANGES = (
    "steps",
    "checkpoint_every",
    "reward_time_limit",
    "reward_memory_mb",
    "device",
    "threads",
    "log_token_stats",
    "report_to",
    "eval_steps",
    "eval_max_prompts",
    "eval_num_generations",
    "eval_success_reward",
)


def check_resumable(store: Store, run_id: str, config: Config) -> None:
    """Refuse to resume a run with settings that would make its later steps disagree with its stored config."""
    run = store.run(run_id)
    if run is None:
        raise ConfigError(f"no run {run_id!r} in workspace {store.workspace}")
    stored = Config.from_dict(run["config"]).to_dict()
    given = config.to_dict()
    changed = [name for name in given if given[name] != stored[name] and name not in RESUMABLE_CHANGES]
    if config.steps != stored["steps"] and config.lr_scheduler_type != "constant":
        changed.append("steps")  # the learning rate schedule ends at the last step
    if changed:
        was = ", ".join(f"{name}={stored[name]!r} (given {given[name]!r})" for name in changed)
        raise ConfigError(
            f"run {run_id} was trained with {was}: a resumed run keeps its settings, so that every step "
            "is stored with the config it ran with. Resume without changing them, or start a new run. "
            f"A resume may change {', '.join(RESUMABLE_CHANGES)} (steps only on a constant learning rate)."
        )
