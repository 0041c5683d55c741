"""train(config, task, workspace) -> events: the GRPO loop, top to bottom.

Each step: sample P prompts -> sample a group of G completions per prompt -> score them (in the
reward worker) -> group advantages -> update the LoRA adapter on the clipped surrogate with the KL penalty ->
store the step and yield its events. The math is in workbench.engine.grpo; this file is the order. Under torchrun
each process takes its share of the step's groups (workbench.engine.distributed) and rank 0 stores and reports.
"""

from __future__ import annotations

import hashlib
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

from workbench.config import Config, ConfigError
from workbench.engine import distributed, grpo
from workbench.engine.checkpoint import (
    checkpoint_folder,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from workbench.engine.critic import Critic, load_critic, update_critic
from workbench.engine.evaluation import check_held_out, due, evaluate
from workbench.engine.hardware import peak_memory_mib, reset_peak_memory
from workbench.engine.policy import Policy, load_policy
from workbench.engine.rollout import Rollouts, micro_batch_parts, sample_groups
from workbench.events import (
    Evaluated,
    Event,
    Group,
    GroupsScored,
    HealthWarning,
    RewardFailure,
    RunFailed,
    RunFinished,
    RunPaused,
    RunStarted,
    StepFinished,
)
from workbench.rewards.scoring import RewardError, Scorer, Scores
from workbench.rewards.tasks import Task
from workbench.store import health
from workbench.store.database import StepWriter, Store, step_rows


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
    stored with its `sweep_id` and `grid` values (workbench.engine.sweep). Under torchrun, only rank 0 yields
    the steps' events.
    """
    distributed.setup()
    distributed.check(config)
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
        learner = Learner(policy, optimizer, critic)
        run_id, completed = _open_run(store, config, task, resume, learner, sweep_id=sweep_id, grid=grid)
        yield from _steps(config, task, store, scorer, learner, run_id, completed, stop=stop, new_rewards=new_rewards)


@dataclass
class Learner:
    """What the steps train: the policy's adapter with its optimizer, and PPO's critic (None otherwise)."""

    policy: Policy
    optimizer: torch.optim.Optimizer
    critic: Critic | None = None

    def save(self, folder: Path, step: int, rng: dict) -> None:
        save_checkpoint(folder, self.policy, self.optimizer, step, rng, self.critic)


def _steps(config, task, store, scorer, learner, run_id, completed, *, stop, new_rewards) -> Iterator[Event]:
    """The loop: one GRPO step per iteration, stored whole; the run's status set however it ends."""
    checkpoint = checkpoint_folder(store.workspace, run_id)
    policy, main, device = learner.policy, distributed.is_main(), learner.policy.device
    rng = rng_state()  # at the start of step completed + 1: what a checkpoint keeps
    writer = StepWriter(store) if main else None  # commits each step on a background thread
    source_stored = False  # whether the store has the reward version yet
    status, error = "failed", None
    reset_peak_memory(device)  # the run's peak and pace, stored as it ends
    first, loop_started = completed, time.perf_counter()
    checkup = Checkup(store, run_id, config) if main else None
    yield RunStarted(run_id, task.name, config.model, config.to_dict(), completed + 1)
    try:
        if main and completed == 0 and due(config, 0):  # the base model's held-out metrics: where curves start
            evaluated = _evaluated(policy, scorer, task, config, run_id, 0, writer)
            checkup.evals.append(evaluated.metrics)
            yield evaluated
        for step in range(completed + 1, config.steps + 1):
            if distributed.any_rank(stop is not None and stop.is_set(), device):
                break
            if new_rewards is not None and not new_rewards.empty():
                scorer.load(new_rewards.get())  # a swapped reward scores from this step on
                source_stored = False
            started = time.perf_counter()

            # P prompts x G completions, or more; every rank fails when one does
            rounds = distributed.agree(sample_and_score, policy, scorer, task, step, config)
            trained = trained_groups(rounds, config)  # (P,) bool per round
            advantages = round_advantages(rounds, trained, config, learner.critic)  # (B,) or (B, T) per round
            scored = time.perf_counter()
            record = merge(distributed.gather_objects(step_record(rounds, trained, advantages, config)))
            if main:
                yield GroupsScored(run_id, step, record.groups, record.output)

            update_metrics, tokens = learn(learner, rounds, trained, advantages, step, config)
            completed = step
            if tokens is not None:  # each completion's, every process's, on rank 0
                tokens = distributed.gather_objects(completion_tokens(rounds, trained, tokens, config))
                if main:
                    record.tokens = [one for part in tokens for one in part]
            finished = time.perf_counter()
            rng = rng_state()  # what the next step starts from
            if not main:
                continue

            timings = dict(
                seconds=finished - started,
                seconds_sample=record.seconds_sample,
                seconds_score=record.seconds_score,
                seconds_update=finished - scored,
            )
            metrics = step_metrics(record, config.group_size)
            metrics |= update_metrics | timings
            rows = step_rows(
                run_id,
                step,
                metrics,
                record.groups,
                record.columns,
                record.completion_ids,
                scorer.source,
                new_reward=not source_stored,
                reward_output=record.output,
                tokens=record.tokens,
            )
            writer.write(rows)
            source_stored = True
            yield StepFinished(run_id, step, metrics)
            if due(config, step):
                evaluated = _evaluated(policy, scorer, task, config, run_id, step, writer)  # leaves the RNG as it was
                checkup.evals.append(evaluated.metrics)
                yield evaluated
            for finding in checkup.after(step, metrics):  # the checks that start firing at this step
                writer.write({"health": [dict(run_id=run_id, step=step, name=finding.check, **finding.words)]})
                yield HealthWarning(run_id, finding)
            if step % config.checkpoint_every == 0:
                writer.flush()  # the store holds every step the checkpoint has
                learner.save(checkpoint, step, rng)
        status = "finished" if completed == config.steps else "stopped"
    except GeneratorExit:  # the caller closed the generator: keep what is done
        status = "stopped"
        raise
    except RewardError as reward_error:  # reward code failed: pause, so that a fixed reward redoes this step
        distributed.ignore_sigterm()
        failure = getattr(reward_error, "failure", None) or RewardFailure(None, str(reward_error))
        status, error = "paused", failure.explain()
        yield RunPaused(run_id, completed + 1, failure)
    except Exception as exception:
        distributed.ignore_sigterm()  # a process that failed (gloo: another one died) still says why
        error = distributed.describe(exception)
        yield RunFailed(run_id, completed + 1, error, traceback.format_exc())
    finally:
        distributed.ignore_sigterm()
        if main:
            writer.close()
            if completed > 0:
                learner.save(checkpoint, completed, rng)
            store.set_status(run_id, status, error)
            steps_per_second = (completed - first) / (time.perf_counter() - loop_started)  # checkpoints included
            store.set_run_stats(run_id, peak_memory_mib(device), steps_per_second or None)  # None: no step ran
    if status in ("finished", "stopped"):
        yield RunFinished(run_id, completed, status, str(checkpoint))


def learn(learner: Learner, rounds, trained, advantages, step: int, config: Config) -> tuple[dict, list | None]:
    """The update on the step's trained groups at the step's learning rate, and the critic's (ppo), unless
    there is nothing to learn from (no reward scored, or no token in the loss): every process decides alike.
    -> the update's metrics with the learning rate, and its per-token numbers (`update`)."""
    policy, optimizer, critic = learner.policy, learner.optimizer, learner.critic
    learning_rate = config.learning_rate_at(step)
    set_learning_rate(optimizer, learning_rate)
    if critic is not None:
        set_learning_rate(critic.optimizer, learning_rate)
    batches = [
        (one.rollouts.select(rows), a[rows].to(policy.device))
        for one, mask, a in zip(rounds, trained, advantages)
        if (rows := group_rows(mask, config.group_size)).numel()
    ]
    scored_any = any(not one.rewards.isnan().all() for one in rounds)  # a reward function scored something
    learnable = any(loss_mask(b, config).any() for b, _ in batches)
    metrics = dict.fromkeys(UPDATE_METRICS) | {"learning_rate": learning_rate}
    if not distributed.any_rank(scored_any, policy.device) or not distributed.any_rank(learnable, policy.device):
        return metrics, None
    update_metrics, tokens = update(policy, optimizer, batches, config)
    metrics |= update_metrics
    if critic is not None:
        metrics |= update_critic(critic, critic_batches(rounds, trained, config), config)
    return metrics, tokens


class Checkup:
    """The run's health checks after each step (workbench.store.health): the steps so far, stored ones too on
    a resume, and which checks fire, so that a check is reported as it starts firing."""

    def __init__(self, store: Store, run_id: str, config: Config):
        self.config = config.to_dict()
        self.steps = store.records("SELECT * FROM steps WHERE run_id = $1 ORDER BY step", [run_id])  # on a resume
        self.evals = store.records("SELECT * FROM evals WHERE run_id = $1 ORDER BY step", [run_id])
        self.firing: set[str] = set()

    def after(self, step: int, metrics: dict) -> list[health.Finding]:
        self.steps.append({"step": step, **metrics})
        findings = health.diagnose(self.steps, self.config, self.evals)
        started = [f for f in findings if f.check not in self.firing]
        self.firing = {f.check for f in findings}
        return started


def _evaluated(policy, scorer, task, config, run_id, step, writer) -> Evaluated:
    """Evaluate on the task's held-out prompts (workbench.engine.evaluation) and store the `evals` row."""
    metrics = evaluate(policy, scorer, task.eval_rows, config, step)
    writer.write({"evals": [{"run_id": run_id, **metrics}]})
    return Evaluated(run_id, step, metrics)


@dataclass
class Round:
    """One round of a step's sampling: P prompts (this process's share of them), G completions each, scored."""

    rows: list[dict]
    rollouts: Rollouts
    scores: Scores
    rewards: torch.Tensor  # (B,) NaN where unscored
    seconds_sample: float
    seconds_score: float
    first_group_id: int = 0  # the step's groups are numbered round x P + g over every process's
    values: torch.Tensor | None = None  # (B, T) the critic's V_t at sampling (ppo)
    returns: torch.Tensor | None = None  # (B, T) the critic's targets R_t (ppo)


def sample_and_score(policy: Policy, scorer: Scorer, task: Task, step: int, config: Config) -> list[Round]:
    """The step's rounds: one, or with dynamic sampling (DAPO) more rounds of P new prompts until P
    groups have rewards that differ, at most 1 + dynamic_sampling_max_rounds rounds. Under torchrun, this
    process's share of the P prompts (one round)."""
    rounds, with_signal = [], 0
    for r in range(1 + (config.dynamic_sampling_max_rounds if config.dynamic_sampling else 0)):
        rows = task.batch(step, config.prompts_per_step, config.seed, round=r)
        width = max(len(policy.encode_prompt(row["prompt"])) for row in rows) if distributed.world_size() > 1 else None
        first, rows = distributed.share(rows)  # padded to the whole batch's width, as one process pads it
        rounds.append(sample_round(policy, scorer, rows, step, r * config.prompts_per_step + first, config, width))
        with_signal += int(grpo.has_signal(rounds[-1].rewards, config.group_size).sum())
        if with_signal >= config.prompts_per_step:
            break
    return rounds


def sample_round(
    policy: Policy,
    scorer: Scorer,
    rows: list[dict],
    step: int,
    first_group_id: int,
    config: Config,
    prompt_width: int | None = None,
) -> Round:
    """G completions for each row's prompt, scored: the step's groups first_group_id, first_group_id + 1, ...
    (each drawn from its own seed, so a dry run sees what step 1 samples)."""
    started = time.perf_counter()
    seeds = group_seeds(config.seed, step, first_group_id, len(rows))
    rollouts = sample(policy, rows, config, seeds, prompt_width)  # B = P x G
    sampled = time.perf_counter()
    scores = score(scorer, rows, rollouts, config, step)
    seconds = (sampled - started, time.perf_counter() - sampled)
    return Round(rows, rollouts, scores, grpo.reward_tensor(scores.rewards), *seconds, first_group_id)


def trained_groups(rounds: list[Round], config: Config) -> list[torch.Tensor]:
    """Which groups of each round the update trains on: every group, or with dynamic sampling the
    first P whose rewards differ.  -> (P,) bool per round"""
    if not config.dynamic_sampling:
        return [torch.ones(len(one.rows), dtype=torch.bool) for one in rounds]
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
    rewards = distributed.all_gather(rewards)  # every process's: batch scaling and baselines see the whole batch
    a = grpo.group_advantages(rewards, G, config.scale_rewards, config.advantage_estimator)
    a = distributed.own_part(a)
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


def sample(
    policy: Policy, rows: list[dict], config: Config, seeds: list[int] | None = None, prompt_width: int | None = None
) -> Rollouts:
    """A group of G completions for each row's prompt, group by group: B = P x G; `seeds`, one per
    group, make each group's completions its own (`rollout.group_uniforms`)."""
    return sample_groups(
        policy,
        [policy.encode_prompt(row["prompt"]) for row in rows],
        config.group_size,
        config.max_new_tokens,
        config.temperature,
        config.top_p,
        seeds,
        prompt_width,
    )


def group_seeds(seed: int, step: int, first_group_id: int, count: int) -> list[int]:
    """The sampling seed of each group from (run seed, step, group id): a step's groups are the same
    however the groups are split over processes, and a resumed run samples what it would have."""
    ids = range(first_group_id, first_group_id + count)
    return [int.from_bytes(hashlib.blake2b(f"{seed}/{step}/{g}".encode(), digest_size=7).digest()) for g in ids]


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
) -> tuple[dict[str, float | None], list[dict] | None]:
    """num_iterations optimizer steps on the batch, each accumulating over micro-batches.

    batches: the rollouts to train on, with their advantages (B,): one, or one per sampling round,
    since a micro-batch keeps its round's prompt padding (`Rollouts.select`).
    -> the step's metrics, and each completion's per-token numbers at the last pass (`token_stats`),
    in the batches' row order, with `log_token_stats`."""
    G = config.group_size
    counts = [
        sum(len(rollouts.completions) for rollouts, _ in batches),
        sum(int(loss_mask(rollouts, config).sum()) for rollouts, _ in batches),
        sum(int(rollouts.completion_mask.sum()) for rollouts, _ in batches),
    ]
    batch_completions, batch_tokens, sampled_tokens = map(int, distributed.all_sum(counts, policy.device))
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
    tokens = [] if config.log_token_stats else None
    with policy.training():
        for iteration in range(config.num_iterations):
            optimizer.zero_grad(set_to_none=True)
            for (part, advantages), inputs, ref, old in zip(parts, pass_inputs, ref_log_probs, old_log_probs):
                log_probs = policy.log_probs(*inputs, G, temperature)  # (b, T)
                if iteration == 0:  # TRL's sampling/sampling_logp_difference: sampler against the trained policy
                    gap = (log_probs.detach() - part.sampling_log_probs).abs()[part.completion_mask.bool()]
                    totals["sampling_gap"] += gap.sum().item()
                    totals["sampling_gap_max"] = max(totals["sampling_gap_max"], gap.max().item())
                old = log_probs.detach() if old is None else old
                loss, stats = grpo.grpo_loss(
                    log_probs,
                    old,
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
                if tokens is not None and iteration == config.num_iterations - 1:
                    tokens += token_stats(policy, part, advantages, log_probs.detach(), old, ref, config)
                totals["loss"] += loss.item()
                for name, value in stats.items():
                    totals[name] += value.item()
            distributed.sum_gradients(policy.trainable_parameters())  # the whole batch's gradient, on every process
            max_norm = config.max_grad_norm or float("inf")
            totals["grad_norm"] += torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), max_norm).item()
            optimizer.step()
    names = ("loss", "kl", "clipped", "ratio", "sampling_gap")
    totals |= zip(names, distributed.all_sum([totals[name] for name in names], policy.device))
    totals["sampling_gap_max"] = distributed.all_max([totals["sampling_gap_max"]], policy.device)[0]
    n = config.num_iterations
    return {
        "loss": totals["loss"] / n,
        "kl": totals["kl"] / (n * batch_tokens) if config.beta > 0 else None,
        "clip_frac": totals["clipped"] / (n * batch_tokens),
        "ratio_mean": totals["ratio"] / (n * batch_tokens),
        "grad_norm": totals["grad_norm"] / n,
        "sampling_logp_diff_mean": totals["sampling_gap"] / sampled_tokens,
        "sampling_logp_diff_max": totals["sampling_gap_max"],
    }, tokens


