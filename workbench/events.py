"""What `train()` yields: plain data (no tensors), for the CLI, the app's runner and notebooks."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunStarted:
    run_id: str
    task: str
    model: str
    config: dict
    start_step: int  # the first step this call will train (> 1 when resuming)


@dataclass(frozen=True)
class Group:
    """One prompt and its G completions, scored."""

    group_id: int
    prompt: str | list[dict]
    completions: list[str]
    rewards: list[float]  # r_i, the weighted sum of the reward functions
    reward_values: dict[str, list[float | None]]  # each reward function's value per completion
    advantages: list[float]  # A_i
    num_tokens: list[int]
    truncated: list[bool]


@dataclass(frozen=True)
class GroupsScored:
    """A step's groups, scored, before the update: shown live while the policy trains on them."""

    run_id: str
    step: int
    groups: list[Group]


@dataclass(frozen=True)
class StepFinished:
    run_id: str
    step: int
    metrics: dict[str, float]  # column names of the store's `steps` table, see trainer.step_metrics


@dataclass(frozen=True)
class RunFinished:
    run_id: str
    step: int  # the last step trained
    status: str  # 'finished' (reached config.steps) or 'stopped'
    checkpoint: str


@dataclass(frozen=True)
class RunFailed:
    run_id: str
    step: int  # the step that failed; steps before it are stored and checkpointed
    error: str
    traceback: str = field(repr=False)


Event = RunStarted | GroupsScored | StepFinished | RunFinished | RunFailed
