"""The step's advantages: the one place that picks the group baseline or PPO's critic.

Every estimator but 'ppo' gives one advantage per completion, A_i = (r_i - b_i) / s, computed over the
trained groups of the whole batch (every process's rewards, gathered), with b and s as
workbench.engine.grpo defines them. 'ppo' gives one per token, by GAE on the critic's values
(workbench.engine.ppo). Groups that dynamic sampling dropped get 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from workbench.config import Config
from workbench.engine import distributed, grpo, ppo
from workbench.engine.batches import ScoredBatch


def estimate_advantages(batch: ScoredBatch, config: Config, critic: ppo.Critic | None = None) -> list[Tensor]:
    """Each round's advantages, 0 for groups left out.  -> (B,) per round, or per token (B, T) with a critic"""
    if config.advantage_estimator == "ppo":
        return ppo.gae_advantages(batch.rounds, config, critic)
    G = config.group_size
    rewards = torch.cat([one.rewards[one.trained_rows] for one in batch.rounds])
    rewards = distributed.all_gather(rewards)  # every process's: batch scaling and baselines see the whole batch
    a = distributed.own_part(grpo.group_advantages(rewards, G, config.scale_rewards, config.advantage_estimator))
    advantages, start = [], 0
    for one in batch.rounds:
        rows = one.trained_rows
        advantages.append(torch.zeros_like(one.rewards).index_put((rows,), a[start : start + len(rows)]))
        start += len(rows)
    return advantages


def completion_advantages(advantages: Tensor, completion_mask: Tensor) -> Tensor:
    """One advantage per completion, as the group view and the store show it: per-token ones (ppo)
    averaged over the completion's tokens.  (B,) or (B, T) -> (B,)"""
    if advantages.dim() == 1:
        return advantages
    mask = completion_mask.to(advantages.device)
    return (advantages * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
