"""Dry-run a reward: sample real groups from the current policy, score them, and see whether GRPO would learn.

GRPO learns only from groups whose rewards differ: a group whose G completions all get the same
reward has every advantage 0 and adds nothing to the gradient. The dry-run samples a group for a
handful of prompts (the first prompts a run would see), scores them in the reward worker, and
reports each function's distribution, each group's mean, std and advantages, and the fraction of
groups without signal, with a warning when it is most of them. No step is stored; nothing trains.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import torch

from workbench.config import Config
from workbench.engine.advantages import estimate_advantages
from workbench.engine.batches import ScoredBatch, sample_round
from workbench.engine.policy import Policy, load_policy
from workbench.engine.records import step_record
from workbench.engine.threads import ThreadPolicy
from workbench.events import Group
from workbench.rewards.scoring import RewardSource, Scorer
from workbench.rewards.tasks import Task

NO_SIGNAL_WARNING = 0.5  # warn when at least this fraction of groups has all-equal rewards


@dataclass(frozen=True)
class DryRun:
    groups: list[Group]
    seconds: float  # sampling and scoring, without loading the model

    @property
    def frac_zero_std(self) -> float:
        """Fraction of groups whose rewards are all equal: they give GRPO no learning signal."""
        return sum(map(_no_signal, self.groups)) / len(self.groups)

    def function_stats(self) -> pd.DataFrame:
        """Each reward function's distribution over all completions (None values not counted)."""
        stats = []
        for name in self.groups[0].reward_values:
            values = pd.Series([v for g in self.groups for v in g.reward_values[name]], dtype="float64")
            stats.append(
                dict(
                    function=name,
                    mean=values.mean(),
                    std=values.std(),
                    min=values.min(),
                    max=values.max(),
                    distinct=values.nunique(),
                    scored=values.notna().mean(),
                )
            )
        return pd.DataFrame(stats)

    def group_stats(self) -> pd.DataFrame:
        """Each group's prompt, reward mean and std (Bessel-corrected, as the advantages use), and advantages."""
        return pd.DataFrame(
            [
                dict(
                    group_id=g.group_id,
                    prompt=g.prompt,
                    reward_mean=pd.Series(g.rewards).mean(),
                    reward_std=pd.Series(g.rewards).std(),
                    no_signal=_no_signal(g),
                    advantages=[round(a, 3) + 0.0 for a in g.advantages],  # + 0.0: no "-0.0"
                )
                for g in self.groups
            ]
        )

    @property
    def warning(self) -> str | None:
        """A plain-language warning when most groups give no learning signal, else None."""
        flat = [g for g in self.groups if _no_signal(g)]
        if len(flat) / len(self.groups) < NO_SIGNAL_WARNING:
            return None
        values = sorted({r for g in flat for r in g.rewards if r is not None})
        same = f"the same reward ({', '.join(f'{v:g}' for v in values[:4])})"
        return (
            f"{len(flat)} of {len(self.groups)} groups gave all their completions {same}: GRPO learns nothing "
            "from those groups, because every advantage in them is 0. Give partial credit (a finer-grained "
            "reward), choose prompts the model sometimes solves, or raise group_size or temperature."
        )

    def report(self) -> str:
        """The whole dry-run as text, for the CLI and notebooks."""
        lines = [
            f"{len(self.groups)} groups of {len(self.groups[0].completions)} completions, "
            f"sampled and scored in {self.seconds:.2f} s",
            "",
            self.function_stats().to_string(index=False, float_format=lambda x: f"{x:.3f}"),
            "",
            self.group_stats().to_string(index=False, float_format=lambda x: f"{x:.3f}"),
            "",
            f"groups without signal (all rewards equal): {self.frac_zero_std:.0%}",
        ]
        if self.warning:
            lines.append(f"warning: {self.warning}")
        return "\n".join(lines)


def dry_run(
    config: Config,
    task: Task,
    rewards: RewardSource | None = None,
    num_prompts: int = 8,
    policy: Policy | None = None,
) -> DryRun:
    """Sample `config.group_size` completions for the task's first `num_prompts` prompts and score them.

    `rewards` defaults to the task's own; `policy` (a loaded one, e.g. mid-run) defaults to the base model.
    """
    rows = task.batch(1, num_prompts, config.seed)  # the prompts a run's first step sees
    with Scorer(rewards or task.rewards, task.columns, config, task.folder) as scorer:
        threads = ThreadPolicy(config.threads)  # a dry run beside a training run takes the cores it leaves
        policy = policy or load_policy(config)
        threads.decide()
        started = time.perf_counter()
        one = sample_round(policy, scorer, rows, 1, 0, config)  # what the run's step 1 samples
    one.trained = torch.ones(len(rows), dtype=torch.bool)
    batch = ScoredBatch(1, [one], started)
    advantages = estimate_advantages(batch, config)  # ppo: a critic at its start, V = 0
    return DryRun(step_record(batch, advantages, config).groups, time.perf_counter() - started)


def _no_signal(group: Group) -> bool:
    """All scored rewards equal (or fewer than two scored): every advantage is 0."""
    return len({r for r in group.rewards if r is not None}) <= 1
