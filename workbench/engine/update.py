"""The policy update: num_iterations optimizer steps on the step's trained groups, micro-batched.

Each micro-batch holds whole groups (`rollout.micro_batch_parts`); its loss is normalised by the whole
batch's counts, summed over every process under torchrun, so the summed gradients are the full batch's
gradient (workbench.engine.grpo, choice 9). The reference's log-probs (beta > 0) and pi_old's (more than one
iteration) are taken once, before the first optimizer step; with use_kl_in_reward the reference's were taken
before the advantages (workbench.engine.batches) and serve here only to measure `kl`. The first pass also
measures how far the sampler's log-probs are from the trained policy's, and the last keeps each token's
numbers for the token view.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor

from workbench.config import Config
from workbench.engine import distributed, grpo, ppo
from workbench.engine.batches import ScoredBatch, loss_mask
from workbench.engine.policy import Policy
from workbench.engine.rollout import Rollouts, micro_batch_parts

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


def update_policy(learner, batch: ScoredBatch, advantages: list[Tensor], config: Config) -> tuple[dict, list | None]:
    """The step's update of the policy (and of PPO's critic) at the step's learning rate, on its trained groups,
    unless there is nothing to learn from (no reward scored, or no token in the loss): every process decides alike.

    `learner`: a workbench.engine.run.Learner. -> the update's metrics with the learning rate, and each
    completion's per-token numbers (None where its group was not trained), or None without log_token_stats."""
    policy, critic = learner.policy, learner.critic
    learning_rate = config.learning_rate_at(batch.step)
    set_learning_rate(learner.optimizer, learning_rate)
    if critic is not None:
        set_learning_rate(critic.optimizer, learning_rate)
    trained = [
        (
            one.rollouts.select(rows),
            a[rows].to(policy.device),
            None if one.ref_log_probs is None else one.ref_log_probs[rows],
        )
        for one, a in zip(batch.rounds, advantages)
        if (rows := one.trained_rows).numel()
    ]
    scored_any = any(not one.rewards.isnan().all() for one in batch.rounds)  # a reward function scored something
    learnable = any(loss_mask(rollouts, config).any() for rollouts, _, _ in trained)
    metrics = dict.fromkeys(UPDATE_METRICS) | {"learning_rate": learning_rate}
    if not distributed.any_rank(scored_any, policy.device) or not distributed.any_rank(learnable, policy.device):
        return metrics, None
    update_metrics, tokens = gradient_steps(policy, learner.optimizer, trained, config)
    metrics |= update_metrics
    if critic is not None:
        metrics |= ppo.update_critic(critic, ppo.critic_batches(batch.rounds, config), config)
    return metrics, None if tokens is None else completion_tokens(batch, tokens)


