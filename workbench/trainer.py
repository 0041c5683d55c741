"""train(config, task, workspace) -> events: the GRPO loop, top to bottom.

Each step: sample P prompts -> sample a group of G completions per prompt -> score them (in the
reward worker) -> group advantages -> update the LoRA adapter on the clipped surrogate with the KL penalty ->
store the step and yield its events. The math is in workbench.grpo; this file is the order.
"""

from __future__ import annotations

import json
import queue
import secrets
import time
import traceback
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import torch

from workbench import grpo
from workbench.checkpoint import (
    checkpoint_folder,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from workbench.config import Config
from workbench.events import (
    Event,
    Group,
    GroupsScored,
    RewardFailure,
    RunFailed,
    RunFinished,
    RunPaused,
    RunStarted,
    StepFinished,
)
from workbench.policy import Policy, load_policy
from workbench.rollout import Rollouts, sample_groups
from workbench.scoring import RewardError, RewardSource, Scorer, Scores
from workbench.store import StepWriter, Store
from workbench.tasks import Task


def train(
    config: Config,
    task: Task,
    workspace: str | Path,
    *,
    resume: str | None = None,
    stop=None,
    new_rewards: queue.Queue | None = None,
) -> Iterator[Event]:
    """Train, yielding events; `resume` continues a run by id; `stop.is_set()` ends it after a step.

    Every step is stored in `<workspace>/store.duckdb`; the adapter is checkpointed every
    `config.checkpoint_every` steps and whenever the run ends, however it ends. A reward source
    put on `new_rewards` scores from the next step on. Reward code that fails pauses the run
    (`RunPaused`): the failed step is not stored, and resuming redoes it.
    """
    store = Store(workspace)
    with Scorer(task.rewards, task.columns, config) as scorer:
        scorer.probe(task.rows)  # reward code is checked before any training
        policy = load_policy(config)
        optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=config.learning_rate)
        run_id, completed = _open_run(store, workspace, config, task, resume, policy, optimizer)
        yield from _steps(config, task, store, scorer, policy, optimizer, run_id, completed, stop, new_rewards)


def _steps(config, task, store, scorer, policy, optimizer, run_id, completed, stop, new_rewards) -> Iterator[Event]:
    """The loop: one GRPO step per iteration, stored whole; the run's status set however it ends."""
    checkpoint = checkpoint_folder(store.workspace, run_id)
    rng = rng_state()  # at the start of step completed + 1: what a checkpoint keeps
    writer = StepWriter(store)  # commits each step on a background thread
    unrecorded = scorer.source  # the reward version the store may not have yet
    status, error = "failed", None
    yield RunStarted(run_id, task.name, config.model, config.to_dict(), completed + 1)
    try:
        for step in range(completed + 1, config.steps + 1):
            if stop is not None and stop.is_set():
                break
            if new_rewards is not None and not new_rewards.empty():
                scorer.load(new_rewards.get())  # a swapped reward scores from this step on
                unrecorded = scorer.source
            started = time.perf_counter()

            rows = task.batch(step, config.prompts_per_step, config.seed)  # P prompts
            rollouts = sample(policy, rows, config)  # G completions each, B = P * G
            sampled = time.perf_counter()

            scores = score(scorer, rows, rollouts, config, step)
            rewards = torch.tensor(scores.rewards)  # (B,)
            advantages = grpo.group_advantages(rewards, config.group_size, config.scale_rewards)
            scored = time.perf_counter()
            groups = make_groups(rows, rollouts, scores, advantages, config.group_size)
            yield GroupsScored(run_id, step, groups, scores.output)

            update_metrics = update(policy, optimizer, rollouts, advantages.to(policy.device), config)
            completed = step
            finished = time.perf_counter()

            timings = dict(
                seconds=finished - started,
                seconds_sample=sampled - started,
                seconds_score=scored - sampled,
                seconds_update=finished - scored,
            )
            metrics = step_metrics(rewards, scores.values, rollouts, config.group_size)
            metrics |= update_metrics | timings
            writer.write(_step_rows(run_id, step, metrics, groups, rows, rollouts, scores, unrecorded, scorer.source))
            unrecorded = None
            yield StepFinished(run_id, step, metrics)
            rng = rng_state()  # what the next step starts from
            if step % config.checkpoint_every == 0:
                writer.flush()  # the store holds every step the checkpoint has
                save_checkpoint(checkpoint, policy, optimizer, step, rng)
        status = "finished" if completed == config.steps else "stopped"
    except GeneratorExit:  # the caller closed the generator: keep what is done
        status = "stopped"
        raise
    except RewardError as reward_error:  # reward code failed: pause, so that a fixed reward redoes this step
        failure = getattr(reward_error, "failure", None) or RewardFailure(None, str(reward_error))
        status, error = "paused", failure.explain()
        yield RunPaused(run_id, completed + 1, failure)
    except Exception as exception:
        error = f"{type(exception).__name__}: {exception}"
        yield RunFailed(run_id, completed + 1, error, traceback.format_exc())
    finally:
        writer.close()
        if completed > 0:
            save_checkpoint(checkpoint, policy, optimizer, completed, rng)
        store.set_status(run_id, status, error)
    if status in ("finished", "stopped"):
        yield RunFinished(run_id, completed, status, str(checkpoint))


