"""The variants of the objective the engine implements: each one's name (TRL's where TRL has one) and a line on
what it does.

The formulas are in workbench.engine.grpo, which dispatches on these names; the config's choices, the app's
dropdowns, the group view's explanation and the TRL mapping read them here. The names live apart from the math
so that what only needs the names (the CLI's help, the config, the form) answers without loading torch.
"""

from __future__ import annotations

ESTIMATORS = {  # advantage_estimator: the baseline b in A = (r - b) / s
    "grpo": "the group's mean reward is the baseline: A = r - mean(group) (DeepSeekMath)",
    "rloo": "the mean of the other G - 1 rewards is the baseline: leave-one-out (Ahmadian et al. 2024)",
    "reinforce": "no baseline: A = r, every reward pushes its completion up (Williams 1992)",
    "reinforce_batch_mean": "the whole batch's mean reward is the baseline",
    "ppo": "a learned critic V: per-token advantages by GAE on its values (PPO, Schulman et al. 2017)",
}
GROUP_BASELINES = ("grpo", "rloo")  # the estimators whose baseline is the group's own: 'group' scaling fits them

SCALINGS = {  # scale_rewards: the scale s in A = (r - b) / s
    "group": "divide by the group's reward std (DeepSeekMath)",
    "batch": "divide by the whole batch's reward std",
    "none": "no scaling: advantages in reward units (Dr. GRPO)",
}

LOSS_TYPES = {  # loss_type: how per-token losses are averaged, as TRL 1.16 names them
    "grpo": "each completion's token mean, then the mean over completions (the paper)",
    "bnpo": "the batch's token mean (here the same as dapo: a batch is one optimizer step)",
    "dr_grpo": "the batch's token sum over completions x max_new_tokens, a constant (Dr. GRPO)",
    "dapo": "the batch's token mean over every completion token (DAPO)",
    "cispo": "the clipped importance weight, detached, times the log-prob; the batch's token mean (CISPO, MiniMax-M1)",
}

IMPORTANCE_SAMPLING_LEVELS = {  # importance_sampling_level: what the ratio pi_theta / pi_old is taken over (TRL's)
    "token": "one ratio per token, clipped token by token (GRPO, PPO)",
    "sequence": "one ratio per completion, exp of its tokens' mean log ratio, clipped as one (GSPO, Zheng et al. 2025)",
}

AGGREGATIONS = {  # multi_objective_aggregation: how several reward functions make one advantage (TRL's names)
    "sum_then_normalize": "the weighted sum of the reward functions is the reward; then the baseline and scale",
    "normalize_then_sum": "each reward function normalised within its group, then the weighted sum, normalised "
    "over the batch (GDPO, arXiv 2601.05242)",
}

KL_ESTIMATORS = {  # kl_estimator: the per-token estimate of KL(pi_theta || pi_ref), d = log pi_ref - log pi_theta
    "k1": "-d = log pi_theta - log pi_ref: unbiased, can be negative; in the loss its expected gradient is 0",
    "k2": "d^2 / 2: biased, never negative; in the loss its expected gradient is KL(pi_theta || pi_ref)'s",
    "k3": "exp(d) - d - 1: unbiased, never negative; in the loss its expected gradient is KL(pi_ref || pi_theta)'s "
    "(GRPO's, TRL's)",
}

KL_PLACEMENTS = {  # use_kl_in_reward: where beta x KL goes (verl's name)
    False: "in the loss: + beta x k per token (GRPO's, TRL's)",
    True: "in the reward: r_i - beta x sum_t k_t over the completion, before the advantages (PPO-RLHF's, verl's)",
}
