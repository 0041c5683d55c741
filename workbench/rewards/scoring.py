"""Scoring completions with user reward functions, which run in a separate worker process.

The reward contract is TRL's: `def name(completions, prompts=None, **kwargs) -> list[float | None]`,
one value per completion, None for "not scored". Every public top-level function (or callable) of a
reward source with a `completions` or `completion_ids` parameter is a reward function. The trainer
calls each with keywords: `completions` (strings, or TRL's message form `[{"role": "assistant",
"content": ...}]` for chat prompts), `prompts`, `completion_ids` (token ids up to and including EOS),
`trainer_state` (`.global_step` optimizer steps so far, `.max_steps`) and every dataset column as a
list (e.g. `answer`). The reward r_i is the weighted sum of the functions' values, skipping None
(TRL's nansum); a completion that no function scored has reward None, and no advantage.

A `Scorer` keeps one worker (`workbench.rewards.worker`) for its source. A function that raises, runs
past `reward_time_limit`, exhausts `reward_memory_mb` or kills its process raises
`RewardFunctionError`, whose `failure` names the function, the line, the first completion that fails
on its own, the traceback and what the code printed; a killed worker is restarted for the next call.
This isolates mistakes, not hostile code: the worker runs as the same user with the same files.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import types
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path

from workbench.config import Config
from workbench.events import RewardFailure
from workbench.rewards.worker import LOAD_TIME_LIMIT, OUTPUT_LIMIT

GRACE = 1.0  # seconds past a call's time limit before the worker is killed: it ignored the alarm
# Completions a source is checked on before training, to see what its functions return.
PROBE_COMPLETIONS = ("", "The answer is 42.")


class RewardError(ValueError):
    """A reward source or reward weights are unusable; the message names the function and line."""


class RewardFunctionError(RewardError):
    """Reward code failed; `failure` holds the function, completion, traceback and printed output."""

    def __init__(self, failure: RewardFailure):
        super().__init__(failure.explain())
        self.failure = failure

    def __reduce__(self):  # rebuilt from its failure: it travels between the processes of a data-parallel run
        return type(self), (self.failure,)


@dataclass(frozen=True)
class RewardSource:
    """The text of a reward file (or of the editor), and the file name its errors are reported under."""

    text: str
    filename: str = "reward.py"

    @property
    def version(self) -> str:
        """The text's hash: the store keeps each version that scored something, and rollouts name it."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]

    @classmethod
    def from_file(cls, path: str | Path) -> RewardSource:
        path = Path(path)
        if not path.is_file():
            raise RewardError(f"{path}: no such reward file")
        return cls(path.read_text(), str(path))


@dataclass(frozen=True)
class Scores:
    values: dict[str, list[float | None]]  # each function's value per completion
    rewards: list[float | None]  # r_i: the weighted sum, None skipped; None where no function scored
    output: dict[str, str] = field(default_factory=dict)  # what each function printed, where it printed


class RewardWorker:
    """One `workbench.rewards.worker` process, started on first use and again after it is lost."""

    def __init__(self, memory_mb: int):
        self.memory_mb = memory_mb
        self.process: subprocess.Popen | None = None

    def request(self, message: tuple, time_limit: float) -> tuple:
        """The worker's reply, or ("lost", problem, printed output) if it died or was killed for time."""
        if self.process is None:
            self._start()
        try:
            self.connection.send(message)
            if self.connection.poll(time_limit + GRACE):
                return self.connection.recv()
            self.process.kill()
            problem = f"ran longer than its time limit of {time_limit:g} s and ignored the alarm, so it was killed"
        except (EOFError, OSError):  # the process died before or while it answered
            problem = _death(self.process.wait())
        self.process.wait()
        output = self._output()
        self.close()
        return "lost", problem, output

    def close(self) -> None:
        if self.process is None:
            return
        self.connection.close()  # the worker reads EOF and exits
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.capture.close()
        self.process = None

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        self.capture = tempfile.TemporaryFile()  # the worker's stdout and stderr
        package_parent = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])))
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-m", "workbench.rewards.worker", str(theirs.fileno()), str(self.memory_mb)],
            stdin=subprocess.DEVNULL,
            stdout=self.capture,
            stderr=subprocess.STDOUT,
            pass_fds=[theirs.fileno()],
            env=env,
            start_new_session=True,  # Ctrl-C in a terminal stops the trainer, not a reward call
        )
        theirs.close()
        self.connection = Connection(ours.detach())

    def _output(self) -> str:
        self.capture.seek(0)
        return self.capture.read(OUTPUT_LIMIT).decode("utf-8", errors="replace")


