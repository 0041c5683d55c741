"""The group view's explanation of its advantages: the run's estimator and scaling by name, each with its line
from `workbench.variants`, then the formula of A worked out with the group's own numbers, and what the update
does to the group's best and worst completion."""

from __future__ import annotations

from workbench.config import Config
from workbench.engine import grpo
from workbench.events import Group
from workbench.formatting import reward_text
from workbench.variants import ESTIMATORS, GROUP_BASELINES, SCALINGS


def group_stats(rewards: list[float | None]) -> tuple[float, float]:
    """The mean and sample std (n - 1) of the scored rewards, by `grpo`'s own functions (the std is NaN
    when fewer than two were scored)."""
    r = grpo.reward_tensor(rewards).view(1, -1)  # (1, G)
    return r.nanmean().item(), grpo.group_std(r).item()


def explain(group: Group, config: Config) -> str:
    """The group's advantages in words, with the numbers on screen, for the run's estimator and scaling."""
    mean, std = group_stats(group.rewards)
    n = len(group.rewards)
    scored = [r for r in group.rewards if r is not None]
    group_baseline = config.advantage_estimator in GROUP_BASELINES
    if group_baseline and len(scored) < 2:
        return (
            f"{n - len(scored)} of {n} completions were scored by no reward function (None): with fewer than two "
            "rewards there is nothing to compare, so every advantage is 0 and this group teaches nothing."
        )
    if group_baseline and std == 0:
        return (
            f"All {n} completions got reward {mean:.2f}, so every advantage is 0: this group gives no learning "
            "signal. A group baseline learns only from groups whose completions differ in reward."
        )
    best = max(range(n), key=lambda i: group.advantages[i])
    worst = min(range(n), key=lambda i: group.advantages[i])
    worked = _critic(config) if config.advantage_estimator == "ppo" else _worked(config, mean, std, scored)
    return (
        chosen(config)
        + " "
        + worked
        + _pushed(group, best, "#{i} got reward {r}, so its advantage is {a}: {what}.")
        + _pushed(group, worst, "#{i} got {r}: advantage {a}, {what}.")
        + " The KL penalty (beta) keeps the policy close to the reference while it moves."
    )


def chosen(config: Config) -> str:
    """The run's advantage estimator and reward scaling by name, each with its line from `workbench.variants`.
    ppo names its estimator only: its scaling is over the critic's per-token advantages, which `_critic` says."""
    estimator = config.advantage_estimator
    text = f"advantage_estimator {estimator}: {ESTIMATORS[estimator]}."
    if estimator != "ppo":
        text += f" scale_rewards {config.scale_rewards}: {SCALINGS[config.scale_rewards]}."
    return text


def _worked(config: Config, mean: float, std: float, scored: list[float]) -> str:
    """The formula of A with the group's numbers, for a reward baseline and scale."""
    baseline, formula = _baseline(config.advantage_estimator, mean, sum(scored), len(scored))
    scale, divisor = {
        "group": (", divided by the group's std", f" / ({std:.2f} + 0.0001)"),
        "batch": (", divided by the step's reward std", " / (batch std + 0.0001)"),
        "none": ("", ""),
    }[config.scale_rewards]
    numerator = f"({formula})" if divisor and formula != "r" else formula
    return f"Here each advantage compares a completion's reward with {baseline}{scale}: A = {numerator}{divisor}."


def _baseline(estimator: str, mean: float, total: float, scored: int) -> tuple[str, str]:
    """The baseline with the group's numbers, and the formula of A with them."""
    if estimator == "grpo":
        return f"the group mean {mean:.2f}", f"r - {mean:.2f}"
    if estimator == "rloo":
        return (
            f"the mean of the other {scored - 1} rewards of its group (leave-one-out)",
            f"r - ({total:.2f} - r) / {scored - 1}",
        )
    if estimator == "reinforce":
        return "nothing (no baseline)", "r"
    return "the mean reward of the whole step (all P x G completions)", "r - batch mean"


def _critic(config: Config) -> str:
    """How GAE turns the critic's values into the advantages shown, with the run's lambda."""
    return (
        "Here each token's advantage compares the reward with the critic's value (its prediction of the reward "
        f"from the text so far), by GAE with lambda {config.gae_lambda:g}"
        + (", divided by the std over the step's tokens" if config.scale_rewards == "batch" else "")
        + ": with lambda 1, A_t = r - V_t. Shown: each completion's mean over its tokens."
    )


def _pushed(group: Group, i: int, sentence: str) -> str:
    a = group.advantages[i]
    what = (
        "the update makes completions like it more likely"
        if a > 0
        else ("made less likely" if a < 0 else "left as likely as it was")
    )
    return " " + sentence.format(i=i, r=reward_text(group.rewards[i]), a=f"{a:+.2f}", what=what)
