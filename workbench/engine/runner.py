"""One run at a time in a worker process (workbench.engine.workers); the UI reads `Runner.snapshot` and never
waits on training.

The worker sends the run's events back over a pipe, and a thread of the app follows them into the snapshot.
Stop and a swapped reward go the other way, as a multiprocessing Event and Queue, which train() reads as it
reads a threading.Event and a queue.Queue.

After a restart the runner has trained nothing yet: `Runner.shown()` then reads the newest run back from the
store, so that the app opens on it rather than on an empty screen.
"""

from __future__ import annotations

import statistics
import threading
import time
import traceback
from dataclasses import dataclass, field

from workbench.config import Config
from workbench.engine import workers
from workbench.engine.checkpoint import checkpoint_folder
from workbench.engine.scheduler import Scheduler
from workbench.engine.trainer import train
from workbench.events import GroupsScored, HealthWarning, RunFailed, RunFinished, RunPaused, RunStarted, StepFinished
from workbench.formatting import nullable
from workbench.rewards.scoring import RewardSource
from workbench.rewards.tasks import Task, TaskError, load_task
from workbench.store.database import Store, new_run_id
from workbench.store.health import examine

ACTIVE = ("queued", "starting", "running")  # a run in these states changes the live view: the app polls meanwhile
RESUMABLE = ("stopped", "paused", "failed", "interrupted")  # with a checkpoint, Resume goes on from it


@dataclass
class Snapshot:
    run_id: str | None = None
    status: str = "idle"  # idle, queued, starting, running, finished, stopped, paused, failed, withdrawn
    step: int = 0
    steps: int = 0
    history: list[dict] = field(default_factory=list)  # each step's metrics, for the live curves
    last_groups: GroupsScored | None = None
    scored_at: float = 0.0  # time.time() when last_groups arrived: the live view's latency is measured from it
    config: dict = field(default_factory=dict)
    error: str = ""
    health: list = field(default_factory=list)  # workbench.events.Finding: the checks that started firing
    resume: str | None = None  # read back after a restart: the run that Resume would go on with
    queue_place: int | None = None  # queued: 1 starts next

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def seconds_per_step(self) -> float | None:
        """The median of the last ten steps' durations."""
        recent = [m["seconds"] for m in self.history[-10:]]
        return statistics.median(recent) if recent else None

    @property
    def eta(self) -> float | None:
        """Seconds until the last step, at the recent pace."""
        pace = self.seconds_per_step
        return None if pace is None else pace * (self.steps - self.step)


@dataclass
class LiveRun:
    """A run this runner started: its snapshot, and the channels to its worker."""

    snapshot: Snapshot
    task: Task
    stop: object = field(default_factory=lambda: workers.CONTEXT.Event())
    new_rewards: object = field(default_factory=lambda: workers.CONTEXT.Queue())
    thread: threading.Thread | None = None

    @property
    def pending(self) -> bool:
        """Queued, or training: the run holds one of its owner's runs."""
        return self.snapshot.status == "queued" or (self.thread is not None and self.thread.is_alive())