def token_stats(policy: Policy, part: Rollouts, advantages, log_probs, old_log_probs, ref_log_probs, config) -> list:
    """Each completion's tokens with log p under the policy and the reference, the ratio, whether the clip
    cut its gradient, the KL term and the sampler's entropy: what the token view shows.  -> a dict per row"""
    _, clipped = grpo.clipped_surrogate(log_probs, old_log_probs, advantages, config.clip_epsilon, config.epsilon_high)
    ratio = (log_probs - old_log_probs).exp()
    kl = None if ref_log_probs is None else grpo.kl_k3(log_probs, ref_log_probs)
    columns = dict(
        logprob=log_probs, ratio=ratio, clipped=clipped, entropy=part.entropies, ref_logprob=ref_log_probs, kl=kl
    )
    lists = {name: None if t is None else t.tolist() for name, t in columns.items()}  # one copy per tensor, not per row
    ids = part.completion_id_lists
    texts = iter(policy.tokenizer.batch_decode([[t] for row in ids for t in row]))  # every token of the part at once
    rows = []
    for i, row in enumerate(ids):
        n = len(row)
        numbers = {name: None if v is None else v[i][:n] for name, v in lists.items()}
        rows.append({"tokens": [next(texts) for _ in range(n)], **numbers})
    return rows


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


