"""Re-score a past run: apply an edited reward to its stored rollouts and see what would change, without training.

Each stored step is scored again in the reward worker, exactly as the trainer called the reward
(the same completions, token ids, dataset columns and `trainer_state`), and its advantages are
recomputed with the run's own group size, `advantage_estimator` and `scale_rewards`, over the groups the
step trained on (groups dynamic sampling left out keep advantage 0; a ppo run's are NaN: the critic's
values at each step are not stored). The store is not changed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from workbench.config import Config
from workbench.engine import grpo
from workbench.rewards.scoring import RewardSource, Scorer, columns_of
from workbench.store.database import Store, StoreError, stored_prompt

ROLLOUTS = """
SELECT step, group_id, sample_idx, prompt, completion, completion_ids, extra_columns, reward, advantage,
       coalesce(dropped, false) AS dropped
FROM rollouts WHERE run_id = $1 AND ($2::INTEGER IS NULL OR step = $2) ORDER BY step, group_id, sample_idx
"""


@dataclass(frozen=True)
class Rescored:
    # per completion: prompt, completion, reward, new_reward, advantage, new_advantage, new_<function>
    rollouts: pd.DataFrame
    steps: pd.DataFrame  # per step: old and new reward mean and no-signal fraction, rewards changed, signs flipped

    def report(self) -> str:
        changed, flipped = int(self.steps["rewards_changed"].sum()), int(self.steps["advantages_flipped"].sum())
        return "\n".join(
            [
                self.steps.to_string(index=False, float_format=lambda x: f"{x:.3f}"),
                "",
                f"{changed} of {len(self.rollouts)} rewards change; {flipped} advantages change sign",
            ]
        )


def rescore(
    workspace: str | Path,
    run_id: str,
    rewards: RewardSource,
    step: int | None = None,
    reward_weights: dict[str, float] | None = None,
) -> Rescored:
    """Score a run's stored rollouts (one step, or all) with `rewards`; weights default to the run's."""
    store = Store(workspace, create=False)
    run = store.run(run_id)
    if run is None:
        raise StoreError(f"no run {run_id!r} in workspace {workspace}")
    config = Config.from_dict(run["config"])
    if reward_weights is not None:
        config = dataclasses.replace(config, reward_weights=reward_weights)
    frame = store.query(ROLLOUTS, [run_id, step])
    if frame.empty:
        raise StoreError(f"run {run_id} has no stored rollouts" + ("" if step is None else f" at step {step}"))
    columns = zip(frame["prompt"], frame["extra_columns"])
    rows = [{"prompt": stored_prompt(p), **json.loads(e or "{}")} for p, e in columns]
    parts = []
    with Scorer(rewards, columns_of(rows), config) as scorer:
        for number, part in frame.groupby("step", sort=True):
            parts.append(_rescored_step(scorer, config, int(number), part, [rows[i] for i in part.index]))
    rescored = pd.concat(parts, ignore_index=True)
    return Rescored(rescored, _step_summary(rescored))


def _rescored_step(scorer: Scorer, config: Config, step: int, part: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    ids = part["completion_ids"].tolist()
    completion_ids = None if any(i is None for i in ids) else [list(map(int, i)) for i in ids]  # older stores
    scores = scorer.score(rows, part["completion"].tolist(), completion_ids, global_step=step - 1)
    new_rewards = grpo.reward_tensor(scores.rewards)  # (B,), NaN where no function scored
    part = part.drop(columns=["completion_ids", "extra_columns"]).reset_index(drop=True)
    part["new_reward"] = scores.rewards
    part["new_advantage"] = _advantages(new_rewards, torch.tensor(part["dropped"].tolist()), config).tolist()
    for name, values in scores.values.items():
        part[f"new_{name}"] = values
    return part


def _advantages(rewards: torch.Tensor, dropped: torch.Tensor, config: Config) -> torch.Tensor:
    """The advantages the trainer would compute: over the groups it trained on (dynamic sampling left the
    dropped ones out, at 0); NaN for a ppo run, whose critic's values at each step are not stored.  (B,)"""
    if config.advantage_estimator == "ppo":
        return torch.full_like(rewards, float("nan"))
    trained = ~dropped
    advantages = torch.zeros_like(rewards)
    advantages[trained] = grpo.group_advantages(
        rewards[trained], config.group_size, config.scale_rewards, config.advantage_estimator
    )
    return advantages


def _step_summary(frame: pd.DataFrame) -> pd.DataFrame:
    def no_signal(column: str) -> pd.Series:
        return frame.groupby(["step", "group_id"])[column].agg(lambda r: r.nunique() <= 1).groupby("step").mean()

    by_step = frame.groupby("step")
    return pd.DataFrame(
        {
            "reward_mean": by_step["reward"].mean(),
            "new_reward_mean": by_step["new_reward"].mean(),
            "frac_zero_std": no_signal("reward"),
            "new_frac_zero_std": no_signal("new_reward"),
            "rewards_changed": (frame["reward"] != frame["new_reward"]).groupby(frame["step"]).sum(),
            "advantages_flipped": (np.sign(frame["advantage"]) != np.sign(frame["new_advantage"]))
            .groupby(frame["step"])
            .sum(),
        }
    ).reset_index()
