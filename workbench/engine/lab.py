"""The seed's claims about GRPO, measured on a task and a model instead of stated.

1. No critic saves about a second model's memory: `model_mib` (weights in memory), and a sweep over
   advantage_estimator grpo, ppo stores each run's peak memory and steps/s (bench/lab.py).
2. The group mean is a baseline good enough without a critic: `baseline_variance` resamples groups
   for the same prompts under one policy and measures, for each baseline, the spread of the
   advantages and of the policy gradient they give.
3. A larger group K gives a stabler baseline for more compute, and `signal_fraction`: the share of
   groups whose rewards are all equal (no signal for a group baseline) against K, beside p^K +
   (1 - p)^K for a pass/fail reward with success rate p.
4. beta trades stability for speed: a sweep over beta, three seeds each (bench/lab.py, notebook 05),
   and each run's `kl_to_reference` measured afterwards, beta 0 included.

bench/lab.py runs them at full size; notebooks/05_grpo_vs_ppo.ipynb runs them small, in class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from workbench.config import Config
from workbench.engine import grpo
from workbench.engine.batches import sample, score
from workbench.engine.policy import Policy
from workbench.engine.ppo import Critic
from workbench.engine.rollout import Rollouts
from workbench.rewards.scoring import Scorer
from workbench.rewards.tasks import Task

# The baselines `baseline_variance` compares: (label, advantage_estimator, group size K).
BASELINES = (
    ("no baseline (reinforce)", "reinforce", 8),
    ("group mean, K=2", "grpo", 2),
    ("group mean, K=4", "grpo", 4),
    ("group mean, K=8", "grpo", 8),
    ("group mean, K=16", "grpo", 16),
    ("leave-one-out (rloo), K=8", "rloo", 8),
    ("critic (ppo), K=8", "ppo", 8),
)


def model_mib(model: torch.nn.Module) -> float:
    """The model's parameters in memory, in MiB (shared tensors counted once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


@dataclass
class Groups:
    """Resampled groups of the same prompts: R resamples of P prompts x K_max completions."""

    rows: list[dict]
    rollouts: list[Rollouts]  # one per resample, B = P x K_max
    rewards: list[torch.Tensor]  # (B,) each
    group_size: int  # K_max


def sample_groups_again(policy: Policy, task: Task, config: Config, resamples: int, group_size: int) -> Groups:
    """`resamples` independent batches of `group_size` completions for the same `config.prompts_per_step`
    prompts (the first step's), scored by the task's rewards."""
    config = dataclasses.replace(config, group_size=group_size)
    rows = task.batch(1, config.prompts_per_step, config.seed)
    batches, rewards = [], []
    with Scorer(task.rewards, task.columns, config, task.folder) as scorer:
        for _ in range(resamples):
            rollouts = sample(policy, rows, config)
            batches.append(rollouts)
            rewards.append(grpo.reward_tensor(score(scorer, rows, rollouts, config, step=1).rewards))
    return Groups(rows, batches, rewards, group_size)


def first_of_each_group(groups: Groups, k: int) -> torch.Tensor:
    """The rows of the first k completions of every group: K_max samples are iid, so these are groups of k."""
    K = groups.group_size
    return torch.tensor([g * K + i for g in range(len(groups.rows)) for i in range(k)])


def signal_fraction(groups: Groups, ks=(2, 4, 8, 16)) -> list[dict]:
    """For each K: the measured share of groups whose rewards are all equal, the success rate p (the
    mean reward, for a 0/1 reward), p^K + (1 - p)^K, and the same averaged over each prompt's own
    p_j (prompts differ in difficulty, which raises the share)."""
    rewards = torch.stack(groups.rewards).view(len(groups.rewards), len(groups.rows), -1)  # (R, P, K_max)
    p = rewards.nanmean().item()
    p_j = rewards.nanmean(dim=(0, 2))  # (P,)
    table = []
    for k in ks:
        first = rewards[:, :, :k]  # (R, P, k)
        measured = (first.amax(dim=2) == first.amin(dim=2)).float().mean().item()
        table.append(
            dict(
                K=k,
                measured=measured,
                p=p,
                predicted=p**k + (1 - p) ** k,
                predicted_per_prompt=(p_j**k + (1 - p_j) ** k).mean().item(),
            )
        )
    return table


