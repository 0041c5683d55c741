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
from dataclasses import dataclass
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
from workbench.config import Config, ConfigError
from workbench.critic import Critic, load_critic, update_critic
from workbench.evaluation import check_held_out, due, evaluate
from workbench.events import (
    Evaluated,
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
from workbench.hardware import peak_memory_mib, reset_peak_memory
from workbench.policy import Policy, load_policy
from workbench.rollout import Rollouts, micro_batch_parts, sample_groups
from workbench.scoring import RewardError, RewardSource, Scorer, Scores
from workbench.store import StepWriter, Store, rollout_rows
from workbench.tasks import Task


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
) -> Iterator[Event]:
    """Train, yielding events; `resume` continues a run by id; `stop.is_set()` ends it after a step.

    Every step is stored in `<workspace>/store.duckdb`; the adapter is checkpointed every
    `config.checkpoint_every` steps and whenever the run ends, however it ends. A reward source
    put on `new_rewards` scores from the next step on. Reward code that fails pauses the run
    (`RunPaused`): the failed step is not stored, and resuming redoes it. A run of a sweep is
    stored with its `sweep_id` and `grid` values (workbench.sweep).
    """
    store = Store(workspace)
    if resume is not None:
        check_resumable(store, resume, config)
    task = task.split(config.eval_split)  # held-out prompts are evaluated on, never trained on
    check_held_out(task, config)
    with Scorer(task.rewards, task.columns, config) as scorer:
        scorer.probe(task.rows)  # reward code is checked before any training
        policy = load_policy(config)
        optimizer = torch.optim.AdamW(
            policy.trainable_parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        critic = load_critic(config) if config.advantage_estimator == "ppo" else None  # PPO's value model
        run_id, completed = _open_run(
            store, workspace, config, task, resume, policy, optimizer, critic, sweep_id=sweep_id, grid=grid
        )
        yield from _steps(config, task, store, scorer, policy, optimizer, run_id, completed, stop, new_rewards, critic)


def _steps(
    config, task, store, scorer, policy, optimizer, run_id, completed, stop, new_rewards, critic=None
) -> Iterator[Event]:
    """The loop: one GRPO step per iteration, stored whole; the run's status set however it ends."""
    checkpoint = checkpoint_folder(store.workspace, run_id)
    rng = rng_state()  # at the start of step completed + 1: what a checkpoint keeps
    writer = StepWriter(store)  # commits each step on a background thread
    unrecorded = scorer.source  # the reward version the store may not have yet
    status, error = "failed", None
    reset_peak_memory(policy.device)  # the run's peak and pace, stored as it ends
    first, loop_started = completed, time.perf_counter()
    yield RunStarted(run_id, task.name, config.model, config.to_dict(), completed + 1)
    try:
        if completed == 0 and due(config, 0):  # the base model's held-out metrics: where their curves start
            yield _evaluated(policy, scorer, task, config, run_id, 0, writer)
        for step in range(completed + 1, config.steps + 1):
            if stop is not None and stop.is_set():
                break
            if new_rewards is not None and not new_rewards.empty():
                scorer.load(new_rewards.get())  # a swapped reward scores from this step on
                unrecorded = scorer.source
            started = time.perf_counter()

            rounds = sample_and_score(policy, scorer, task, step, config)  # P prompts x G completions, or more
            trained = trained_groups(rounds, config)  # (P,) bool per round
            advantages = round_advantages(rounds, trained, config, critic)  # (B,) or (B, T) per round
            scored = time.perf_counter()
            groups = [
                g
                for r, (one, mask, a) in enumerate(zip(rounds, trained, advantages))
                for g in make_groups(one.rows, one.rollouts, one.scores, a, config.group_size, r, mask.tolist())
            ]
            yield GroupsScored(run_id, step, groups, reward_output(rounds))

            learning_rate = config.learning_rate_at(step)
            set_learning_rate(optimizer, learning_rate)
            if critic is not None:
                set_learning_rate(critic.optimizer, learning_rate)
            batches = [
                (one.rollouts.select(rows), a[rows].to(policy.device))
                for one, mask, a in zip(rounds, trained, advantages)
                if (rows := group_rows(mask, config.group_size)).numel()
            ]
            unscored = all(one.rewards.isnan().all() for one in rounds)  # no reward function scored anything
            if unscored or not any(loss_mask(b, config).any() for b, _ in batches):  # nothing to learn from
                update_metrics = dict.fromkeys(UPDATE_METRICS)
            else:
                update_metrics = dict.fromkeys(UPDATE_METRICS) | update(policy, optimizer, batches, config)
                if critic is not None:
                    update_metrics |= update_critic(critic, critic_batches(rounds, trained, config), config)
            completed = step
            finished = time.perf_counter()

            timings = dict(
                seconds=finished - started,
                seconds_sample=sum(one.seconds_sample for one in rounds),
                seconds_score=sum(one.seconds_score for one in rounds),
                seconds_update=finished - scored,
            )
            metrics = step_metrics(rounds, config.group_size)
            metrics |= update_metrics | timings | {"learning_rate": learning_rate}
            writer.write(_step_rows(run_id, step, metrics, groups, rounds, unrecorded, scorer.source))
            unrecorded = None
            yield StepFinished(run_id, step, metrics)
            if due(config, step):
                yield _evaluated(policy, scorer, task, config, run_id, step, writer)
            rng = rng_state()  # what the next step starts from
            if step % config.checkpoint_every == 0:
                writer.flush()  # the store holds every step the checkpoint has
                save_checkpoint(checkpoint, policy, optimizer, step, rng, critic)
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
            save_checkpoint(checkpoint, policy, optimizer, completed, rng, critic)
        store.set_status(run_id, status, error)
        steps_per_second = (completed - first) / (time.perf_counter() - loop_started)  # checkpoints included
        store.set_run_stats(run_id, peak_memory_mib(policy.device), steps_per_second or None)  # None: no step ran
    if status in ("finished", "stopped"):
        yield RunFinished(run_id, completed, status, str(checkpoint))


def _evaluated(policy, scorer, task, config, run_id, step, writer) -> Evaluated:
    """Evaluate on the task's held-out prompts (workbench.evaluation) and store the `evals` row."""
    metrics = evaluate(policy, scorer, task.eval_rows, config, step)
    writer.write({"evals": [{"run_id": run_id, **metrics}]})
    return Evaluated(run_id, step, metrics)


@dataclass
class Round:
    """One round of a step's sampling: P prompts, G completions each, scored."""

    rows: list[dict]
    rollouts: Rollouts
    scores: Scores
    rewards: torch.Tensor  # (B,) NaN where unscored
    seconds_sample: float
    seconds_score: float
    values: torch.Tensor | None = None  # (B, T) the critic's V_t at sampling (ppo)
    returns: torch.Tensor | None = None  # (B, T) the critic's targets R_t (ppo)


def sample_and_score(policy: Policy, scorer: Scorer, task: Task, step: int, config: Config) -> list[Round]:
    """The step's rounds: one, or with dynamic sampling (DAPO) more rounds of P new prompts until P
    groups have rewards that differ, at most 1 + dynamic_sampling_max_rounds rounds."""
    rounds, with_signal = [], 0
    for r in range(1 + (config.dynamic_sampling_max_rounds if config.dynamic_sampling else 0)):
        started = time.perf_counter()
        rows = task.batch(step, config.prompts_per_step, config.seed, round=r)
        rollouts = sample(policy, rows, config)  # G completions each, B = P * G
        sampled = time.perf_counter()
        scores = score(scorer, rows, rollouts, config, step)
        rewards = grpo.reward_tensor(scores.rewards)
        rounds.append(Round(rows, rollouts, scores, rewards, sampled - started, time.perf_counter() - sampled))
        with_signal += int(grpo.has_signal(rewards, config.group_size).sum())
        if with_signal >= config.prompts_per_step:
            break
    return rounds


def trained_groups(rounds: list[Round], config: Config) -> list[torch.Tensor]:
    """Which groups of each round the update trains on: every group, or with dynamic sampling the
    first P whose rewards differ.  -> (P,) bool per round"""
    if not config.dynamic_sampling:
        return [torch.ones(config.prompts_per_step, dtype=torch.bool) for _ in rounds]
    masks, wanted = [], config.prompts_per_step
    for one in rounds:
        signal = grpo.has_signal(one.rewards, config.group_size)
        mask = signal & (signal.cumsum(dim=0) <= wanted)
        wanted -= int(mask.sum())
        masks.append(mask)
    return masks


def round_advantages(
    rounds: list[Round], trained: list[torch.Tensor], config: Config, critic: Critic | None = None
) -> list[torch.Tensor]:
    """Advantages over the trained groups (the batch the update sees), 0 for groups left out.  -> (B,) per round,
    or per token (B, T) with a critic"""
    if config.advantage_estimator == "ppo":
        return critic_advantages(rounds, trained, config, critic)
    G = config.group_size
    rewards = torch.cat([one.rewards[group_rows(mask, G)] for one, mask in zip(rounds, trained)])
    a = grpo.group_advantages(rewards, G, config.scale_rewards, config.advantage_estimator)
    advantages, start = [], 0
    for one, mask in zip(rounds, trained):
        rows = group_rows(mask, G)
        advantages.append(torch.zeros_like(one.rewards).index_put((rows,), a[start : start + len(rows)]))
        start += len(rows)
    return advantages


@torch.no_grad()
def critic_advantages(
    rounds: list[Round], trained: list[torch.Tensor], config: Config, critic: Critic | None
) -> list[torch.Tensor]:
    """PPO: per-token advantages by GAE on the critic's values at sampling, which the round keeps with
    the returns for the critic's update; 0 for groups left out.  -> (B, T) per round

    Without a critic (a dry run), the values are 0: what a run's first step sees, its head starting at 0.
    'batch' scaling divides by the std of the trained tokens' advantages."""
    advantages, trained_tokens = [], []
    for one, mask in zip(rounds, trained):
        completion_mask = one.rollouts.completion_mask.cpu()
        if critic is None:
            one.values = torch.zeros(completion_mask.shape)
        else:
            one.values = critic.values(one.rollouts, config.group_size).float().cpu()
        a, one.returns = grpo.gae(one.rewards, one.values, completion_mask, config.gae_lambda)
        in_batch = mask.repeat_interleave(config.group_size).unsqueeze(1)  # (B, 1)
        advantages.append(a * in_batch)
        trained_tokens.append(a[in_batch & loss_mask(one.rollouts, config).bool().cpu()])
    tokens = torch.cat(trained_tokens)
    if config.scale_rewards == "batch" and tokens.numel() > 1:
        advantages = [a / (tokens.std() + 1e-4) for a in advantages]
    return advantages


def critic_batches(rounds: list[Round], trained: list[torch.Tensor], config: Config) -> list[tuple]:
    """What the critic trains on: each round's trained groups with their loss mask, values at sampling and returns."""
    batches = []
    for one, mask in zip(rounds, trained):
        rows = group_rows(mask, config.group_size)
        if rows.numel():
            scored = ~one.rewards[rows].isnan().unsqueeze(1)  # an unscored completion has no return to learn
            tokens = loss_mask(one.rollouts, config)[rows].cpu() * scored
            device = one.rollouts.completion_mask.device
            targets = (tokens, one.values[rows], one.returns[rows])
            batches.append((one.rollouts.select(rows), *(t.float().to(device) for t in targets)))
    return batches


def completion_advantages(advantages: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """One advantage per completion, as the group view and the store show it: per-token ones (ppo)
    averaged over the completion's tokens.  (B,) or (B, T) -> (B,)"""
    if advantages.dim() == 1:
        return advantages
    mask = completion_mask.to(advantages.device)
    return (advantages * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def group_rows(mask: torch.Tensor, group_size: int) -> torch.Tensor:
    """The completion rows of the groups a (P,) mask picks.  -> (n,) long"""
    return mask.repeat_interleave(group_size).nonzero().squeeze(1)


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


UPDATE_METRICS = (
    "value_loss",
    "explained_variance",
    "loss",
    "kl",
    "clip_frac",
    "ratio_mean",
    "grad_norm",
    "sampling_logp_diff_mean",
    "sampling_logp_diff_max",
)


def set_learning_rate(optimizer: torch.optim.Optimizer, learning_rate: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = learning_rate


def update(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    batches: list[tuple[Rollouts, torch.Tensor]],
    config: Config,
) -> dict[str, float | None]:
    """num_iterations optimizer steps on the batch, each accumulating over micro-batches.

    batches: the rollouts to train on, with their advantages (B,): one, or one per sampling round,
    since a micro-batch keeps its round's prompt padding (`Rollouts.select`)."""
    G = config.group_size
    batch_completions = sum(len(rollouts.completions) for rollouts, _ in batches)
    batch_tokens = sum(int(loss_mask(rollouts, config).sum()) for rollouts, _ in batches)
    sampled_tokens = sum(int(rollouts.completion_mask.sum()) for rollouts, _ in batches)
    parts = [
        part for rollouts, a in batches for part in micro_batch_parts(rollouts, (a,), G, config.micro_batch_tokens)
    ]
    pass_inputs = [part.model_inputs() for part, _ in parts]
    temperature = config.temperature
    ref_log_probs = [
        policy.reference_log_probs(*m, group_size=G, temperature=temperature) if config.beta > 0 else None
        for m in pass_inputs
    ]
    old_log_probs = [
        _old_log_probs(policy, m, G, temperature) if config.num_iterations > 1 else None for m in pass_inputs
    ]
    totals = defaultdict(float)
    with policy.training():
        for iteration in range(config.num_iterations):
            optimizer.zero_grad(set_to_none=True)
            for (part, advantages), inputs, ref, old in zip(parts, pass_inputs, ref_log_probs, old_log_probs):
                log_probs = policy.log_probs(*inputs, G, temperature)  # (b, T)
                if iteration == 0:  # TRL's sampling/sampling_logp_difference: sampler against the trained policy
                    gap = (log_probs.detach() - part.sampling_log_probs).abs()[part.completion_mask.bool()]
                    totals["sampling_gap"] += gap.sum().item()
                    totals["sampling_gap_max"] = max(totals["sampling_gap_max"], gap.max().item())
                loss, stats = grpo.grpo_loss(
                    log_probs,
                    log_probs.detach() if old is None else old,
                    ref,
                    advantages,
                    loss_mask(part, config),
                    beta=config.beta,
                    clip_epsilon=config.clip_epsilon,
                    epsilon_high=config.epsilon_high,
                    loss_type=config.loss_type,
                    batch_completions=batch_completions,
                    batch_tokens=batch_tokens,
                    max_new_tokens=config.max_new_tokens,
                )
                loss.backward()
                totals["loss"] += loss.item()
                for name, value in stats.items():
                    totals[name] += value.item()
            max_norm = config.max_grad_norm or float("inf")
            totals["grad_norm"] += torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), max_norm).item()
            optimizer.step()
    n = config.num_iterations
    return {
        "loss": totals["loss"] / n,
        "kl": totals["kl"] / (n * batch_tokens) if config.beta > 0 else None,
        "clip_frac": totals["clipped"] / (n * batch_tokens),
        "ratio_mean": totals["ratio"] / (n * batch_tokens),
        "grad_norm": totals["grad_norm"] / n,
        "sampling_logp_diff_mean": totals["sampling_gap"] / sampled_tokens,
        "sampling_logp_diff_max": totals["sampling_gap_max"],
    }


def loss_mask(rollouts: Rollouts, config: Config) -> torch.Tensor:
    """The completion tokens the loss counts: all of them, or only the finished completions'
    (`mask_truncated_completions`, DAPO's overlong filtering).  (B, T)"""
    if config.mask_truncated_completions:
        return rollouts.completion_mask * ~rollouts.truncated.unsqueeze(1)
    return rollouts.completion_mask


@torch.no_grad()
def _old_log_probs(policy: Policy, inputs, group_size: int, temperature: float) -> torch.Tensor:
    """log pi_old: the sampling policy, before this batch's first update.  (b, T)"""
    return policy.log_probs(*inputs, group_size, temperature)


def step_metrics(rounds: list[Round], group_size: int) -> dict:
    """Reward and completion statistics of a step over every group it sampled, in every round
    (TRL's metrics, named as the store's columns)."""
    values = {name: [v for one in rounds for v in one.scores.values[name]] for name in rounds[0].scores.values}
    num_tokens = torch.cat([one.rollouts.num_tokens for one in rounds]).float()
    entropy = sum(one.rollouts.entropies.sum() for one in rounds) / num_tokens.sum()
    return reward_statistics(torch.cat([one.rewards for one in rounds]), group_size) | {
        "completion_tokens_mean": num_tokens.mean().item(),
        "entropy": entropy.item(),  # per completion token
        "truncated_frac": torch.cat([one.rollouts.truncated for one in rounds]).float().mean().item(),
        "reward_function_means": {name: _mean(vs) for name, vs in values.items()},
        "sampling_rounds": len(rounds),
    }


def reward_statistics(rewards: torch.Tensor, group_size: int) -> dict:
    """The `steps` columns of a step's rewards (B,), group by group: reward_mean, reward_std (the
    within-group std, mean over groups), frac_zero_std, and unscored_frac. Unscored completions (NaN)
    are left out of the statistics and counted."""
    group_std = grpo.group_std(rewards.view(-1, group_size))  # (groups, 1), NaN below 2 scored
    return {
        "reward_mean": _finite(rewards.nanmean()),
        "reward_std": _finite(group_std[group_std.isfinite()].mean()),
        "frac_zero_std": grpo.zero_std_fraction(rewards, group_size),
        "unscored_frac": rewards.isnan().float().mean().item(),
    }


def _mean(values: list[float | None]) -> float | None:
    """The mean of the scored values (None where a function returned None), 0 when none was scored."""
    scored = [v for v in values if v is not None]
    return sum(scored) / max(1, len(scored))


def _finite(value: torch.Tensor) -> float | None:
    return value.item() if value.isfinite() else None


def make_groups(
    rows: list[dict],
    rollouts: Rollouts,
    scores: Scores,
    advantages,
    group_size: int,
    sampling_round: int = 0,
    trained: list[bool] | None = None,
) -> list[Group]:
    """The round's groups, numbered on from the rounds before it (group_id = round x P + g); advantages
    (B,), or per token (B, T), shown as each completion's mean."""
    advantages = completion_advantages(advantages, rollouts.completion_mask)
    groups = []
    for g, row in enumerate(rows):
        i = slice(g * group_size, (g + 1) * group_size)
        groups.append(
            Group(
                group_id=sampling_round * len(rows) + g,
                prompt=row["prompt"],
                completions=rollouts.completions[i],
                rewards=scores.rewards[i],
                reward_values={name: values[i] for name, values in scores.values.items()},
                advantages=advantages[i].tolist(),
                num_tokens=rollouts.num_tokens[i].tolist(),
                truncated=rollouts.truncated[i].tolist(),
                dropped=trained is not None and not trained[g],
            )
        )
    return groups


def reward_output(rounds: list[Round]) -> dict[str, str]:
    """What each reward function printed, over every round of the step."""
    names = dict.fromkeys(name for one in rounds for name in one.scores.output)
    return {name: "".join(one.scores.output.get(name, "") for one in rounds) for name in names}


def _step_rows(
    run_id: str,
    step: int,
    metrics: dict,
    groups: list[Group],
    rounds: list[Round],
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
    completion_ids = [ids for one in rounds for ids in one.rollouts.completion_id_lists]
    columns = [{k: v for k, v in row.items() if k != "prompt"} for one in rounds for row in one.rows]
    logs = [dict(run_id=run_id, step=step, name=name, output=text) for name, text in reward_output(rounds).items()]
    versions = (
        []
        if unrecorded is None
        else [dict(version=unrecorded.version, filename=unrecorded.filename, source=unrecorded.text)]
    )
    return {
        "steps": [step_row],
        **rollout_rows(run_id, step, groups, columns, completion_ids, source.version),
        "reward_logs": logs,
        "reward_versions": versions,
    }


def _open_run(
    store: Store,
    workspace,
    config: Config,
    task: Task,
    resume: str | None,
    policy: Policy,
    optimizer,
    critic=None,
    sweep_id: str | None = None,
    grid: dict | None = None,
) -> tuple[str, int]:
    """A new run (id, 0), or a resumed one restored from its checkpoint (id, last step)."""
    if resume is None:
        run_id = f"{task.name}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
        store.create_run(
            run_id, task.name, task.folder, config.model, config.to_dict(), task.rewards.text, sweep_id, grid
        )
        return run_id, 0
    state = load_checkpoint(checkpoint_folder(workspace, resume), policy, optimizer, critic)
    set_rng_state(state.rng)
    store.truncate_run(resume, state.step)  # steps logged after the checkpoint are redone
    store.set_status(resume, "running")
    store.set_config(resume, config.to_dict())  # a resumed run may run to another last step
    return resume, state.step


# What a resumed run may change: when it ends, how it is run and evaluated, never what its steps compute
# (an evaluation leaves the RNG as it found it; eval_split is not here: it decides the training prompts).
RESUMABLE_CHANGES = (
    "steps",
    "checkpoint_every",
    "reward_time_limit",
    "reward_memory_mb",
    "device",
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
