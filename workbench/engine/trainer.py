"""train(config, task, workspace) -> events: the GRPO loop, one step per iteration, as the recipe reads.

Each step: sample P prompts x G completions and score them in the reward worker (batches) -> advantages,
A = r - mean(group) or another estimator's (advantages) -> update the LoRA adapter on the clipped surrogate
with the KL penalty (update) -> store the step and yield its events (run). The math is in
workbench.engine.grpo; each piece named here is one module. Under torchrun each process takes its share of
the step's groups (workbench.engine.distributed), and rank 0 stores and reports.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

from workbench.config import Config
from workbench.engine import distributed
from workbench.engine.advantages import estimate_advantages
from workbench.engine.batches import scored_batches
from workbench.engine.evaluation import check_held_out
from workbench.engine.records import step_record
from workbench.engine.run import open_run
from workbench.engine.update import update_policy
from workbench.events import Event
from workbench.rewards.scoring import Scorer
from workbench.rewards.tasks import Task


def train(
    config: Config,
    task: Task,
    workspace: str | Path,
    *,
    resume: str | None = None,
    stop=None,
    new_rewards: queue.Queue | None = None,
    sweep_id: str | None = None,
    grid: dict | None = None,
    run_id: str | None = None,
) -> Iterator[Event]:
    """Train, yielding events; `resume` continues a run by id; `stop.is_set()` ends it after a step.

    Every step is stored in `<workspace>/store.duckdb`; the adapter is checkpointed every
    `config.checkpoint_every` steps and whenever the run ends, however it ends. A reward source
    put on `new_rewards` scores from the next step on. Reward code that fails pauses the run
    (`RunPaused`): the failed step is not stored, and resuming redoes it. A run of a sweep is
    stored with its `sweep_id` and `grid` values (workbench.engine.sweep). A new run is stored as `run_id` when
    given (the app names a run as it starts it). Under torchrun, only rank 0 yields the steps' events.
    """
    distributed.setup()
    distributed.check(config)
    task = task.split(config.eval_split)  # held-out prompts are evaluated on, never trained on
    check_held_out(task, config)
    with Scorer(task.rewards, task.columns, config, task.folder) as scorer:
        scorer.probe(task.rows)  # reward code is checked before any model loads
        with open_run(config, task, scorer, workspace, resume, sweep_id=sweep_id, grid=grid, run_id=run_id) as run:
            yield from run.start()
            policy, critic = run.learner.policy, run.learner.critic
            for batch in scored_batches(policy, scorer, task, config, run.step, stop, new_rewards):
                advantages = estimate_advantages(batch, config, critic)  # group baseline, or the critic's GAE
                record = step_record(batch, advantages, config)  # the step's groups, every process's on rank 0
                yield from run.scored(record)  # on screen before the update
                metrics, tokens = update_policy(run.learner, batch, advantages, config)  # surrogate + KL
                yield from run.record(record, metrics, tokens)  # store, evaluate, health, checkpoint
        yield run.ended  # finished or stopped, paused by a reward error, or failed