def baseline_variance(
    policy: Policy, groups: Groups, config: Config, critic: Critic | None = None, baselines=BASELINES
) -> list[dict]:
    """For each baseline: the variance and the mean square of the advantages over every completion token
    (a baseline that leaves a mean in A, as none does, scales the gradient's noise by E[A^2], not Var A),
    and the policy gradient's variance across the resamples: tr Cov(g) (the sum over the adapter's
    weights of each one's variance) and the same relative to |E g|^2 (NaN without a gradient).

    Advantages are not scaled (scale_rewards 'none'), so all are in reward units. The gradient is that
    of the surrogate (beta 0) at the sampling policy, summed over tokens as Dr. GRPO's loss sums them:
    then E[grad log pi(o)] = 0 and a baseline changes only the gradient's noise, not its mean. GRPO's
    per-completion token mean breaks that identity (Liu et al. 2025): a baseline would move the mean too.
    """
    table = []
    for label, estimator, k in baselines:
        if k > groups.group_size or (estimator == "ppo" and critic is None):
            continue
        rows = first_of_each_group(groups, k)
        gradients, advantages = [], []
        for rollouts, rewards in zip(groups.rollouts, groups.rewards):
            part = rollouts.select(rows)
            a = _advantages(estimator, rewards[rows], part, k, config, critic)
            advantages.append(_per_token(a, part.completion_mask))
            gradients.append(_policy_gradient(policy, part, a, k, config))
        g = torch.stack(gradients)  # (R, D)
        total, signal = g.var(dim=0).sum().item(), g.mean(dim=0).pow(2).sum().item()
        table.append(
            dict(
                baseline=label,
                completions=len(rows),
                advantage_var=torch.cat(advantages).var().item(),
                advantage_mean_square=torch.cat(advantages).pow(2).mean().item(),
                gradient_variance=total,
                relative_gradient_variance=total / signal if signal > 0 else float("nan"),
            )
        )
    return table


@torch.no_grad()
def _advantages(estimator: str, rewards, rollouts: Rollouts, k: int, config: Config, critic: Critic | None):
    if estimator == "ppo":
        values = critic.values(rollouts, k).float().cpu()
        return grpo.gae(rewards, values, rollouts.completion_mask.cpu(), config.gae_lambda)[0]  # (B, T)
    return grpo.group_advantages(rewards, k, "none", estimator)  # (B,)


def _per_token(advantages: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Each completion token's advantage: a sequence's own on each of its tokens."""
    mask = completion_mask.bool().cpu()
    return (advantages if advantages.dim() == 2 else advantages.unsqueeze(1).expand(mask.shape))[mask]


def _policy_gradient(policy: Policy, rollouts: Rollouts, advantages: torch.Tensor, k: int, config: Config):
    """The gradient of the surrogate (beta 0, ratio 1, Dr. GRPO's token sum), over the adapter's weights.  -> (D,)"""
    for p in policy.trainable_parameters():
        p.grad = None
    log_probs = policy.log_probs(*rollouts.model_inputs(), k, config.temperature)  # (B, T)
    mask = rollouts.completion_mask.float()
    loss, _ = grpo.grpo_loss(
        log_probs,
        log_probs.detach(),
        None,
        advantages.to(log_probs.device),
        mask,
        beta=0.0,
        clip_epsilon=config.clip_epsilon,
        loss_type="dr_grpo",
        batch_completions=len(rollouts.completions),
        batch_tokens=int(mask.sum()),
        max_new_tokens=config.max_new_tokens,
    )
    loss.backward()
    return torch.cat([p.grad.flatten().cpu() for p in policy.trainable_parameters() if p.grad is not None])


@torch.no_grad()
def kl_to_reference(policy: Policy, rows: list[dict], config: Config) -> float:
    """KL(pi_theta || pi_ref) per completion token, on `config.group_size` completions sampled for each row:
    the mean of log pi_theta - log pi_ref over the sampled tokens (the k1 estimator, unbiased on the
    policy's own samples). Measured after training, so a run with beta 0, which never computes the
    reference, is measured as the others are."""
    rollouts = sample(policy, rows, config)
    inputs = rollouts.model_inputs()
    log_probs = policy.log_probs(*inputs, config.group_size, config.temperature)
    ref_log_probs = policy.reference_log_probs(*inputs, group_size=config.group_size, temperature=config.temperature)
    mask = rollouts.completion_mask.bool()
    return (log_probs - ref_log_probs)[mask].mean().item()
