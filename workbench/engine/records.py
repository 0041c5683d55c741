"""A step's record as plain data: its groups with their rewards and advantages, its metrics, its health.

What the store, the live view and the health checks need of a step, without tensors: under torchrun each
process makes its own record and rank 0 merges them (`merge`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from workbench.config import Config
from workbench.engine import distributed, grpo
from workbench.engine.advantages import completion_advantages
from workbench.engine.batches import ScoredBatch
from workbench.engine.rollout import Rollouts
from workbench.events import Group
from workbench.rewards.scoring import Scores
from workbench.store import health
from workbench.store.database import Store


@dataclass
class StepRecord:
    step: int
    groups: list[Group]  # every round's, dropped ones included
    completion_ids: list[list[int]]  # (B,) each completion's token ids
    columns: list[dict]  # (P,) each group's dataset columns but the prompt
    output: dict[str, str]  # what each reward function printed
    entropy_sum: float  # over every completion token
    seconds_sample: float
    seconds_score: float
    sampling_rounds: int
    started: float  # time.perf_counter() as the step began
    scored: float  # ... once its advantages were known: the update's time is counted from here


def step_record(batch: ScoredBatch, advantages: list[torch.Tensor], config: Config) -> StepRecord:
    """The step's record, with each round's advantages (B,) or (B, T): on rank 0 every process's, merged;
    elsewhere this process's own."""
    own = process_record(batch, advantages, config)
    records = distributed.gather_objects(own)
    return own if records is None else merge(records)


def process_record(batch: ScoredBatch, advantages: list[torch.Tensor], config: Config) -> StepRecord:
    rounds, G = batch.rounds, config.group_size
    groups = [
        g
        for one, a in zip(rounds, advantages)
        for g in make_groups(one.rows, one.rollouts, one.scores, a, G, one.first_group_id, one.trained.tolist())
    ]
    return StepRecord(
        batch.step,
        groups,
        [ids for one in rounds for ids in one.rollouts.completion_id_lists],
        [{k: v for k, v in row.items() if k != "prompt"} for one in rounds for row in one.rows],
        joined_output([one.scores.output for one in rounds]),
        sum(one.rollouts.entropies.sum().item() for one in rounds),
        sum(one.seconds_sample for one in rounds),
        sum(one.seconds_score for one in rounds),
        len(rounds),
        batch.started,
        time.perf_counter(),
    )


def merge(records: list[StepRecord]) -> StepRecord:
    """One record of every process's, in rank order (their groups' ids follow on)."""
    if len(records) == 1:
        return records[0]
    first = records[0]
    return StepRecord(
        first.step,
        [g for r in records for g in r.groups],
        [ids for r in records for ids in r.completion_ids],
        [c for r in records for c in r.columns],
        joined_output([r.output for r in records]),
        sum(r.entropy_sum for r in records),
        max(r.seconds_sample for r in records),  # the processes sample and score side by side
        max(r.seconds_score for r in records),
        max(r.sampling_rounds for r in records),
        first.started,
        first.scored,
    )


def make_groups(
    rows: list[dict],
    rollouts: Rollouts,
    scores: Scores,
    advantages,
    group_size: int,
    first_group_id: int = 0,
    trained: list[bool] | None = None,
) -> list[Group]:
    """The round's groups, numbered from `first_group_id` (group_id = round x P + g over every process's
    groups); advantages (B,), or per token (B, T), shown as each completion's mean."""
    advantages = completion_advantages(advantages, rollouts.completion_mask)
    groups = []
    for g, row in enumerate(rows):
        i = slice(g * group_size, (g + 1) * group_size)
        groups.append(
            Group(
                group_id=first_group_id + g,
                prompt=row["prompt"],
                completions=rollouts.completions[i],
                rewards=scores.rewards[i],
                reward_values={name: values[i] for name, values in scores.values.items()},
                advantages=advantages[i].tolist(),
                num_tokens=rollouts.num_tokens[i].tolist(),
                truncated=rollouts.truncated[i].tolist(),
                dropped=trained is not None and not trained[g],
            )
        )
    return groups


def joined_output(outputs: list[dict[str, str]]) -> dict[str, str]:
    """What each reward function printed, over every round of the step or every process, in order."""
    names = dict.fromkeys(name for output in outputs for name in output)
    return {name: "".join(output.get(name, "") for output in outputs) for name in names}


def step_metrics(record: StepRecord, group_size: int) -> dict:
    """Reward and completion statistics of a step over every group it sampled, in every round
    (TRL's metrics, named as the store's columns)."""
    groups = record.groups
    values = {name: [v for g in groups for v in g.reward_values[name]] for name in groups[0].reward_values}
    num_tokens = torch.tensor([n for g in groups for n in g.num_tokens], dtype=torch.float)
    rewards = grpo.reward_tensor([r for g in groups for r in g.rewards])
    return reward_statistics(rewards, group_size) | {
        "completion_tokens_mean": num_tokens.mean().item(),
        "entropy": record.entropy_sum / num_tokens.sum().item(),  # per completion token
        "truncated_frac": sum(t for g in groups for t in g.truncated) / len(num_tokens),
        "reward_function_means": {name: _mean(vs) for name, vs in values.items()},
        "sampling_rounds": record.sampling_rounds,
    }


def reward_statistics(rewards: torch.Tensor, group_size: int) -> dict:
    """The `steps` columns of a step's rewards (B,), group by group: reward_mean, reward_std (the
    within-group std, mean over groups), frac_zero_std, and unscored_frac. Unscored completions (NaN)
    are left out of the statistics and counted."""
    group_std = grpo.group_std(rewards.view(-1, group_size))  # (groups, 1), NaN below 2 scored
    return {
        "reward_mean": _finite(rewards.nanmean()),
        "reward_std": _finite(group_std[group_std.isfinite()].mean()),
        "frac_zero_std": grpo.zero_std_fraction(rewards, group_size),
        "unscored_frac": rewards.isnan().float().mean().item(),
    }


def _mean(values: list[float | None]) -> float | None:
    """The mean of the scored values (None where a function returned None), 0 when none was scored."""
    scored = [v for v in values if v is not None]
    return sum(scored) / max(1, len(scored))


def _finite(value: torch.Tensor) -> float | None:
    return value.item() if value.isfinite() else None


class Checkup:
    """The run's health checks after each step (workbench.store.health): the steps so far, stored ones too on
    a resume, and the step each check last fired at, so that a check is reported as it starts firing, and again
    only after it has been quiet for `health.QUIET` steps (a check near its threshold fires on and off)."""

    def __init__(self, store: Store, run_id: str, config: Config):
        self.config = config.to_dict()
        self.steps = store.records("SELECT * FROM steps WHERE run_id = $1 ORDER BY step", [run_id])  # on a resume
        self.evals = store.records("SELECT * FROM evals WHERE run_id = $1 ORDER BY step", [run_id])
        self.fired: dict[str, int] = {}  # check -> the last step it fired at

    def after(self, step: int, metrics: dict, groups: list[Group]) -> list[health.Finding]:
        self.steps.append({"step": step, **metrics})
        completions = [  # a chat prompt by its text
            (str(g.prompt), c, r) for g in groups for c, r in zip(g.completions, g.rewards, strict=True)
        ]
        findings = health.diagnose(self.steps, self.config, self.evals, completions)
        started = [f for f in findings if f.check not in self.fired or step - self.fired[f.check] > health.QUIET]
        self.fired |= {f.check: step for f in findings}
        return started
