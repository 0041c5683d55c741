"""The step's advantages: the one place that picks the group baseline or PPO's critic.

Every estimator but 'ppo' gives one advantage per completion, A_i = (r_i - b_i) / s, computed over the
trained groups of the whole batch (every process's rewards, gathered), with b and s as
workbench.engine.grpo defines them. The reward r_i is the round's: the reward functions' weighted sum, less
the KL penalty with use_kl_in_reward (workbench.engine.batches), or with multi_objective_aggregation
'normalize_then_sum' GDPO's sum of group-normalised functions, centred and scaled over the batch. 'ppo' gives
one per token, by GAE on the critic's values (workbench.engine.ppo). Groups that dynamic sampling dropped get 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from workbench.config import Config
from workbench.engine import distributed, grpo, ppo
from workbench.engine.batches import Round, ScoredBatch


def estimate_advantages(batch: ScoredBatch, config: Config, critic: ppo.Critic | None = None) -> list[Tensor]:
    """Each round's advantages, 0 for groups left out.  -> (B,) per round, or per token (B, T) with a critic"""
    if config.advantage_estimator == "ppo":
        return ppo.gae_advantages(batch.rounds, config, critic)
    G = config.group_size
    estimator, scale = config.advantage_estimator, config.scale_rewards
    if config.multi_objective_aggregation == "normalize_then_sum":
        estimator, scale = "reinforce_batch_mean", "batch"  # TRL's: the batch's mean and std, whatever scale_rewards
    rewards = torch.cat([trained_rewards(one, config) for one in batch.rounds])
    rewards = distributed.all_gather(rewards)  # every process's: batch scaling and baselines see the whole batch
    a = distributed.own_part(grpo.group_advantages(rewards, G, scale, estimator))
    advantages, start = [], 0
    for one in batch.rounds:
        rows = one.trained_rows
        advantages.append(torch.zeros_like(one.rewards).index_put((rows,), a[start : start + len(rows)]))
        start += len(rows)
    return advantages


def trained_rewards(one: Round, config: Config) -> Tensor:
    """The reward of each completion of the round's trained groups that the advantages start from: the round's
    rewards, or GDPO's sum of each reward function's values normalised within its group.  -> (n,)"""
    rows = one.trained_rows
    if config.multi_objective_aggregation == "sum_then_normalize":
        return one.rewards[rows]
    names = list(one.scores.values)
    values = torch.stack([grpo.reward_tensor(one.scores.values[name]) for name in names], dim=1)  # (B, K)
    weights = torch.tensor([float(config.reward_weights.get(name, 1.0)) for name in names])  # (K,)
    return grpo.decoupled_rewards(values[rows], weights, config.group_size)


def completion_advantages(advantages: Tensor, completion_mask: Tensor) -> Tensor:
    """One advantage per completion, as the group view and the store show it: per-token ones (ppo)
    averaged over the completion's tokens.  (B,) or (B, T) -> (B,)"""
    if advantages.dim() == 1:
        return advantages
    mask = completion_mask.to(advantages.device)
    return (advantages * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
