"""train(config, task, workspace) -> events: the GRPO loop, top to bottom.

Each step: sample P prompts -> sample a group of G completions per prompt -> score them ->
group advantages -> update the LoRA adapter on the clipped surrogate with the KL penalty ->
store the step and yield its events. The math is in workbench.grpo; this file is the order.
"""

from __future__ import annotations

import json
import secrets
import time
import traceback
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

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
from workbench.events import Event, Group, GroupsScored, RunFailed, RunFinished, RunStarted, StepFinished
from workbench.policy import Policy, load_policy
from workbench.rewards import load_reward_functions, score, total_rewards
from workbench.rollout import Rollouts, sample_groups
from workbench.store import StepWriter, Store
from workbench.tasks import Task


def train(
    config: Config,
    task: Task,
    workspace: str | Path,
    *,
    resume: str | None = None,
    stop=None,
) -> Iterator[Event]:
    """Train, yielding events; `resume` continues a run by id; `stop.is_set()` ends it after a step.

    Every step is stored in `<workspace>/store.duckdb`; the adapter is checkpointed every
    `config.checkpoint_every` steps and whenever the run ends, however it ends.
    """
    store = Store(workspace)
    reward_functions = load_reward_functions(task.reward_source, task.reward_file)
    policy = load_policy(config)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=config.learning_rate)
    run_id, completed = _open_run(store, workspace, config, task, resume, policy, optimizer)
    checkpoint = checkpoint_folder(workspace, run_id)
    rng = rng_state()  # at the start of step completed + 1: what a checkpoint keeps
    writer = StepWriter(store)  # commits each step on a background thread
    status = "failed"
    yield RunStarted(run_id, task.name, config.model, config.to_dict(), completed + 1)
    try:
        for step in range(completed + 1, config.steps + 1):
            if stop is not None and stop.is_set():
                break
            started = time.perf_counter()

            rows = task.batch(step, config.prompts_per_step, config.seed)  # P prompts
            rollouts = sample_groups(  # G completions each, B = P * G
                policy,
                [policy.encode_prompt(r["prompt"]) for r in rows],
                config.group_size,
                config.max_new_tokens,
                config.temperature,
                config.top_p,
            )
            sampled = time.perf_counter()

            group_rows = [row for row in rows for _ in range(config.group_size)]  # (B,)
            reward_values = score(reward_functions, group_rows, rollouts.completions)
            rewards = torch.tensor(total_rewards(reward_functions, reward_values))  # (B,)
            advantages = grpo.group_advantages(rewards, config.group_size, config.scale_rewards)
            scored = time.perf_counter()
            groups = _groups(rows, rollouts, rewards, reward_values, advantages, config.group_size)
            yield GroupsScored(run_id, step, groups)

            update_metrics = update(policy, optimizer, rollouts, advantages.to(policy.device), config)
            completed = step
            finished = time.perf_counter()

            timings = dict(
                seconds=finished - started,
                seconds_sample=sampled - started,
                seconds_score=scored - sampled,
                seconds_update=finished - scored,
            )
            metrics = step_metrics(rewards, reward_values, rollouts, config.group_size)
            metrics |= update_metrics | timings
            writer.write(*_step_rows(run_id, step, metrics, groups))
            yield StepFinished(run_id, step, metrics)
            rng = rng_state()  # what the next step starts from
            if step % config.checkpoint_every == 0:
                writer.flush()  # the store holds every step the checkpoint has
                save_checkpoint(checkpoint, policy, optimizer, step, rng)
        status = "finished" if completed == config.steps else "stopped"
    except GeneratorExit:  # the caller closed the generator: keep what is done
        status = "stopped"
        raise
    except Exception as error:
        yield RunFailed(run_id, completed + 1, f"{type(error).__name__}: {error}", traceback.format_exc())
    finally:
        writer.close()
        if completed > 0:
            save_checkpoint(checkpoint, policy, optimizer, completed, rng)
        store.set_status(run_id, status)
    if status != "failed":
        yield RunFinished(run_id, completed, status, str(checkpoint))


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


def _groups(rows, rollouts: Rollouts, rewards, reward_values, advantages, group_size) -> list[Group]:
    groups = []
    for g, row in enumerate(rows):
        i = slice(g * group_size, (g + 1) * group_size)
        groups.append(
            Group(
                group_id=g,
                prompt=row["prompt"],
                completions=rollouts.completions[i],
                rewards=rewards[i].tolist(),
                reward_values={name: values[i] for name, values in reward_values.items()},
                advantages=advantages[i].tolist(),
                num_tokens=rollouts.num_tokens[i].tolist(),
                truncated=rollouts.truncated[i].tolist(),
            )
        )
    return groups


def _step_rows(run_id: str, step: int, metrics: dict, groups: list[Group]) -> tuple[dict, list, list]:
    """The step's rows for the store's steps, rollouts and reward_values tables."""
    step_row = {
        **metrics,
        "run_id": run_id,
        "step": step,
        "reward_function_means": json.dumps(metrics["reward_function_means"]),
    }
    rollouts, values = [], []
    for group in groups:
        prompt = group.prompt if isinstance(group.prompt, str) else json.dumps(group.prompt)
        for k, completion in enumerate(group.completions):
            key = dict(run_id=run_id, step=step, group_id=group.group_id, sample_idx=k)
            rollouts.append(
                key
                | dict(
                    prompt=prompt,
                    completion=completion,
                    reward=group.rewards[k],
                    advantage=group.advantages[k],
                    num_tokens=group.num_tokens[k],
                    truncated=group.truncated[k],
                )
            )
            values += [key | dict(name=name, value=v[k]) for name, v in group.reward_values.items()]
    return step_row, rollouts, values


def _open_run(
    store: Store, workspace, config: Config, task: Task, resume: str | None, policy: Policy, optimizer
) -> tuple[str, int]:
    """A new run (id, 0), or a resumed one restored from its checkpoint (id, last step)."""
    if resume is None:
        run_id = f"{task.name}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
        store.create_run(run_id, task.name, task.folder, config.model, config.to_dict(), task.reward_source)
        return run_id, 0
    if store.run(resume) is None:
        raise ValueError(f"no run {resume!r} in workspace {workspace}")
    state = load_checkpoint(checkpoint_folder(workspace, resume), policy, optimizer)
    set_rng_state(state.rng)
    store.truncate_run(resume, state.step)  # steps logged after the checkpoint are redone
    store.set_status(resume, "running")
    return resume, state.step
