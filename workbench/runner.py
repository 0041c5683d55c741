"""One run at a time in a background thread; the UI reads `Runner.snapshot` and never waits on training."""

from __future__ import annotations

import queue
import threading
import traceback
from dataclasses import dataclass, field

from workbench.config import Config
from workbench.events import GroupsScored, RunFailed, RunFinished, RunPaused, RunStarted, StepFinished
from workbench.scoring import RewardSource
from workbench.tasks import Task
from workbench.trainer import train


@dataclass
class Snapshot:
    run_id: str | None = None
    status: str = "idle"  # idle, starting, running, finished, stopped, paused, failed
    step: int = 0
    steps: int = 0
    history: list[dict] = field(default_factory=list)  # each step's metrics, for the live curves
    last_groups: GroupsScored | None = None
    error: str = ""


class Runner:
    def __init__(self, workspace: str):
        self.workspace = workspace
        self.snapshot = Snapshot()
        self._stop = threading.Event()
        self._new_rewards: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, config: Config, task: Task) -> None:
        if self.busy:
            raise RuntimeError(f"run {self.snapshot.run_id} is still training: stop it first")
        self._stop.clear()
        self._new_rewards = queue.Queue()
        self.snapshot = Snapshot(status="starting", steps=config.steps)
        self._thread = threading.Thread(target=self._follow, args=(config, task), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def swap_rewards(self, source: RewardSource) -> None:
        """Score the running run with another reward source from its next step on."""
        self._new_rewards.put(source)

    def _follow(self, config: Config, task: Task) -> None:
        snapshot = self.snapshot
        try:
            for event in train(config, task, self.workspace, stop=self._stop, new_rewards=self._new_rewards):
                if isinstance(event, RunStarted):
                    snapshot.run_id, snapshot.status = event.run_id, "running"
                elif isinstance(event, GroupsScored):
                    snapshot.last_groups = event
                elif isinstance(event, StepFinished):
                    snapshot.step = event.step
                    snapshot.history.append({"step": event.step, **event.metrics})
                elif isinstance(event, RunFinished):
                    snapshot.status = event.status
                elif isinstance(event, RunPaused):
                    snapshot.status, snapshot.error = "paused", event.failure.explain()
                elif isinstance(event, RunFailed):
                    snapshot.status, snapshot.error = "failed", event.error
                    print(event.traceback, flush=True)  # the server log keeps the traceback
        except Exception as error:  # a bad model or reward source fails before the first step
            snapshot.status, snapshot.error = "failed", f"{type(error).__name__}: {error}"
            traceback.print_exc()
