"""One scored batch per step: P prompts' groups of G completions, sampled from the policy and scored.

A round samples P prompts x G completions (each group from its own seed) and scores them in the reward
worker. With DAPO's dynamic sampling a step samples more rounds of P new prompts until P groups have
rewards that differ, and marks once which groups the update trains on: the rest are stored as dropped.
With use_kl_in_reward (and beta > 0) the step then takes the policy's and the reference's log-probs of every
completion and subtracts beta x the completion's summed KL from its reward (`penalise`): the advantages see
the penalised reward, the store the reward functions' sum and the penalty beside their values.
Under torchrun each process samples its share of every round's prompts (workbench.engine.distributed).
"""

from __future__ import annotations

import hashlib
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from workbench.config import Config
from workbench.engine import distributed, grpo
from workbench.engine.policy import Policy
from workbench.engine.rollout import Rollouts, micro_batches, sample_groups
from workbench.rewards.scoring import Scorer, Scores
from workbench.rewards.tasks import Task


@dataclass
class Round:
    """One round of a step's sampling: P prompts (this process's share of them), G completions each, scored."""

    rows: list[dict]
    rollouts: Rollouts
    scores: Scores
    rewards: Tensor  # (B,) what the advantages use: r_i, less kl_penalty with use_kl_in_reward; NaN where unscored
    seconds_sample: float
    seconds_score: float
    first_group_id: int = 0  # the step's groups are numbered round x P + g over every process's
    trained: Tensor | None = None  # (P,) bool: the groups the update trains on (all but dynamic sampling's drops)
    values: Tensor | None = None  # (B, T) the critic's V_t at sampling (ppo)
    returns: Tensor | None = None  # (B, T) the critic's targets R_t (ppo)
    ref_log_probs: Tensor | None = None  # (B, T) log pi_ref, taken before the advantages (use_kl_in_reward)
    kl_penalty: Tensor | None = None  # (B,) beta x sum_t k_t, subtracted from rewards (use_kl_in_reward)

    @property
    def trained_rows(self) -> Tensor:
        """The completion rows of the trained groups.  (n,) long"""
        return group_rows(self.trained, len(self.rewards) // len(self.trained))


@dataclass
class ScoredBatch:
    """A step's rounds, every completion scored and every group marked trained or dropped."""

    step: int
    rounds: list[Round]
    started: float  # time.perf_counter() as the step began

    def trained(self) -> list[tuple[Round, Tensor]]:
        """Each round that has trained groups, with their completion rows."""
        return [(one, rows) for one in self.rounds if (rows := one.trained_rows).numel()]


def scored_batches(
    policy: Policy,
    scorer: Scorer,
    task: Task,
    config: Config,
    start: int = 0,
    stop=None,
    new_rewards: queue.Queue | None = None,
) -> Iterator[ScoredBatch]:
    """The batches of steps start + 1 .. config.steps, until `stop` is set (on any process). A reward source
    put on `new_rewards` scores from the next step on; every process fails when one's sampling or scoring does."""
    for step in range(start + 1, config.steps + 1):
        if distributed.any_rank(stop is not None and stop.is_set(), policy.device):
            return
        if new_rewards is not None and not new_rewards.empty():
            scorer.load(new_rewards.get())
        started = time.perf_counter()
        rounds = distributed.agree(sample_rounds, policy, scorer, task, step, config)
        mark_trained(rounds, config)
        if config.use_kl_in_reward and config.beta > 0:
            for one in rounds:
                penalise(policy, one, config)
        yield ScoredBatch(step, rounds, started)


def sample_rounds(policy: Policy, scorer: Scorer, task: Task, step: int, config: Config) -> list[Round]:
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
    scores = score(scorer, rows, rollouts, config, step, policy)
    seconds = (sampled - started, time.perf_counter() - sampled)
    return Round(rows, rollouts, scores, grpo.reward_tensor(scores.rewards), *seconds, first_group_id)


def mark_trained(rounds: list[Round], config: Config) -> None:
    """Mark the groups the update trains on: every group, or with dynamic sampling the first P whose
    rewards differ."""
    wanted = config.prompts_per_step
    for one in rounds:
        if not config.dynamic_sampling:
            one.trained = torch.ones(len(one.rows), dtype=torch.bool)
            continue
        signal = grpo.has_signal(one.rewards, config.group_size)  # (P,)
        one.trained = signal & (signal.cumsum(dim=0) <= wanted)
        wanted -= int(one.trained.sum())


@torch.no_grad()
def penalise(policy: Policy, one: Round, config: Config) -> None:
    """The KL in the reward (use_kl_in_reward): log pi_theta (the policy that sampled, by the update's forward)
    and log pi_ref of the round's completions, micro-batch by micro-batch; the reward less beta x sum_t k_t
    (`grpo.kl_penalty`), which the store keeps per completion beside the reward functions' values."""
    rollouts, G, T = one.rollouts, config.group_size, config.temperature
    log_probs = torch.zeros_like(rollouts.sampling_log_probs)  # (B, T)
    ref_log_probs = torch.zeros_like(log_probs)
    for rows in micro_batches(rollouts, G, config.micro_batch_tokens):
        part = rollouts.select(rows)
        width, inputs = part.completion_ids.shape[1], part.model_inputs()
        log_probs[rows, :width] = policy.log_probs(*inputs, G, T).to(log_probs)
        ref_log_probs[rows, :width] = policy.reference_log_probs(*inputs, group_size=G, temperature=T).to(log_probs)
    mask = rollouts.completion_mask.to(log_probs)
    one.kl_penalty = grpo.kl_penalty(log_probs, ref_log_probs, mask, config.beta, config.kl_estimator).cpu()
    one.ref_log_probs = ref_log_probs
    one.rewards = one.rewards - one.kl_penalty  # NaN (unscored) stays NaN
    one.scores.values["kl_penalty"] = one.kl_penalty.tolist()


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


def score(
    scorer: Scorer, rows: list[dict], rollouts: Rollouts, config: Config, step: int, policy: Policy | None = None
) -> Scores:
    """The reward functions' values for every completion of the rows' groups (in the reward worker), and the reward
    models' and the LLM judge's (here); the judge asks `policy`'s base model, its adapter off, and its seconds are
    charged to the step (`Run.record` stores them as seconds_judge)."""
    if policy is not None:
        scorer.models.use_policy(policy)
    group_rows = [row for row in rows for _ in range(config.group_size)]  # (B,)
    with scorer.models.timing(step):
        return scorer.score(group_rows, rollouts.completions, rollouts.completion_id_lists, global_step=step - 1)


def group_rows(mask: Tensor, group_size: int) -> Tensor:
    """The completion rows of the groups a (P,) mask picks.  -> (n,) long"""
    return mask.repeat_interleave(group_size).nonzero().squeeze(1)


def loss_mask(rollouts: Rollouts, config: Config) -> Tensor:
    """The completion tokens the loss counts: all of them, or only the finished completions'
    (`mask_truncated_completions`, DAPO's overlong filtering).  (B, T)"""
    if config.mask_truncated_completions:
        return rollouts.completion_mask * ~rollouts.truncated.unsqueeze(1)
    return rollouts.completion_mask
