"""What `train()` yields: plain data (no tensors), for the CLI, the app's runner and notebooks."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Finding:
    """A check that fired: its name, the step it fired at, what it saw, what to try."""

    check: str
    step: int
    saw: str
    advice: str

    @property
    def words(self) -> dict[str, str]:
        return {"saw": self.saw, "advice": self.advice}

    def explain(self) -> str:
        return f"{self.check} (step {self.step}): {self.saw}\n  try: {self.advice}"


@dataclass(frozen=True)
class RunStarted:
    run_id: str
    task: str
    model: str
    config: dict
    start_step: int  # the first step this call will train (> 1 when resuming)
    threads: str = ""  # the torch threads the run starts with, and why (workbench.engine.threads)


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
    dropped: bool = False  # left out of the update by dynamic sampling (its rewards were all equal, or P were found)


@dataclass(frozen=True)
class GroupsScored:
    """A step's groups, scored, before the update: shown live while the policy trains on them."""

    run_id: str
    step: int
    groups: list[Group]
    reward_output: dict[str, str] = field(default_factory=dict)  # what each reward function printed


@dataclass(frozen=True)
class StepFinished:
    run_id: str
    step: int
    metrics: dict[str, float]  # column names of the store's `steps` table, see trainer.step_metrics


@dataclass(frozen=True)
class Evaluated:
    """A held-out evaluation after a step (step 0: before training); see workbench.engine.evaluation."""

    run_id: str
    step: int
    metrics: dict[str, float | None]  # column names of the store's `evals` table


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


@dataclass(frozen=True)
class RewardFailure:
    """Why reward code could not score: which function, where, on which completion, and its traceback."""

    function: str | None  # None when the source itself failed (syntax, import, no reward function)
    problem: str  # one line: what went wrong
    location: str = ""  # 'reward.py, line 12'
    completion_index: int | None = None  # in the batch the function was called on
    completion: str | None = None
    prompt: str | list[dict] | None = None
    traceback: str = ""  # user frames only
    output: str = ""  # what the reward code printed before it failed

    def explain(self) -> str:
        """The failure as a user reads it: the problem first, then the evidence."""
        who = f"reward function {self.function}" if self.function else "the reward source"
        where = f" ({self.location})" if self.location else ""
        lines = [f"{who}{where}: {self.problem}"]
        if self.completion is not None:
            lines.append(f"on completion {self.completion_index}: {self.completion!r}")
            lines.append(f"of prompt: {self.prompt!r}")
        if self.traceback:
            lines.append(self.traceback.rstrip())
        if self.output:
            lines.append("it printed:\n" + self.output.rstrip())
        return "\n".join(lines)


@dataclass(frozen=True)
class RunPaused:
    """A reward function failed on this step: nothing of it is stored; fix the reward and resume."""

    run_id: str
    step: int  # the step to redo; steps before it are stored and checkpointed
    failure: RewardFailure


@dataclass(frozen=True)
class HealthWarning:
    """A health check started firing at this step (workbench.store.health): what it saw and what to try."""

    run_id: str
    finding: Finding


Event = RunStarted | GroupsScored | StepFinished | Evaluated | HealthWarning | RunFinished | RunFailed | RunPaused