def sample(policy: Policy, rows: list[dict], config: Config) -> Rollouts:
    """A group of G completions for each row's prompt, group by group: B = P x G."""
    return sample_groups(
        policy,
        [policy.encode_prompt(row["prompt"]) for row in rows],
        config.group_size,
        config.max_new_tokens,
        config.temperature,
        config.top_p,
    )


def score(scorer: Scorer, rows: list[dict], rollouts: Rollouts, config: Config, step: int) -> Scores:
    """The reward functions' values for every completion of the step (in the reward worker)."""
    group_rows = [row for row in rows for _ in range(config.group_size)]  # (B,)
    trainer_state = SimpleNamespace(global_step=step - 1, max_steps=config.steps)  # TRL's names
    return scorer.score(group_rows, rollouts.completions, rollouts.completion_id_lists, trainer_state)


def update(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    rollouts: Rollouts,
    advantages: torch.Tensor,
    config: Config,
) -> dict[str, float | None]:
    """num_iterations optimizer steps on the batch, each accumulating over micro-batches."""
    G = config.group_size
    batch_completions = len(rollouts.completions)
    batch_tokens = int(rollouts.completion_mask.sum())
    size = max(1, config.micro_batch_size // G) * G  # whole groups: they share a prompt pass
    rows = [slice(i, i + size) for i in range(0, batch_completions, size)]
    micro_batches = [rollouts.select(r).model_inputs() for r in rows]
    temperature = config.temperature
    ref_log_probs = [
        policy.reference_log_probs(*m, group_size=G, temperature=temperature) if config.beta > 0 else None
        for m in micro_batches
    ]
    old_log_probs = [
        _old_log_probs(policy, m, G, temperature) if config.num_iterations > 1 else None for m in micro_batches
    ]
    policy.model.train()
    totals = defaultdict(float)
    for _ in range(config.num_iterations):
        optimizer.zero_grad(set_to_none=True)
        for r, inputs, ref, old in zip(rows, micro_batches, ref_log_probs, old_log_probs):
            log_probs = policy.log_probs(*inputs, G, temperature)  # (b, T)
            loss, stats = grpo.grpo_loss(
                log_probs,
                log_probs.detach() if old is None else old,
                ref,
                advantages[r],
                inputs[3],  # the completion mask
                beta=config.beta,
                clip_epsilon=config.clip_epsilon,
                loss_type=config.loss_type,
                batch_completions=batch_completions,
                batch_tokens=batch_tokens,
            )
            loss.backward()
            totals["loss"] += loss.item()
            for name, value in stats.items():
                totals[name] += value.item()
        max_norm = config.max_grad_norm or float("inf")
        totals["grad_norm"] += torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), max_norm).item()
        optimizer.step()
    policy.model.eval()
    n = config.num_iterations
    return {
        "loss": totals["loss"] / n,
        "kl": totals["kl"] / (n * batch_tokens) if config.beta > 0 else None,
        "clip_frac": totals["clipped"] / (n * batch_tokens),
        "ratio_mean": totals["ratio"] / (n * batch_tokens),
        "grad_norm": totals["grad_norm"] / n,
    }


@torch.no_grad()
def _old_log_probs(policy: Policy, inputs, group_size: int, temperature: float) -> torch.Tensor:
    """log pi_old: the sampling policy, before this batch's first update.  (b, T)"""
    return policy.log_probs(*inputs, group_size, temperature)


