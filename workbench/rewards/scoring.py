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
Where bubblewrap works the worker is sandboxed against hostile code too (`workbench.rewards.sandbox`:
no network, no server environment, no file but Python's and its task folder's, its processes bounded
together and ended with each call); `sandbox_status()` says what holds on this machine.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path

from workbench.config import Config
from workbench.events import RewardFailure
from workbench.rewards import models as model_rewards  # which imports this module too: each uses the other's later
from workbench.rewards.sandbox import PROCESS_LIMIT, WATCH, Confinement
from workbench.rewards.worker import LOAD_TIME_LIMIT, OUTPUT_LIMIT

GRACE = 1.0  # seconds past a call's time limit before the worker is killed: it ignored the alarm
REPLY_LIMIT = 64 << 20  # bytes of one reply: values, names and printed output (OUTPUT_LIMIT) are far less
START_TIME_LIMIT = 60.0  # seconds for a new worker to say it is ready (Python's start on a busy machine)
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
    folder: str | None = None  # the folder of the file it was read from (its task's); None for the editor's text

    @property
    def version(self) -> str:
        """The text's hash: the store keeps each version that scored something, and rollouts name it."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]

    @classmethod
    def from_file(cls, path: str | Path) -> RewardSource:
        path = Path(path)
        if not path.is_file():
            raise RewardError(f"{path}: no such reward file")
        return cls(path.read_text(), str(path), str(path.parent.resolve()))


@dataclass(frozen=True)
class Scores:
    values: dict[str, list[float | None]]  # each function's value per completion
    rewards: list[float | None]  # r_i: the weighted sum, None skipped; None where no function scored
    output: dict[str, str] = field(default_factory=dict)  # what each function printed, where it printed


class RewardWorker:
    """One `workbench.rewards.worker` process, confined (`sandbox.Confinement`), started on first use and again
    after it is lost. `folder`: the task's folder, which the sandbox shows it (read-only) and its imports search."""

    def __init__(self, memory_mb: int, folder: str | None = None, sandboxed: bool = True):
        self.memory_mb, self.folder, self.sandboxed = memory_mb, folder, sandboxed
        self.process: subprocess.Popen | None = None

    def request(self, message: tuple, time_limit: float) -> tuple:
        """The worker's reply, or ("lost", problem, printed output) if it died or was killed for time or memory."""
        if self.process is None:
            problem = self._start()
            if problem:
                return self._lost(problem)
        try:
            self.connection.send(message)
            problem = self._wait(time_limit)
            if problem is None:
                return self._reply(self._receive())
        except (EOFError, OSError):  # the process died before or while it answered (or sent too much)
            problem = self._why_lost()
        except ValueError as error:  # what it sent is no reply: reward code wrote to the socket
            problem = f"sent the trainer something that is not a reply ({error}), so it was killed"
        return self._lost(problem)

    def close(self) -> None:
        if self.process is None:
            return
        self.connection.close()  # the worker reads EOF and exits
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        self.confinement.close()  # whatever is left of its processes, and its cgroup
        self.process.wait()
        self.capture.close()
        self.process = None

    def _start(self) -> str | None:
        """Start the worker and wait until it is ready; a problem if it could not start."""
        ours, theirs = socket.socketpair()
        self.capture = tempfile.TemporaryFile()  # the worker's stdout and stderr
        self.confinement = Confinement(self.memory_mb, self.folder, self.sandboxed)
        package_parent = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])))
        self.process = self.confinement.start(
            [sys.executable, "-s", "-u", "-m", "workbench.rewards.worker"]
            + [str(theirs.fileno()), str(self.memory_mb), str(self.confinement.process_rlimit)],
            env,
            stdin=subprocess.DEVNULL,
            stdout=self.capture,
            stderr=subprocess.STDOUT,
            pass_fds=[theirs.fileno()],
        )
        theirs.close()
        self.connection = Connection(ours.detach())
        try:
            if self.connection.poll(START_TIME_LIMIT) and self._receive() == ["ready"]:
                self.confinement.started()
                return None
        except (EOFError, OSError, ValueError):
            pass
        return f"the reward worker process did not start: {self._output().strip() or 'it said nothing'}"

    def _wait(self, time_limit: float) -> str | None:
        """Wait for the reply, watching the processes' memory and number (as it comes too: a child killed for
        memory may not stop the call); a problem when they must be killed."""
        deadline = time.monotonic() + time_limit + GRACE
        while True:
            answered = self.connection.poll(WATCH)
            problem = self.confinement.breach()
            if problem or answered:
                return problem
            if time.monotonic() > deadline:
                return f"ran longer than its time limit of {time_limit:g} s and ignored the alarm, so it was killed"

    def _receive(self) -> list:
        """A reply, read as JSON, never unpickled; ValueError if it is not JSON."""
        return json.loads(self.connection.recv_bytes(REPLY_LIMIT))

    def _why_lost(self) -> str:
        try:
            returncode = self.process.wait(timeout=GRACE)
        except subprocess.TimeoutExpired:
            return "stopped answering (it closed or flooded the reward worker's connection), so it was killed"
        return self.confinement.breach() or _death(returncode, self.confinement.bwrap is not None)

    def _reply(self, reply: list) -> tuple:
        """The reply, checked, with its failure rebuilt; what the request left running is ended first.
        ValueError if it is not one the worker sends."""
        self.confinement.end_leftovers()
        refused = self.confinement.refused_forks()  # asked after every request, so a failure names only its own
        kind = reply[0] if isinstance(reply, list) and reply else None
        if kind not in ("failed", "invalid"):
            if not _well_formed(reply):
                raise ValueError(f"{str(reply)[:80]}")
            return tuple(reply)
        try:
            (failure,) = [RewardFailure(**fields) for fields in reply[1:]]
        except TypeError as error:  # not the fields of one RewardFailure
            raise ValueError(str(error)) from None
        if refused:
            limit = f"its processes reached the sandbox's limit of {PROCESS_LIMIT}"
            failure = replace(failure, problem=f"{failure.problem} ({limit})")
        return reply[0], failure

    def _lost(self, problem: str) -> tuple:
        self.confinement.kill()
        self.process.wait()
        output = self._output()
        self.close()
        return "lost", problem, output

    def _output(self) -> str:
        self.capture.seek(0)
        return self.capture.read(OUTPUT_LIMIT).decode("utf-8", errors="replace")