@dataclass
class StepRecord:
    """What the store and the step's metrics need of its sampling, as plain data: under torchrun each
    process makes its own and rank 0 merges them (`merge`)."""

    groups: list[Group]  # every round's, dropped ones included
    completion_ids: list[list[int]]  # (B,) each completion's token ids
    columns: list[dict]  # (P,) each group's dataset columns but the prompt
    output: dict[str, str]  # what each reward function printed
    entropy_sum: float  # over every completion token
    seconds_sample: float
    seconds_score: float
    sampling_rounds: int
    tokens: list[dict | None] | None = None  # (B,) each completion's per-token numbers, None where untrained


def step_record(rounds: list[Round], trained: list[torch.Tensor], advantages: list[torch.Tensor], config) -> StepRecord:
    G = config.group_size
    groups = [
        g
        for one, mask, a in zip(rounds, trained, advantages)
        for g in make_groups(one.rows, one.rollouts, one.scores, a, G, one.first_group_id, mask.tolist())
    ]
    return StepRecord(
        groups,
        [ids for one in rounds for ids in one.rollouts.completion_id_lists],
        [{k: v for k, v in row.items() if k != "prompt"} for one in rounds for row in one.rows],
        joined_output([one.scores.output for one in rounds]),
        sum(one.rollouts.entropies.sum().item() for one in rounds),
        sum(one.seconds_sample for one in rounds),
        sum(one.seconds_score for one in rounds),
        len(rounds),
    )


