"""The GRPO objective as pure tensor functions (DeepSeekMath, Shao et al. 2024, eq. 3).

For a prompt q, sample a group of G completions o_1..o_G from pi_old and score them (r_i).
Then maximise, per token t of completion i,

    min(rho_i,t * A_i, clip(rho_i,t, 1 - eps, 1 + eps) * A_i) - beta * KL_i,t
    rho_i,t = pi_theta(o_i,t | q, o_i,<t) / pi_old(o_i,t | q, o_i,<t)
    A_i     = r_i - mean(r_1..r_G)        (optionally / std(r_1..r_G))

Shapes: B = P * G completions per batch, ordered group by group (rows g*G .. g*G+G-1 are one
group); T = the longest completion's length; completion_mask (B, T) is 1 on a completion's tokens.

Implementation choices, where the literature disagrees:
1. Advantages: A = r - group mean. With `scale=True` it is divided by the group's std + 1e-4, the
   std with Bessel's correction (torch's default, as TRL); `scale=False` is Dr. GRPO's choice.
2. A group whose rewards are all equal gets A = 0 for every completion: no learning signal.
   A completion that no reward function scored (reward NaN) is left out of its group's mean and
   std and gets A = 0 (TRL 1.16); a step with no scored completion trains nothing.
3. KL: the k3 estimator exp(d) - d - 1 with d = log pi_ref - log pi_theta (Schulman 2020), per
   token, unbiased and always >= 0. It is part of the loss, not of the reward.
4. Loss aggregation, `loss_type`: 'grpo' averages each completion's tokens, then the completions
   (the paper's 1/G sum_i 1/|o_i| sum_t); 'dapo' averages over all tokens of the batch (DAPO), so
   long completions weigh more.
5. pi_old: with one update per batch (num_iterations=1) rho is exactly 1 and pi_old is the
   detached current log-prob; with more, pi_old is the sampling policy's log-prob, kept fixed.
6. Log-probs are taken at the sampling temperature (logits / T); top_p is not accounted for.
7. The loss is normalised by the whole batch (`batch_completions`, `batch_tokens`), so splitting a
   batch into micro-batches and summing their gradients gives exactly the full-batch gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor


def reward_tensor(rewards: list[float | None]) -> Tensor:
    """Rewards as a float tensor, NaN where no reward function scored the completion.  -> (B,)"""
    return torch.tensor([float("nan") if r is None else float(r) for r in rewards], dtype=torch.float32)


def group_advantages(rewards: Tensor, group_size: int, scale: bool) -> Tensor:
    """A_i = r_i - mean(r_group), divided by std(r_group) + 1e-4 when scale.  (B,) -> (B,)

    NaN rewards (unscored) are left out of the mean and std, and their advantage is 0.
    """
    r = rewards.view(-1, group_size)  # (P, G)
    a = r - r.nanmean(dim=1, keepdim=True)
    if scale:
        a = a / (group_std(r) + 1e-4)
    return a.nan_to_num(0.0).view(-1)


def group_std(r: Tensor) -> Tensor:
    """Each group's std over its scored (non-NaN) rewards, with Bessel's correction.  (P, G) -> (P, 1)

    NaN for a group with fewer than two scored rewards (as TRL's nanstd): its advantages are 0."""
    count = (~r.isnan()).sum(dim=1, keepdim=True)  # (P, 1)
    squares = (r - r.nanmean(dim=1, keepdim=True)).pow(2).nansum(dim=1, keepdim=True)
    return (squares / (count - 1)).sqrt().masked_fill(count < 2, float("nan"))


def zero_std_fraction(rewards: Tensor, group_size: int) -> float:
    """Fraction of groups whose scored rewards are all equal (advantage 0 everywhere: no signal)."""
    std = group_std(rewards.view(-1, group_size))  # (P, 1)
    return torch.isclose(std, torch.zeros_like(std)).float().mean().item()


def token_log_probs(logits: Tensor, tokens: Tensor, temperature: float) -> Tensor:
    """log softmax(logits / T) at the chosen tokens, in float32.  (B, T, V), (B, T) -> (B, T)

    As logit - logsumexp(logits): no (B, T, V) log-softmax is kept for the backward pass, which
    matters with real vocabularies (150k entries).
    """
    logits = logits.float() / temperature  # (B, T, V)
    chosen = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return chosen - torch.logsumexp(logits, dim=-1)


def kl_k3(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """Per-token KL(pi_theta || pi_ref) ~ exp(d) - d - 1, d = log pi_ref - log pi_theta.  (B, T)"""
    d = ref_log_probs - log_probs
    return torch.exp(d) - d - 1


def clipped_surrogate(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, clip_epsilon: float
) -> tuple[Tensor, Tensor]:
    """min(rho * A, clip(rho, 1 - eps, 1 + eps) * A) per token, and where the clip was active.

    (B, T), (B, T), (B,) -> (B, T) surrogate, (B, T) bool clipped
    """
    ratio = torch.exp(log_probs - old_log_probs)  # (B, T)
    a = advantages.unsqueeze(1)  # (B, 1)
    unclipped = ratio * a
    clipped = torch.clamp(ratio, 1 - clip_epsilon, 1 + clip_epsilon) * a
    return torch.min(unclipped, clipped), clipped < unclipped


def aggregate(
    per_token: Tensor,
    completion_mask: Tensor,
    loss_type: str,
    batch_completions: int,
    batch_tokens: int,
) -> Tensor:
    """Reduce a per-token loss (B, T) to a scalar over a (micro-)batch, normalised by the whole batch.

    grpo: sum_i (sum_t l_it m_it / |o_i|) / batch_completions
    dapo: sum_it l_it m_it / batch_tokens
    """
    masked = per_token * completion_mask
    if loss_type == "grpo":
        lengths = completion_mask.sum(dim=1).clamp(min=1)  # (B,)
        return (masked.sum(dim=1) / lengths).sum() / batch_completions
    if loss_type == "dapo":
        return masked.sum() / batch_tokens
    raise ValueError(f"unknown loss_type {loss_type!r}")


def grpo_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    ref_log_probs: Tensor | None,
    advantages: Tensor,
    completion_mask: Tensor,
    *,
    beta: float,
    clip_epsilon: float,
    loss_type: str,
    batch_completions: int,
    batch_tokens: int,
) -> tuple[Tensor, dict[str, Tensor]]:
    """-(surrogate - beta * KL), aggregated; returns (loss, sums of per-token stats for logging).

    The stats are sums over this micro-batch's completion tokens (kl, clipped, ratio) so that the
    caller can add them across micro-batches and divide by the batch's token count.
    """
    surrogate, clipped = clipped_surrogate(log_probs, old_log_probs, advantages, clip_epsilon)
    per_token = -surrogate
    mask = completion_mask.float()
    stats = {
        "clipped": (clipped.float() * mask).sum().detach(),
        "ratio": (torch.exp(log_probs - old_log_probs) * mask).sum().detach(),
    }
    if ref_log_probs is not None:
        kl = kl_k3(log_probs, ref_log_probs)  # (B, T)
        per_token = per_token + beta * kl
        stats["kl"] = (kl * mask).sum().detach()
    loss = aggregate(per_token, mask, loss_type, batch_completions, batch_tokens)
    return loss, stats