class Scorer:
    """A reward source loaded in a worker; scores batches of completions with the config's weights and limits."""

    def __init__(
        self, source: RewardSource, columns: list[str], config: Config | None = None, folder: str | None = None
    ):
        """`folder`: the task's folder, the only one of the machine's the reward code sees (read-only) and
        where its imports look first; by default the folder of the source's file (none for the editor's text)."""
        self.config = config or Config()
        self.columns = list(columns)
        self.folder = folder or source.folder
        self.worker = RewardWorker(self.config.reward_memory_mb, self.folder)
        self.models = model_rewards.ModelRewards(self.config)  # reward models and the judge: no user code, run here
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
        self.models.declare(source, self.lines)  # REWARD_MODELS, JUDGE_RUBRIC: read here, never run
        unknown = sorted(set(self.config.reward_weights) - set(self.names))
        if unknown:
            raise RewardError(
                f"reward_weights names {', '.join(unknown)}, not a reward function of {source.filename} "
                f"(its reward functions: {', '.join(self.names)})"
            )
        self._batch = None

    @property
    def names(self) -> list[str]:
        return list(self.lines) + self.models.names

    def score(
        self,
        rows: list[dict],
        completions: list[str],
        completion_ids: list[list[int]] | None = None,
        global_step: int = 0,
        models: bool = True,
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
        for name in self.lines:
            reply = self._call(name, None)
            if reply[0] != "scored":
                raise RewardFunctionError(self._located(name, reply, prompts, completions))
            values[name] = reply[1]
            if reply[2]:
                output[name] = reply[2]
        values |= self.models.score(prompts, completions) if models else {}  # `models`: reward models and judge
        return Scores(values, self.total(values), output)

    def probe(self, rows: list[dict]) -> Scores:
        """Score the `probes` of the rows: what the functions return, before any training."""
        pairs = probes(rows)
        return self.score([row for row, _ in pairs], [completion for _, completion in pairs], models=False)

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
        return ("load", source.text, source.filename, self.columns, self.folder)

    def _call(self, name: str, indices: list[int] | None) -> tuple:
        if self.worker.process is None:
            self._send_batch()
        limit = self.config.reward_time_limit
        reply = self.worker.request(("call", name, indices, limit), limit)
        expected = len(self._batch[2]) if indices is None else len(indices)
        if reply[0] == "scored" and len(reply[1]) != expected:  # the worker checks this: reward code answered
            self.worker.close()
            return "lost", f"sent the trainer {len(reply[1])} values for {expected} completions, so it was killed", ""
        return reply

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


def validate_rewards(
    source: RewardSource, rows: list[dict], config: Config | None = None, folder: str | None = None
) -> Scores:
    """Check a source before training: load it, check signatures and weights, score the probe completions."""
    columns = columns_of(rows)
    with Scorer(source, columns, config, folder) as scorer:
        return scorer.probe(rows)


def try_rewards(
    source: RewardSource, completion: str, row: dict, config: Config | None = None, folder: str | None = None
) -> Scores:
    """Score one completion of one dataset row (`{"prompt": ..., "answer": ...}`): try a reward on text."""
    with Scorer(source, columns_of([row]), config, folder) as scorer:
        return scorer.score([row], [completion], models=False)


def columns_of(rows: list[dict]) -> list[str]:
    """The dataset columns reward functions receive: every key but 'prompt', in first-seen order."""
    return list(dict.fromkeys(key for row in rows for key in row if key != "prompt"))


def _well_formed(reply) -> bool:
    """Whether a reply other than a failure has the worker's shape: ("ok",), ("ready",), ("loaded", [(name,
    line), ...]) or ("scored", [number or None, ...], output)."""
    if not isinstance(reply, list) or reply in (["ok"], ["ready"]):
        return reply in (["ok"], ["ready"])
    if len(reply) == 2 and reply[0] == "loaded" and isinstance(reply[1], list):
        return all(
            isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and type(pair[1]) is int
            for pair in reply[1]
        )
    if len(reply) == 3 and reply[0] == "scored" and isinstance(reply[1], list) and isinstance(reply[2], str):
        return all(value is None or (type(value) in (int, float) and math.isfinite(value)) for value in reply[1])
    return False


def _death(returncode: int, sandboxed: bool) -> str:
    if sandboxed and returncode > 128:  # bubblewrap passes on a signal's death as 128 + its number
        returncode = 128 - returncode
    if returncode < 0:
        name = signal.Signals(-returncode).name
        why = " (a segmentation fault)" if name == "SIGSEGV" else ""
        return f"killed the reward worker process with {name}{why}"
    return f"ended the reward worker process with exit code {returncode} (os._exit or a crash)"