def completion_tokens(
    rounds: list[Round], trained: list[torch.Tensor], tokens: list[dict], config
) -> list[dict | None]:
    """The update's per-token numbers (the trained completions', in order) for every completion of the rounds."""
    trained_tokens = iter(tokens)
    rows = [set(group_rows(mask, config.group_size).tolist()) for mask in trained]
    return [
        next(trained_tokens) if i in rows[r] else None
        for r, one in enumerate(rounds)
        for i in range(len(one.rollouts.completions))
    ]


def merge(records: list[StepRecord] | None) -> StepRecord | None:
    """One record of every process's, in rank order (their groups' ids follow on); None off rank 0."""
    if records is None or len(records) == 1:
        return records and records[0]
    return StepRecord(
        [g for r in records for g in r.groups],
        [ids for r in records for ids in r.completion_ids],
        [c for r in records for c in r.columns],
        joined_output([r.output for r in records]),
        sum(r.entropy_sum for r in records),
        max(r.seconds_sample for r in records),  # the processes sample and score side by side
        max(r.seconds_score for r in records),
        max(r.sampling_rounds for r in records),
    )


def step_metrics(record: StepRecord, group_size: int) -> dict:
    """Reward and completion statistics of a step over every group it sampled, in every round
    (TRL's metrics, named as the store's columns)."""
    groups = record.groups
    values = {name: [v for g in groups for v in g.reward_values[name]] for name in groups[0].reward_values}
    num_tokens = torch.tensor([n for g in groups for n in g.num_tokens], dtype=torch.float)
    rewards = grpo.reward_tensor([r for g in groups for r in g.rewards])
    return reward_statistics(rewards, group_size) | {
        "completion_tokens_mean": num_tokens.mean().item(),
        "entropy": record.entropy_sum / num_tokens.sum().item(),  # per completion token
        "truncated_frac": sum(t for g in groups for t in g.truncated) / len(num_tokens),
        "reward_function_means": {name: _mean(vs) for name, vs in values.items()},
        "sampling_rounds": record.sampling_rounds,
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
    first_group_id: int = 0,
    trained: list[bool] | None = None,
) -> list[Group]:
    """The round's groups, numbered from `first_group_id` (group_id = round x P + g over every process's
    groups); advantages (B,), or per token (B, T), shown as each completion's mean."""
    advantages = completion_advantages(advantages, rollouts.completion_mask)
    groups = []
    for g, row in enumerate(rows):
        i = slice(g * group_size, (g + 1) * group_size)
        groups.append(
            Group(
                group_id=first_group_id + g,
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


def joined_output(outputs: list[dict[str, str]]) -> dict[str, str]:
    """What each reward function printed, over every round of the step or every process, in order."""
    names = dict.fromkeys(name for output in outputs for name in output)
    return {name: "".join(output.get(name, "") for output in outputs) for name in names}


def _open_run(
    store: Store,
    config: Config,
    task: Task,
    resume: str | None,
    learner: Learner,
    sweep_id: str | None = None,
    grid: dict | None = None,
) -> tuple[str, int]:
    """A new run (id, 0), or a resumed one restored from its checkpoint (id, last step). Under torchrun
    every process starts from rank 0's adapter, and rank 0 alone writes the store."""
    if resume is None:
        distributed.broadcast_parameters(learner.policy.trainable_parameters())
        run_id = distributed.broadcast(f"{task.name}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}")
        if distributed.is_main():
            store.create_run(
                run_id, task.name, task.folder, config.model, config.to_dict(), task.rewards.text, sweep_id, grid
            )
        return run_id, 0
    state = load_checkpoint(
        checkpoint_folder(store.workspace, resume), learner.policy, learner.optimizer, learner.critic
    )
    set_rng_state(state.rng)
    if distributed.is_main():
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
    "log_token_stats",
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