class Runner:
    """The runs of one workspace (one user), each in a worker process, started through the machine's `scheduler`
    (one run at a time when none is given); `limit` runs of this runner may be queued or training at once."""

    def __init__(self, workspace: str, scheduler: Scheduler | None = None, owner: str = "", limit: int = 1):
        self.workspace, self.owner, self.limit = workspace, owner, limit
        self.store = Store(workspace)
        self.scheduler = scheduler or Scheduler(1)
        self.runs: dict[str, LiveRun] = {}
        self.followed: str | None = None  # the run the page follows: the last one started

    @property
    def snapshot(self) -> Snapshot:
        run = self.runs.get(self.followed)
        if run is not None and run.snapshot.status == "queued":
            run.snapshot.queue_place = self.scheduler.place(run.snapshot.run_id)
        return Snapshot() if run is None else run.snapshot

    @property
    def task(self) -> Task | None:
        """The followed run's task: what a swapped reward scores, and a resume trains again."""
        run = self.runs.get(self.followed)
        return None if run is None else run.task

    @property
    def busy(self) -> bool:
        run = self.runs.get(self.followed)
        return run is not None and run.pending

    def start(self, config: Config, task: Task, resume: str | None = None) -> str:
        """Train a new run (or go on with run `resume`) in a worker process, now or in its turn.  -> the run's id"""
        pending = [run_id for run_id, run in self.runs.items() if run.pending]
        if len(pending) >= self.limit:
            at_once = "one run trains at a time" if self.limit == 1 else f"{self.limit} runs may train at a time"
            doing = (
                "is waiting in the queue" if self.runs[pending[-1]].snapshot.status == "queued" else "is still training"
            )
            raise RuntimeError(
                f"run {pending[-1]} {doing}, and {at_once}: stop it first, or swap the edited reward into it"
            )
        run_id = resume or new_run_id(task.name)
        snapshot = Snapshot(run_id=run_id, status="queued", steps=config.steps, config=config.to_dict())
        run = self.runs[run_id] = LiveRun(snapshot, task)
        self.followed = run_id
        self.scheduler.submit(self.owner, run_id, lambda: self._launch(run, config, resume))
        return run_id

    def _launch(self, run: LiveRun, config: Config, resume: str | None) -> None:
        if run.snapshot.status != "queued":  # withdrawn while it waited
            return
        run.snapshot.status, run.snapshot.queue_place = "starting", None
        events, sender = workers.CONTEXT.Pipe(duplex=False)
        run_id = run.snapshot.run_id
        arguments = (sender, config, run.task, self.workspace, resume, run_id, run.stop, run.new_rewards)
        process = workers.CONTEXT.Process(target=train_in_worker, args=arguments, daemon=True)
        process.start()
        sender.close()  # the worker holds the sending end: when it ends, the following thread reads the end
        run.thread = threading.Thread(target=self._follow, args=(run, events, process, resume), daemon=True)
        run.thread.start()

    def status(self, run_id: str) -> dict:
        """A run's status as scripts read it (the store's column names, JSON-safe): run_id, status, step, steps,
        reward_mean (its latest step's), error, queue_place; a run of this runner as it goes, any other as the
        store has it."""
        run = self.runs.get(run_id)
        if run is None:
            runs = [run for run in run_summaries(self.store) if run["run_id"] == run_id]
            if not runs:
                raise TaskError(f"no run {run_id!r} in workspace {self.workspace}")
            return runs[0] | {"queue_place": None}
        snapshot = run.snapshot
        reward = snapshot.history[-1].get("reward_mean") if snapshot.history else None
        return dict(
            run_id=run_id,
            status=snapshot.status,
            step=snapshot.step,
            steps=snapshot.steps,
            reward_mean=nullable(reward),
            error=snapshot.error or None,
            queue_place=self.scheduler.place(run_id),
        )

    def shown(self) -> Snapshot:
        """What the app shows of training: the followed run; before this runner started one (after a restart),
        the newest stored run as the store holds it, and which run Resume would go on with."""
        if self.followed is not None:
            return self.snapshot
        runs = self.store.runs()
        snapshot = Snapshot() if runs.empty else stored_snapshot(self.store, runs.run_id.iloc[0])
        snapshot.resume = latest_resumable(self.store)
        return snapshot

    def resume(self, run_id: str, rewards: RewardSource) -> str:
        """Continue a stopped, paused or failed run from its last checkpoint, scored by `rewards`."""
        run = self.store.run(run_id)
        if run is None:
            raise TaskError(f"no run {run_id!r} in workspace {self.workspace}")
        config = Config.from_dict(run["config"])
        if run["status"] == "finished":
            raise TaskError(f"run {run_id} finished all its {config.steps} steps: start a new run to train more")
        known = self.runs.get(run_id)
        task = known.task if known is not None else load_task(run["task_path"])  # an uploaded task is in memory
        return self.start(config, task.with_rewards(rewards), resume=run_id)

    def stop(self, run_id: str | None = None) -> None:
        """Stop the run (the followed one by default) after its step; a queued one is withdrawn from the queue."""
        run = self.runs.get(run_id or self.followed)
        if run is None:
            return
        if run.snapshot.status == "queued":
            run.snapshot.status, run.snapshot.queue_place = "withdrawn", None
            self.scheduler.done(run.snapshot.run_id)
        run.stop.set()

    def swap_rewards(self, source: RewardSource) -> None:
        """Score the followed run with another reward source from its next step on."""
        self.runs[self.followed].new_rewards.put(source)

    def _follow(self, run: LiveRun, events, process, resume: str | None) -> None:
        """The worker's events into the run's snapshot, until it ends; a worker that ends without saying how
        (killed, out of memory) leaves the run failed, with its exit code. Its slot then goes to the next run."""
        snapshot = run.snapshot
        try:
            while True:
                try:
                    event = events.recv()
                except EOFError:
                    break
                self._apply(snapshot, event, resume)
            process.join()
            if snapshot.active:
                snapshot.status = "failed"
                snapshot.error = snapshot.error or f"the run's process ended with exit code {process.exitcode}"
        finally:
            self.scheduler.done(snapshot.run_id)

    def _apply(self, snapshot: Snapshot, event, resume: str | None) -> None:
        if isinstance(event, RunStarted):
            snapshot.run_id, snapshot.status = event.run_id, "running"
            snapshot.step = event.start_step - 1
            if resume:  # the curves start from the stored steps
                snapshot.history = self.store.steps(resume).to_dict(orient="records")
        elif isinstance(event, GroupsScored):
            snapshot.last_groups, snapshot.scored_at = event, time.time()
        elif isinstance(event, StepFinished):
            snapshot.step = event.step
            snapshot.history.append({"step": event.step, **event.metrics})
        elif isinstance(event, HealthWarning):
            snapshot.health.append(event.finding)
        elif isinstance(event, RunFinished):
            snapshot.status = event.status
        elif isinstance(event, RunPaused):
            snapshot.status, snapshot.error = "paused", event.failure.explain()
        elif isinstance(event, RunFailed):
            snapshot.status, snapshot.error = "failed", event.error
            print(event.traceback, flush=True)  # the server log keeps the traceback