def step_metrics(rewards: torch.Tensor, reward_values: dict, rollouts: Rollouts, group_size: int) -> dict[str, float]:
    """Reward and completion statistics of a step (TRL's metrics, named as the store's columns)."""
    per_group = rewards.view(-1, group_size)  # (P, G)
    function_means = {
        name: sum(v for v in values if v is not None) / max(1, sum(v is not None for v in values))
        for name, values in reward_values.items()
    }
    return {
        "reward_mean": rewards.mean().item(),
        "reward_std": per_group.std(dim=1).mean().item(),  # within-group std, as TRL's reward_std
        "frac_zero_std": grpo.zero_std_fraction(rewards, group_size),
        "completion_tokens_mean": rollouts.num_tokens.float().mean().item(),
        "truncated_frac": rollouts.truncated.float().mean().item(),
        "reward_function_means": function_means,
    }


def make_groups(rows: list[dict], rollouts: Rollouts, scores: Scores, advantages, group_size: int) -> list[Group]:
    groups = []
    for g, row in enumerate(rows):
        i = slice(g * group_size, (g + 1) * group_size)
        groups.append(
            Group(
                group_id=g,
                prompt=row["prompt"],
                completions=rollouts.completions[i],
                rewards=scores.rewards[i],
                reward_values={name: values[i] for name, values in scores.values.items()},
                advantages=advantages[i].tolist(),
                num_tokens=rollouts.num_tokens[i].tolist(),
                truncated=rollouts.truncated[i].tolist(),
            )
        )
    return groups


def _step_rows(
    run_id: str,
    step: int,
    metrics: dict,
    groups: list[Group],
    rows: list[dict],
    rollouts: Rollouts,
    scores: Scores,
    unrecorded: RewardSource | None,
    source: RewardSource,
) -> dict[str, list[dict]]:
    """The step's rows for each table of the store."""
    step_row = {
        **metrics,
        "run_id": run_id,
        "step": step,
        "reward_function_means": json.dumps(metrics["reward_function_means"]),
    }
    completion_ids = rollouts.completion_id_lists
    stored, values = [], []
    for group, row in zip(groups, rows):
        prompt = group.prompt if isinstance(group.prompt, str) else json.dumps(group.prompt)
        extra_columns = json.dumps({k: v for k, v in row.items() if k != "prompt"}, default=str)
        for k, completion in enumerate(group.completions):
            key = dict(run_id=run_id, step=step, group_id=group.group_id, sample_idx=k)
            stored.append(
                key
                | dict(
                    prompt=prompt,
                    completion=completion,
                    reward=group.rewards[k],
                    advantage=group.advantages[k],
                    num_tokens=group.num_tokens[k],
                    truncated=group.truncated[k],
                    reward_version=source.version,
                    completion_ids=completion_ids[len(stored)],
                    extra_columns=extra_columns,
                )
            )
            values += [key | dict(name=name, value=v[k]) for name, v in group.reward_values.items()]
    logs = [dict(run_id=run_id, step=step, name=name, output=text) for name, text in scores.output.items()]
    versions = (
        []
        if unrecorded is None
        else [dict(version=unrecorded.version, filename=unrecorded.filename, source=unrecorded.text)]
    )
    return {
        "steps": [step_row],
        "rollouts": stored,
        "reward_values": values,
        "reward_logs": logs,
        "reward_versions": versions,
    }


def _open_run(
    store: Store, workspace, config: Config, task: Task, resume: str | None, policy: Policy, optimizer
) -> tuple[str, int]:
    """A new run (id, 0), or a resumed one restored from its checkpoint (id, last step)."""
    if resume is None:
        run_id = f"{task.name}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
        store.create_run(run_id, task.name, task.folder, config.model, config.to_dict(), task.rewards.text)
        return run_id, 0
    if store.run(resume) is None:
        raise ValueError(f"no run {resume!r} in workspace {workspace}")
    state = load_checkpoint(checkpoint_folder(workspace, resume), policy, optimizer)
    set_rng_state(state.rng)
    store.truncate_run(resume, state.step)  # steps logged after the checkpoint are redone
    store.set_status(resume, "running")
    return resume, state.step