class Scorer:
    """A reward source loaded in a worker; scores batches of completions with the config's weights and limits."""

    def __init__(self, source: RewardSource, columns: list[str], config: Config | None = None):
        self.config = config or Config()
        self.columns = list(columns)
        self.worker = RewardWorker(self.config.reward_memory_mb)
        self._batch: tuple | None = None
        try:
            self.load(source)
        except RewardError:
            self.close()  # no worker outlives a source that was refused
            raise

    def load(self, source: RewardSource) -> None:
        """Load (or swap in) a source: its syntax, functions, signatures and the weights are checked here."""
        reply = self.worker.request(self._load_message(source), LOAD_TIME_LIMIT)
        if reply[0] != "loaded":
            raise RewardFunctionError(self._failure(None, reply))
        self.source, self.lines = source, dict(reply[1])
        unknown = sorted(set(self.config.reward_weights) - set(self.lines))
        if unknown:
            raise RewardError(
                f"reward_weights names {', '.join(unknown)}, not a reward function of {source.filename} "
                f"(its reward functions: {', '.join(self.lines)})"
            )
        self._batch = None

    @property
    def names(self) -> list[str]:
        return list(self.lines)

    def score(
        self,
        rows: list[dict],
        completions: list[str],
        completion_ids: list[list[int]] | None = None,
        global_step: int = 0,
    ) -> Scores:
        """Each function's values for the completions; `rows[i]` is completion i's dataset row.

        Without `completion_ids` (outside training) the UTF-8 bytes of each completion stand in for them.
        `global_step`: the optimizer steps taken before these completions were sampled, which reward
        functions read as TRL gives it, `trainer_state.global_step` (with `.max_steps`, the run's steps).
        """
        prompts = [row["prompt"] for row in rows]
        kwargs = {column: [row.get(column) for row in rows] for column in self.columns}
        kwargs["completion_ids"] = completion_ids or [list(text.encode()) for text in completions]
        kwargs["trainer_state"] = types.SimpleNamespace(global_step=global_step, max_steps=self.config.steps)
        self._batch = ("batch", prompts, completions_for_trl(prompts, completions), kwargs)
        self._send_batch()
        values, output = {}, {}
        for name in self.names:
            reply = self._call(name, None)
            if reply[0] != "scored":
                raise RewardFunctionError(self._located(name, reply, prompts, completions))
            values[name] = reply[1]
            if reply[2]:
                output[name] = reply[2]
        return Scores(values, self.total(values), output)

    def probe(self, rows: list[dict]) -> Scores:
        """Score the `probes` of the rows: what the functions return, before any training."""
        pairs = probes(rows)
        return self.score([row for row, _ in pairs], [completion for _, completion in pairs])

    def total(self, values: dict[str, list[float | None]]) -> list[float | None]:
        """r_i = sum over functions of weight * value, skipping None; None where every value is None."""
        weights = self.config.reward_weights
        count = len(next(iter(values.values())))
        totals = []
        for i in range(count):
            scored = [weights.get(name, 1.0) * v[i] for name, v in values.items() if v[i] is not None]
            totals.append(float(sum(scored)) if scored else None)
        return totals

    def close(self) -> None:
        self.worker.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send_batch(self) -> None:
        if self.worker.process is None:  # lost on an earlier call: a new worker needs the source again
            self.worker.request(self._load_message(self.source), LOAD_TIME_LIMIT)
        self.worker.request(self._batch, LOAD_TIME_LIMIT)

    def _load_message(self, source: RewardSource) -> tuple:
        return ("load", source.text, source.filename, self.columns)

    def _call(self, name: str, indices: list[int] | None) -> tuple:
        if self.worker.process is None:
            self._send_batch()
        limit = self.config.reward_time_limit
        return self.worker.request(("call", name, indices, limit), limit)

    def _located(self, name: str, reply: tuple, prompts: list, completions: list[str]) -> RewardFailure:
        """The failure, with the first completion that fails on its own when the whole call failed."""
        failure = self._failure(name, reply)
        if reply[0] == "invalid":  # a bad return value names its completion, or concerns the whole list
            return failure
        for i in range(len(completions)):
            if self._call(name, [i])[0] != "scored":
                return replace(failure, completion_index=i, completion=completions[i], prompt=prompts[i])
        return replace(failure, problem=failure.problem + " (no completion fails on its own; the whole call does)")

    def _failure(self, name: str | None, reply: tuple) -> RewardFailure:
        if reply[0] == "lost":
            location = f"{self.source.filename}, line {self.lines[name]}" if name else ""
            return RewardFailure(name, reply[1], location, output=reply[2])
        return reply[1]


def probes(rows: list[dict]) -> list[tuple[dict, str]]:
    """(row, completion) pairs a source is checked on: PROBE_COMPLETIONS for each of the first two rows."""
    return [(row, completion) for row in rows[:2] for completion in PROBE_COMPLETIONS]


def completions_for_trl(prompts: list, texts: list[str]) -> list:
    """Completions as TRL passes them: strings for string prompts, assistant messages for chat."""
    return [
        [{"role": "assistant", "content": text}] if isinstance(prompt, list) else text
        for prompt, text in zip(prompts, texts)
    ]


def validate_rewards(source: RewardSource, rows: list[dict], config: Config | None = None) -> Scores:
    """Check a source before training: load it, check signatures and weights, score the probe completions."""
    columns = columns_of(rows)
    with Scorer(source, columns, config) as scorer:
        return scorer.probe(rows)


def try_rewards(source: RewardSource, completion: str, row: dict, config: Config | None = None) -> Scores:
    """Score one completion of one dataset row (`{"prompt": ..., "answer": ...}`): try a reward on text."""
    with Scorer(source, columns_of([row]), config) as scorer:
        return scorer.score([row], [completion])


def columns_of(rows: list[dict]) -> list[str]:
    """The dataset columns reward functions receive: every key but 'prompt', in first-seen order."""
    return list(dict.fromkeys(key for row in rows for key in row if key != "prompt"))


def _death(returncode: int) -> str:
    if returncode < 0:
        name = signal.Signals(-returncode).name
        why = " (a segmentation fault)" if name == "SIGSEGV" else ""
        return f"killed the reward worker process with {name}{why}"
    return f"ended the reward worker process with exit code {returncode} (os._exit or a crash)"