def train_in_worker(events, config: Config, task: Task, workspace: str, resume, run_id, stop, new_rewards) -> None:
    """A worker's life: train, sending each event to the app; a bad model or reward source fails before the
    first step, and is sent as a failure."""
    workers.die_with_parent()
    try:
        for event in train(config, task, workspace, resume=resume, stop=stop, new_rewards=new_rewards, run_id=run_id):
            events.send(event)
    except Exception as error:
        events.send(RunFailed(run_id, 0, f"{type(error).__name__}: {error}", traceback.format_exc()))
    finally:
        events.close()


def stored_snapshot(store: Store, run_id: str) -> Snapshot:
    """A stored run as the live view draws one: its status, curves, the groups of its latest step, and the
    health checks that fire on it now."""
    run, steps = store.run(run_id), store.steps(run_id)
    step = int(steps.step.max()) if not steps.empty else 0
    groups = store.groups(run_id, step) if step else []
    return Snapshot(
        run_id=run_id,
        status=run["status"],
        step=step,
        steps=run["config"].get("steps", step),
        history=steps.to_dict(orient="records"),
        last_groups=GroupsScored(run_id, step, groups) if groups else None,
        config=run["config"],
        error=run["error"] or "",
        health=examine(store, run_id),
    )


def run_summaries(store: Store) -> list[dict]:
    """Every run of the store, newest first, as scripts read them (JSON-safe): run_id, created_at (ISO 8601),
    task, model, status, step (the last stored), steps, reward_mean (its last step's), error."""
    runs = store.runs()
    return [
        dict(
            run_id=row.run_id,
            created_at=row.created_at.isoformat(),
            task=row.task,
            model=row.model,
            status=row.status,
            step=int(nullable(row.last_step) or 0),
            steps=int(row.steps),
            reward_mean=nullable(row.reward_mean),
            error=row.error or None,
        )
        for row in runs.itertuples()
    ]


def latest_resumable(store: Store) -> str | None:
    """The newest run that ended early and has a checkpoint to go on from (a run TRL trained has none)."""
    runs = store.runs()
    resumable = runs[runs.status.isin(RESUMABLE)]
    with_checkpoint = resumable.run_id.map(lambda run_id: checkpoint_folder(store.workspace, run_id).exists())
    return None if not with_checkpoint.any() else resumable.run_id[with_checkpoint].iloc[0]
