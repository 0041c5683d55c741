"""The GRPO objective as pure tensor functions (DeepSeekMath, Shao et al. 2024, eq. 3).

For a prompt q, sample a group of G completions o_1..o_G from pi_old and score them (r_i).
Then maximise, per token t of completion i,

    min(rho_i,t * A_i, clip(rho_i,t, 1 - eps_low, 1 + eps_high) * A_i) - beta * KL_i,t
    rho_i,t = pi_theta(o_i,t | q, o_i,<t) / pi_old(o_i,t | q, o_i,<t)
    A_i     = (r_i - b_i) / s             (b_i: the baseline, s: the scale)
    KL_i,t  = k(d_i,t),  d_i,t = log pi_ref(o_i,t | ...) - log pi_theta(o_i,t | ...)

Shapes: B = P * G completions per batch, ordered group by group (rows g*G .. g*G+G-1 are one
group); T = the longest completion's length; completion_mask (B, T) is 1 on a completion's tokens.

Implementation choices, where the literature disagrees (each variant's name and one-line description are in
workbench.variants, which the config, the app and the TRL mapping read):
1. The baseline b_i, `estimator` (`advantage_estimator`):
   - grpo: the group's mean, b_i = mean(r_1..r_G) (DeepSeekMath);
   - rloo: the mean of the other G - 1, b_i = (sum_j r_j - r_i) / (G - 1) (Ahmadian et al. 2024:
     REINFORCE leave-one-out, which TRL's RLOOTrainer uses); it equals G / (G - 1) x grpo's;
   - reinforce: none, b_i = 0 (Williams 1992): every reward pushes its completion up;
   - reinforce_batch_mean: the mean reward of the whole batch, b_i = mean(r_1..r_B);
   - ppo: a learned critic V (PPO, Schulman et al. 2017, as InstructGPT and TRL's PPOTrainer used it):
     per-token advantages by GAE (Schulman et al. 2016) with gamma = 1 and the reward r_i on the
     completion's last token (the KL stays in the loss, as for the others):
         delta_t = [t = |o_i| - 1] r_i + V_t+1 - V_t        (V past the last token is 0)
         A_t     = delta_t + lambda A_t+1,   returns R_t = A_t + V_t
     lambda = 1 gives A_t = r_i - V_t: the critic's value of each prefix is the baseline. The critic
     learns R_t with PPO's clipped value loss (see `value_loss`).
2. The scale s, `scale_rewards` (TRL's names): 'group' divides by the group's reward std + 1e-4,
   the std with Bessel's correction (torch's default, as TRL); 'batch' by the whole batch's std +
   1e-4; 'none' by 1 (Dr. GRPO's choice). A group's std only fits a group's baseline (grpo, rloo).
   For ppo, 'batch' divides the per-token advantages by their std over the batch's tokens (TRL's
   PPOTrainer whitens them: it also subtracts their mean).
3. A group whose rewards are all equal gets A = 0 for every completion with a group baseline: no
   learning signal. A completion that no reward function scored (reward NaN) is left out of every
   mean and std and gets A = 0 (TRL 1.16); a step with no scored completion trains nothing.
   Several reward functions, `multi_objective_aggregation` (TRL's): 'sum_then_normalize' makes r_i their
   weighted sum; 'normalize_then_sum' (GDPO) normalises each one's values within the group first, (v - mean) /
   (std + 1e-4), sums them with the weights (unscored: 0), then A = (r - mean(r)) / (std(r) + 1e-4) over the
   batch, as TRL does whatever its scale_rewards (the config asks for grpo and scale_rewards 'batch').
4. KL, `kl_estimator` (Schulman 2020; d = log pi_ref - log pi_theta, on tokens the policy sampled): k1 = -d,
   unbiased, a token's can be negative; k2 = d^2 / 2, biased, >= 0; k3 = exp(d) - d - 1, unbiased, >= 0
   (GRPO's, TRL's only one; no clamp). Where it goes, `use_kl_in_reward` (verl's name):
   - in the loss (default): + beta * k per token. In expectation over the policy's tokens, the gradient of
     k1 is 0, of k2 that of KL(pi_theta || pi_ref), of k3 that of KL(pi_ref || pi_theta) (arXiv 2510.01555);
   - in the reward (PPO-RLHF's): r_i - beta * sum_t k_t over the completion, pi_theta the sampling policy,
     before the advantages; the penalty (`kl_penalty`) is detached and reaches the policy through A only.
     The rollouts' `reward` stays the reward functions' weighted sum; their `advantage` is the penalised one.
   The logged `kl` is k3's mean per completion token whatever the estimator and placement (one scale for all
   runs). beta = 0 skips the reference wherever the KL would go.
5. Loss aggregation, `loss_type`, as TRL 1.16 defines them (l_it the per-token loss, m_it the mask):
   - grpo: sum_i (sum_t l_it m_it / |o_i|) / B: each completion's token mean, then the mean over
     completions (the paper), so a long completion's tokens weigh less;
   - bnpo: sum_it l_it m_it / sum_it m_it over the batch. TRL divides by each micro-batch's own
     token count; here a batch is one optimizer step however it is split, so bnpo equals dapo;
   - dr_grpo: sum_it l_it m_it / (B * max_new_tokens), a constant (Dr. GRPO, Liu et al. 2025);
   - dapo: sum_it l_it m_it / sum_it m_it over the whole batch (DAPO, Yu et al. 2025);
   - cispo: dapo's aggregation of CISPO's per-token loss (below).
6. The ratio and its clipping: eps_low = clip_epsilon, eps_high = epsilon_high or clip_epsilon (DAPO's
   clip-higher). `importance_sampling_level` 'sequence' (GSPO, Zheng et al. 2025; TRL's): one ratio per
   completion, s_i = exp(sum_t m_it (log pi_theta - log pi_old) / max(|o_i|, 1)), clipped as one, its
   surrogate on each of its tokens. On-policy (ratio 1) its gradient is the token level's for every loss_type:
   they part only when pi_old is not pi_theta (num_iterations > 1). `loss_type` 'cispo' (MiniMax-M1; TRL's):
   the per-token loss -sg(min(rho, eps_max)) * A * log pi_theta, rho per token or sequence, capped from above
   only, at eps_max = epsilon_high itself (TRL's; ScaleRL suggests 5.0; 0: clip_epsilon, as TRL's default):
   no token loses its gradient.
7. pi_old: with one update per batch (num_iterations=1) rho is exactly 1 and pi_old is the
   detached current log-prob; with more, pi_old is the sampling policy's log-prob, kept fixed.
8. Log-probs are taken at the sampling temperature (logits / T); top_p is not accounted for.
9. The loss is normalised by the whole batch (`batch_completions`, `batch_tokens`), so splitting a
   batch into micro-batches and summing their gradients gives exactly the full-batch gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor


def reward_tensor(rewards: list[float | None]) -> Tensor:
    """Rewards as a float tensor, NaN where no reward function scored the completion.  -> (B,)"""
    return torch.tensor([float("nan") if r is None else float(r) for r in rewards], dtype=torch.float32)


def group_advantages(rewards: Tensor, group_size: int, scale_rewards: str = "group", estimator: str = "grpo") -> Tensor:
    """A_i = (r_i - b_i) / s, the baseline b by `estimator`, the scale s by `scale_rewards`.  (B,) -> (B,)

    NaN rewards (unscored) are left out of every mean and std, and their advantage is 0.
    """
    r = rewards.view(-1, group_size)  # (P, G)
    a = r - baseline(r, estimator)
    if scale_rewards == "group":
        a = a / (group_std(r) + 1e-4)
    elif scale_rewards == "batch":
        a = a / (group_std(rewards.view(1, -1)) + 1e-4)
    elif scale_rewards != "none":
        raise ValueError(f"unknown scale_rewards {scale_rewards!r}")
    return a.nan_to_num(0.0).view(-1)


def baseline(r: Tensor, estimator: str) -> Tensor:
    """b_i for each reward of the groups r, over scored rewards only; NaN where it is undefined.  (P, G) -> (P, G)"""
    if estimator == "grpo":
        return r.nanmean(dim=1, keepdim=True).expand_as(r)
    if estimator == "rloo":
        count = (~r.isnan()).sum(dim=1, keepdim=True)  # (P, 1) scored rewards per group
        others = r.nansum(dim=1, keepdim=True) - r  # (P, G) the sum of the other scored rewards
        return (others / (count - 1)).masked_fill(count < 2, float("nan"))
    if estimator == "reinforce":
        return torch.zeros_like(r)
    if estimator == "reinforce_batch_mean":
        return r.nanmean().expand_as(r)
    raise ValueError(f"unknown advantage estimator {estimator!r}")


def gae(rewards: Tensor, values: Tensor, completion_mask: Tensor, lam: float) -> tuple[Tensor, Tensor]:
    """Per-token advantages A_t and returns R_t = A_t + V_t by GAE, gamma 1, the reward on the last token.

    (B,) rewards, NaN where unscored (A = R = 0 there); (B, T) values V_t of the prefix before token t;
    (B, T) completion_mask, 1 on each completion's tokens (right-padded).  -> (B, T), (B, T)
    """
    mask = completion_mask.float()
    values = values * mask  # V past the last token is 0
    B, T = values.shape
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)  # (B,) each completion's last token
    token_rewards = torch.zeros_like(values)
    token_rewards[torch.arange(B), last] = rewards.nan_to_num(0.0)
    advantages = torch.zeros_like(values)
    following = torch.zeros(B, dtype=values.dtype, device=values.device)  # A_t+1
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(following)
        following = token_rewards[:, t] + next_value - values[:, t] + lam * following
        advantages[:, t] = following
    scored = ~rewards.isnan().unsqueeze(1)  # (B, 1)
    advantages = advantages * mask * scored
    return advantages, (advantages + values) * scored


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, cliprange_value: float, batch_tokens: int
) -> Tensor:
    """PPO's clipped value loss, 0.5 max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2), summed over
    the (micro-)batch's masked tokens and divided by the whole batch's `batch_tokens` (a token mean, as
    TRL's PPOTrainer).  (B, T) x 4 -> scalar"""
    clipped_values = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    per_token = 0.5 * torch.max((values - returns).pow(2), (clipped_values - returns).pow(2))
    return (per_token * mask).sum() / max(batch_tokens, 1)


def explained_variance(values: Tensor, returns: Tensor) -> float | None:
    """1 - Var(R - V) / Var(R) over tokens: 1 for a perfect critic, 0 or less for one no better than a constant."""
    if returns.numel() < 2 or returns.var() == 0:
        return None
    return (1 - (returns - values).var() / returns.var()).item()


def group_std(r: Tensor) -> Tensor:
    """Each group's std over its scored (non-NaN) rewards, with Bessel's correction.  (P, G) -> (P, 1)

    NaN for a group with fewer than two scored rewards (as TRL's nanstd): its advantages are 0."""
    count = (~r.isnan()).sum(dim=1, keepdim=True)  # (P, 1)
    squares = (r - r.nanmean(dim=1, keepdim=True)).pow(2).nansum(dim=1, keepdim=True)
    return (squares / (count - 1)).sqrt().masked_fill(count < 2, float("nan"))


def has_signal(rewards: Tensor, group_size: int) -> Tensor:
    """Each group has scored rewards that differ (a group baseline learns from it).  (B,) -> (P,) bool"""
    std = group_std(rewards.view(-1, group_size)).squeeze(1)  # (P,), NaN below two scored
    return std.isfinite() & ~torch.isclose(std, torch.zeros_like(std))


def zero_std_fraction(rewards: Tensor, group_size: int) -> float:
    """Fraction of groups whose scored rewards are all equal (advantage 0 everywhere: no signal)."""
    std = group_std(rewards.view(-1, group_size))  # (P, 1)
    return torch.isclose(std, torch.zeros_like(std)).float().mean().item()


def at_temperature(logits: Tensor, temperature: float) -> Tensor:
    """logits / T in float32; at T = 1 the logits as they are, the same bits without a pass over the vocabulary
    (three of them per decode step: the draw, its log-prob and the entropy)."""
    logits = logits.float()
    return logits if temperature == 1 else logits / temperature


def token_log_probs(logits: Tensor, tokens: Tensor, temperature: float) -> Tensor:
    """log softmax(logits / T) at the chosen tokens, in float32.  (B, T, V), (B, T) -> (B, T)

    As logit - logsumexp(logits): no (B, T, V) log-softmax is kept for the backward pass, which
    matters with real vocabularies (150k entries).
    """
    logits = at_temperature(logits, temperature)  # (B, T, V)
    chosen = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return chosen - torch.logsumexp(logits, dim=-1)


def entropy(logits: Tensor, temperature: float) -> Tensor:
    """H = -sum_v p_v log p_v of softmax(logits / T), in float32.  (..., V) -> (...)"""
    log_p = torch.log_softmax(at_temperature(logits, temperature), dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def kl_k1(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """Per-token KL(pi_theta || pi_ref) ~ -d = log pi_theta - log pi_ref: unbiased on the policy's own tokens,
    a token's value negative where pi_ref is likelier.  (B, T)"""
    return log_probs - ref_log_probs


def kl_k2(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """Per-token KL(pi_theta || pi_ref) ~ d^2 / 2, d = log pi_ref - log pi_theta: biased (exact to second
    order), never negative.  (B, T)"""
    return 0.5 * (log_probs - ref_log_probs).pow(2)


def kl_k3(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """Per-token KL(pi_theta || pi_ref) ~ exp(d) - d - 1, d = log pi_ref - log pi_theta.  (B, T)"""
    d = ref_log_probs - log_probs
    return torch.exp(d) - d - 1


KL = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}  # kl_estimator -> its per-token estimate


def kl_penalty(
    log_probs: Tensor, ref_log_probs: Tensor, completion_mask: Tensor, beta: float, estimator: str
) -> Tensor:
    """beta * sum_t k_t over each completion's tokens, what use_kl_in_reward subtracts from its reward r_i
    (PPO-RLHF's placement, verl's use_kl_in_reward), detached.  (B, T), (B, T), (B, T) -> (B,)"""
    k = KL[estimator](log_probs, ref_log_probs).detach()  # (B, T)
    return beta * (k * completion_mask).sum(dim=1)


def decoupled_rewards(values: Tensor, weights: Tensor, group_size: int) -> Tensor:
    """GDPO's reward (TRL's multi_objective_aggregation 'normalize_then_sum'): each reward function's values
    normalised within their group, (v - mean) / (std + 1e-4), over its scored values with Bessel's std, then
    their weighted sum, an unscored (NaN) value counting 0; NaN where no function scored.  (B, K), (K,) -> (B,)

    A function with fewer than two scored values in a group has no std there: it adds 0 to that group."""
    K = values.shape[1]
    grouped = values.view(-1, group_size, K).transpose(1, 2).reshape(-1, group_size)  # (P * K, G)
    normalised = (grouped - grouped.nanmean(dim=1, keepdim=True)) / (group_std(grouped) + 1e-4)
    normalised = normalised.view(-1, K, group_size).transpose(1, 2).reshape(-1, K)  # (B, K)
    rewards = (normalised * weights).nansum(dim=1)
    return rewards.masked_fill(values.isnan().all(dim=1), float("nan"))


def importance_ratio(
    log_probs: Tensor, old_log_probs: Tensor, completion_mask: Tensor | None = None, level: str = "token"
) -> Tensor:
    """rho = pi_theta / pi_old: per token (B, T), or with level 'sequence' (GSPO) one per completion (B, 1),
    s_i = exp(sum_t m_it (log pi_theta - log pi_old) / max(|o_i|, 1)), the mean over its masked tokens."""
    log_ratio = log_probs - old_log_probs  # (B, T)
    if level == "token":
        return torch.exp(log_ratio)
    if level == "sequence":
        mask = completion_mask.to(log_ratio.dtype)
        return torch.exp((log_ratio * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp(min=1))
    raise ValueError(f"unknown importance_sampling_level {level!r}")


def clipped_surrogate(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    clip_epsilon: float,
    epsilon_high: float = 0.0,
    completion_mask: Tensor | None = None,
    level: str = "token",
) -> tuple[Tensor, Tensor]:
    """min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A) per token, and where the clip was active.

    eps_low = clip_epsilon; eps_high = epsilon_high, or clip_epsilon when it is 0. rho by `importance_ratio`
    (level 'sequence' needs the completion_mask, and gives one value per completion).
    (B, T), (B, T), (B,) or (B, T) per-token advantages -> (B, T) or (B, 1) surrogate, the same shape bool clipped
    """
    ratio = importance_ratio(log_probs, old_log_probs, completion_mask, level)  # (B, T) or (B, 1)
    a = advantages if advantages.dim() == 2 else advantages.unsqueeze(1)  # per token (ppo), or (B, 1)
    unclipped = ratio * a
    clipped = torch.clamp(ratio, 1 - clip_epsilon, 1 + (epsilon_high or clip_epsilon)) * a
    return torch.min(unclipped, clipped), clipped < unclipped


def cispo_objective(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    epsilon_max: float,
    completion_mask: Tensor | None = None,
    level: str = "token",
) -> tuple[Tensor, Tensor]:
    """CISPO's per-token objective sg(min(rho, eps_max)) * A * log pi_theta (MiniMax-M1; TRL's loss_type 'cispo'),
    and where the cap bound (rho > eps_max). The weight is capped from above only, and detached: every token
    keeps its gradient A * weight * grad log pi_theta. rho by `importance_ratio`.
    (B, T), (B, T), (B,) or (B, T) -> (B, T), (B, T) or (B, 1) bool"""
    ratio = importance_ratio(log_probs, old_log_probs, completion_mask, level)
    a = advantages if advantages.dim() == 2 else advantages.unsqueeze(1)
    weight = torch.clamp(ratio, max=epsilon_max).detach()
    return weight * a * log_probs, ratio > epsilon_max


def aggregate(
    per_token: Tensor,
    completion_mask: Tensor,
    loss_type: str,
    batch_completions: int,
    batch_tokens: int,
    max_new_tokens: int = 0,
) -> Tensor:
    """Reduce a per-token loss (B, T) to a scalar over a (micro-)batch, normalised by the whole batch.

    grpo: sum_i (sum_t l_it m_it / |o_i|) / batch_completions
    bnpo, dapo, cispo: sum_it l_it m_it / batch_tokens
    dr_grpo: sum_it l_it m_it / (batch_completions * max_new_tokens)
    """
    masked = per_token * completion_mask
    if loss_type == "grpo":
        lengths = completion_mask.sum(dim=1).clamp(min=1)  # (B,)
        return (masked.sum(dim=1) / lengths).sum() / batch_completions
    if loss_type in ("bnpo", "dapo", "cispo"):
        return masked.sum() / max(batch_tokens, 1)
    if loss_type == "dr_grpo":
        return masked.sum() / (batch_completions * max_new_tokens)
    raise ValueError(f"unknown loss_type {loss_type!r}")


def policy_objective(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    completion_mask: Tensor,
    *,
    loss_type: str,
    clip_epsilon: float,
    epsilon_high: float = 0.0,
    importance_sampling_level: str = "token",
) -> tuple[Tensor, Tensor, Tensor]:
    """The objective each token maximises, before the KL and the aggregation, chosen by `loss_type` (cispo's,
    or the clipped surrogate) and `importance_sampling_level`: (B, T) objective, (B, T) bool where the clip (or
    cispo's cap) bound, (B, T) ratio; a completion's one value on each of its tokens at level 'sequence'."""
    level, mask = importance_sampling_level, completion_mask
    if loss_type == "cispo":
        objective, clipped = cispo_objective(
            log_probs, old_log_probs, advantages, epsilon_high or clip_epsilon, mask, level
        )
    else:
        objective, clipped = clipped_surrogate(
            log_probs, old_log_probs, advantages, clip_epsilon, epsilon_high, mask, level
        )
    ratio = importance_ratio(log_probs, old_log_probs, mask, level)
    shape = log_probs.shape
    return objective.expand(shape), clipped.expand(shape), ratio.expand(shape)


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
    epsilon_high: float = 0.0,
    max_new_tokens: int = 0,
    importance_sampling_level: str = "token",
    kl_estimator: str = "k3",
    kl_in_loss: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """-(objective - beta * KL), aggregated; returns (loss, sums of per-token stats for logging).

    The objective by `policy_objective`; the KL by `kl_estimator` when ref_log_probs are given and `kl_in_loss`
    (with use_kl_in_reward the penalty is in the advantages instead, and the reference only measures `kl`).
    The stats are sums over this micro-batch's completion tokens (kl: k3's, whatever the estimator; clipped;
    ratio) so that the caller can add them across micro-batches and divide by the batch's token count.
    """
    mask = completion_mask.float()
    objective, clipped, ratio = policy_objective(
        log_probs,
        old_log_probs,
        advantages,
        mask,
        loss_type=loss_type,
        clip_epsilon=clip_epsilon,
        epsilon_high=epsilon_high,
        importance_sampling_level=importance_sampling_level,
    )
    per_token = -objective
    stats = {"clipped": (clipped.float() * mask).sum().detach(), "ratio": (ratio * mask).sum().detach()}
    if ref_log_probs is not None:
        stats["kl"] = (kl_k3(log_probs, ref_log_probs) * mask).sum().detach()
        if kl_in_loss:
            per_token = per_token + beta * KL[kl_estimator](log_probs, ref_log_probs)  # (B, T)
    loss = aggregate(per_token, mask, loss_type, batch_completions, batch_tokens, max_new_tokens)
    return loss, stats
