"""Writing steps while training: a step's rows for every table (`step_rows`), and the `StepWriter` thread that
commits them so that the trainer never waits for DuckDB. How the writer shares the file with readers in other
processes is in `workbench.store.database`.
"""

from __future__ import annotations

import json
import queue
import threading
import time

from workbench.events import Group
from workbench.store.database import Store
from workbench.store.schema import StoreError

# One DuckDB thread for the step writer: it shares the cores with torch, whose threads spin.
WRITER = {"threads": 1}
COMMIT_SECONDS = 0.5  # the step writer commits a step at most this long after it arrives
POLL_SECONDS = 0.05  # and looks this often for a connection that waits for the file
_COMMIT, _CLOSE = "commit", "close"  # the step writer's orders, besides steps


class StepWriter:
    """Writes steps to the store on a background thread, so the trainer never waits for DuckDB.

    Opening a DuckDB file costs ~12 ms (measured, 2 cores), more than a tiny model's step can spare,
    so the writer keeps its connection open between steps and closes it only when another
    connection is waiting for the lock (it touched `Store.request_file`), which it looks for every
    POLL_SECONDS: a reader in any process waits at most about that long.

    Steps are committed together, at most COMMIT_SECONDS after the first of them arrived: a commit
    costs ~7-16 ms of a core however much it holds, and with one per step the tiny model's 60 ms
    steps ran 5-10% slower than with no writes (2 cores). So a killed trainer loses at most its
    last COMMIT_SECONDS of steps, and every commit holds whole steps. An error in the thread is
    raised on the trainer's next call.
    """

    def __init__(self, store: Store):
        self.store = store
        self.queue: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="store-writer", daemon=True)
        self.thread.start()

    def write(self, rows: dict[str, list[dict]]) -> None:
        self._raise()
        self.queue.put(rows)

    def flush(self) -> None:
        """Commit every step written so far, and wait until it is."""
        self.queue.put(_COMMIT)
        self.queue.join()
        self._raise()

    def close(self) -> None:
        self.queue.put(_CLOSE)
        self.thread.join()
        self._raise()

    def _work(self) -> None:
        con, pending, due, taken, item = None, [], 0.0, 0, None
        while item is not _CLOSE:
            try:
                item = self.queue.get(timeout=POLL_SECONDS)
                taken += 1
            except queue.Empty:
                item = None
            if isinstance(item, dict):
                due = due if pending else time.monotonic() + COMMIT_SECONDS
                pending.append(item)
            waits = self.store.request_file.exists()  # a connection waits for the file
            if item in (_COMMIT, _CLOSE) or waits or (pending and time.monotonic() >= due):
                con = self._commit(con, pending)
                pending = []
                for _ in range(taken):  # flush() returns once what it waited for is committed
                    self.queue.task_done()
                taken = 0
        if con is not None:
            con.close()

    def _commit(self, con, pending: list[dict]):
        """Commit the pending steps; let go of the file when someone waits for it. -> the connection kept"""
        try:
            if self.error is None and pending:
                con = con or self.store.open(read_only=False, config=WRITER)
                self.store.write_steps(pending, con=con)
            if con is not None and self.store.request_file.exists():
                self.store.request_file.unlink(missing_ok=True)
                con = con.close()
        except BaseException as error:  # kept for the trainer's thread to raise
            self.error = error
        return con

    def _raise(self) -> None:
        if self.error is not None:
            raise StoreError(f"writing a step to {self.store.path} failed: {self.error}") from self.error


def step_rows(
    run_id: str,
    step: int,
    metrics: dict,
    groups: list[Group],
    columns: list[dict],
    completion_ids: list[list[int] | None],
    source,
    *,
    new_reward: bool,
    reward_output: dict[str, str] | None = None,
    tokens: list[dict | None] | None = None,
) -> dict[str, list[dict]]:
    """A step's rows for every table it writes, in one `StepWriter.write`.

    steps: the step's metrics (reward_function_means as JSON); rollouts and reward_values: its groups
    (`rollout_rows`); reward_versions: the reward source's file (`source`: a RewardSource's version,
    filename and text) when this step is the first it scored (`new_reward`); reward_logs: what each reward
    function printed; tokens: each completion's per-token numbers, None where it was not trained."""
    step_row = metrics | {
        "run_id": run_id,
        "step": step,
        "reward_function_means": json.dumps(metrics.get("reward_function_means") or {}),
    }
    versions = [dict(version=source.version, filename=source.filename, source=source.text)] if new_reward else []
    logs = [dict(run_id=run_id, step=step, name=name, output=text) for name, text in (reward_output or {}).items()]
    keys = [
        dict(run_id=run_id, step=step, group_id=g.group_id, sample_idx=k)
        for g in groups
        for k in range(len(g.completions))
    ]
    return {
        "steps": [step_row],
        **rollout_rows(run_id, step, groups, columns, completion_ids, source.version),
        "reward_versions": versions,
        "reward_logs": logs,
        "tokens": [key | one for key, one in zip(keys, tokens or [None] * len(keys), strict=True) if one is not None],
    }


def rollout_rows(
    run_id: str,
    step: int,
    groups: list[Group],
    columns: list[dict],
    completion_ids: list[list[int] | None],
    reward_version: str,
) -> dict[str, list[dict]]:
    """The `rollouts` and `reward_values` rows of a step's groups, as `Store.group` reads them back.

    columns: each group's dataset columns besides its prompt; completion_ids: each completion's token
    ids, group by group."""
    rollouts, values = [], []
    for group, extra in zip(groups, columns, strict=True):
        prompt = group.prompt if isinstance(group.prompt, str) else json.dumps(group.prompt)
        extra_columns = json.dumps(extra, default=str)
        for k, completion in enumerate(group.completions):
            key = dict(run_id=run_id, step=step, group_id=group.group_id, sample_idx=k)
            rollouts.append(
                key
                | dict(
                    prompt=prompt,
                    completion=completion,
                    reward=group.rewards[k],
                    advantage=group.advantages[k],
                    num_tokens=group.num_tokens[k],
                    truncated=group.truncated[k],
                    reward_version=reward_version,
                    completion_ids=completion_ids[len(rollouts)],
                    extra_columns=extra_columns,
                    dropped=group.dropped,
                )
            )
            values += [key | dict(name=name, value=v[k]) for name, v in group.reward_values.items()]
    return {"rollouts": rollouts, "reward_values": values}