def set_learning_rate(optimizer: torch.optim.Optimizer, learning_rate: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = learning_rate


def gradient_steps(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    batches: list[tuple[Rollouts, Tensor, Tensor | None]],
    config: Config,
) -> tuple[dict[str, float | None], list[dict] | None]:
    """num_iterations optimizer steps on the batch, each accumulating over micro-batches.

    batches: the rollouts to train on, with their advantages (B,) or (B, T) and the reference's log-probs (B, T)
    where they were taken already (use_kl_in_reward), else None: one per sampling round, since a micro-batch keeps
    its round's prompt padding (`Rollouts.select`). -> the step's metrics, and each trained completion's per-token
    numbers at the last pass (`token_stats`) in the batches' row order, with `log_token_stats`."""
    G, temperature = config.group_size, config.temperature
    counts = [
        sum(len(rollouts.completions) for rollouts, _, _ in batches),
        sum(int(loss_mask(rollouts, config).sum()) for rollouts, _, _ in batches),
        sum(int(rollouts.completion_mask.sum()) for rollouts, _, _ in batches),
    ]
    batch_completions, batch_tokens, sampled_tokens = map(int, distributed.all_sum(counts, policy.device))
    parts = [
        (part, a, taken[0] if taken else None)  # taken: the reference's log-probs, where the step took them already
        for rollouts, advantages, ref in batches
        for part, a, *taken in micro_batch_parts(
            rollouts, (advantages,) if ref is None else (advantages, ref), G, config.micro_batch_tokens
        )
    ]
    inputs = [part.model_inputs() for part, _, _ in parts]
    ref_log_probs = [reference_log_probs(policy, m, taken, config) for (_, _, taken), m in zip(parts, inputs)]
    old_log_probs = [
        old_policy_log_probs(policy, m, G, temperature) if config.num_iterations > 1 else None for m in inputs
    ]
    totals = defaultdict(float)
    tokens = [] if config.log_token_stats else None
    with policy.training():
        for iteration in range(config.num_iterations):
            optimizer.zero_grad(set_to_none=True)
            for (part, advantages, _), m, ref, old in zip(parts, inputs, ref_log_probs, old_log_probs):
                log_probs = policy.log_probs(*m, G, temperature)  # (b, T)
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
                    importance_sampling_level=config.importance_sampling_level,
                    kl_estimator=config.kl_estimator,
                    kl_in_loss=not config.use_kl_in_reward,
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
    return update_metrics(totals, config, batch_tokens, sampled_tokens, policy.device), tokens


def update_metrics(totals: dict, config: Config, batch_tokens: int, sampled_tokens: int, device) -> dict:
    """The update's metrics from its running sums, every process's together: per optimizer step, per token."""
    names = ("loss", "kl", "clipped", "ratio", "sampling_gap")
    totals |= zip(names, distributed.all_sum([totals[name] for name in names], device))
    totals["sampling_gap_max"] = distributed.all_max([totals["sampling_gap_max"]], device)[0]
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


@torch.no_grad()
def reference_log_probs(policy: Policy, inputs, taken: Tensor | None, config: Config) -> Tensor | None:
    """log pi_ref of a micro-batch: the one the step took before its advantages (use_kl_in_reward), or taken now;
    None with beta 0 (the reference is never run).  (b, T)"""
    if taken is not None:
        return taken.to(policy.device)
    if config.beta == 0:
        return None
    return policy.reference_log_probs(*inputs, group_size=config.group_size, temperature=config.temperature)


@torch.no_grad()
def old_policy_log_probs(policy: Policy, inputs, group_size: int, temperature: float) -> Tensor:
    """log pi_old: the sampling policy, before this batch's first update.  (b, T)"""
    return policy.log_probs(*inputs, group_size, temperature)


def token_stats(policy: Policy, part: Rollouts, advantages, log_probs, old_log_probs, ref_log_probs, config) -> list:
    """Each completion's tokens with log p under the policy and the reference, the ratio per token, whether the clip
    (or cispo's cap) bound, the kl_estimator's term and the sampler's entropy: what the token view shows.  -> a dict
    per row

    With importance_sampling_level 'sequence', `clipped` marks every token of a completion whose ratio (exp of its
    tokens' mean log ratio) was clipped."""
    _, clipped, _ = grpo.policy_objective(
        log_probs,
        old_log_probs,
        advantages,
        loss_mask(part, config),
        loss_type=config.loss_type,
        clip_epsilon=config.clip_epsilon,
        epsilon_high=config.epsilon_high,
        importance_sampling_level=config.importance_sampling_level,
    )
    ratio = (log_probs - old_log_probs).exp()
    kl = None if ref_log_probs is None else grpo.KL[config.kl_estimator](log_probs, ref_log_probs)
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


def completion_tokens(batch: ScoredBatch, tokens: list[dict]) -> list[dict | None]:
    """The update's per-token numbers (the trained completions', in order) for every completion of the batch."""
    trained_tokens = iter(tokens)
    rows = [set(one.trained_rows.tolist()) for one in batch.rounds]
    return [
        next(trained_tokens) if i in rows[r] else None
        for r, one in enumerate(batch.rounds)
        for i in range(len(one.rollouts.completions))
    ]
