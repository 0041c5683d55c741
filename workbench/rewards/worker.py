"""The reward worker: the process that runs user reward code, so that its mistakes stay out of the trainer.

`scoring.RewardWorker` starts it as `python -u -m workbench.rewards.worker FD MEMORY_MB PROCESSES`, confined as
`workbench.rewards.sandbox` says (in a bubblewrap sandbox where one works), and talks to it over the socket FD
with tuples, pickled one way and JSON the other: reward code runs in the worker and could write to the socket,
and unpickling runs code. The worker first says ("ready",), before any reward code runs; then one reply per request:

    ("load", source, filename, columns, folder) -> ("loaded", [(name, line), ...]) | ("failed", failure)
    ("batch", prompts, completions, kwargs)     -> ("ok",)
    ("call", name, indices, time_limit)         -> ("scored", values, output) | ("failed" | "invalid", failure)

A failure is a dict of `workbench.events.RewardFailure`'s fields, so that the worker imports nothing of the
workbench but the reward library (the sandbox shows it no more). A call runs one reward function on the batch
(or on the completions at `indices`); "failed" means it raised or ran out of time or memory, "invalid" that it
returned something that is not one finite number (or None) per completion. Its address space is capped at
MEMORY_MB (a memory bomb raises MemoryError); where the sandbox gives it a user of its own and no cgroup
counts its processes, RLIMIT_NPROC caps them at PROCESSES (0: not set). SIGALRM interrupts a call after
`time_limit` seconds with a traceback that shows where it was; code that blocks the signal is killed by
the parent instead, which also bounds the memory and number of the worker's processes together and ends
whatever a request left running.
The worker's stdout and stderr are a file the parent gave it: the worker empties it before each call, so
what is in it after the call is what the call printed, and the parent can still read it if the call kills
the process. The worker imports the standard library and the lazy `workbench` package only: no torch.
"""

from __future__ import annotations

import inspect
import json
import linecache
import math
import numbers
import os
import resource
import signal
import sys
import traceback
import types
from multiprocessing.connection import Connection
from pathlib import Path

# What the trainer passes every reward function besides the dataset columns (TRL passes the same).
PASSED = ("completions", "prompts", "completion_ids", "trainer_state")
OUTPUT_LIMIT = 20_000  # characters of printed output kept per call
FILE_LIMIT = 64 << 20  # bytes any file may grow to: a print in an endless loop fails instead of filling the disk
LOAD_TIME_LIMIT = 30.0  # seconds to run the source's top level: imports such as sympy take a while


class TimeLimit(BaseException):  # not an Exception: a reward's `except Exception` must not swallow it
    """The reward call ran past its time limit."""


class Worker:
    def __init__(self):
        self.pid = os.getpid()  # a process the reward code forked is not the worker (see `_guarded`)
        self.filename = "reward.py"
        self.functions: dict[str, object] = {}
        self.batch: tuple[list, list, dict] = ([], [], {})

    def load(self, source: str, filename: str, columns: list[str], folder: str | None):
        """Run the source as a module and collect its reward functions, checking their signatures."""
        self.filename, self.functions = filename, {}
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)  # tracebacks show it
        if folder and folder not in sys.path:
            sys.path.insert(0, folder)  # a reward file may import modules beside it, in its task's folder
        try:
            code = compile(source, filename, "exec")
        except SyntaxError as error:
            return "failed", reward_failure(None, f"syntax error: {error.msg}", f"{filename}, line {error.lineno}")
        module = types.ModuleType(Path(filename).stem)
        module.__file__ = filename
        _, failure = self._guarded(None, lambda: exec(code, module.__dict__), LOAD_TIME_LIMIT)
        if failure:
            return "failed", failure
        functions = {name: value for name, value in vars(module).items() if _is_reward(name, value)}
        if not functions:
            problem = "no reward function found: define `def name(completions, prompts=None, **kwargs) -> list[float]`"
            return "failed", reward_failure(None, problem, filename)
        for name, function in functions.items():
            problem = _signature_problem(function, columns)
            if problem:
                return "failed", reward_failure(name, problem, self._location(function))
        self.functions = functions
        return "loaded", [(name, _first_line(f)) for name, f in functions.items()]

    def call(self, name: str, indices: list[int] | None, time_limit: float):
        prompts, completions, kwargs = self.batch
        if indices is not None:
            prompts = [prompts[i] for i in indices]
            completions = [completions[i] for i in indices]
            kwargs = {key: [values[i] for i in indices] if isinstance(values, list) else values
                      for key, values in kwargs.items()}  # fmt: skip
        function = self.functions[name]
        result, failure = self._guarded(
            name, lambda: function(completions=completions, prompts=prompts, **kwargs), time_limit
        )
        if failure:
            return "failed", failure
        values, problem, index = _checked(result, len(completions))
        output = _printed()
        if problem:
            return "invalid", reward_failure(
                name,
                problem,
                self._location(function),
                completion_index=index,
                completion=None if index is None else _text(completions[index]),
                prompt=None if index is None else prompts[index],
                output=output,
            )
        return "scored", values, output

    def _guarded(self, name: str | None, thunk, time_limit: float):
        """(result, None), or (None, failure) if the call raised, ran too long or ran out of memory."""
        os.ftruncate(1, 0)
        os.lseek(1, 0, os.SEEK_SET)
        signal.setitimer(signal.ITIMER_REAL, time_limit)
        try:
            return self._in_worker(thunk), None
        except TimeLimit as error:
            problem = f"ran longer than its time limit of {time_limit:g} s (reward_time_limit)"
            return None, self._failure(name, problem, error)
        except MemoryError as error:
            problem = "ran out of memory: the reward worker's limit is reward_memory_mb"
            return None, self._failure(name, problem, error)
        except SystemExit as error:
            return None, self._failure(name, f"called sys.exit({error.code!r})", error)
        except BaseException as error:
            return None, self._failure(name, f"raised {type(error).__name__}: {error}", error)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _in_worker(self, thunk):
        """The thunk's result; a process the reward code forked ends here instead of going on as a second worker
        (answering requests on the worker's socket)."""
        try:
            return thunk()
        finally:
            if os.getpid() != self.pid:
                os._exit(0)

    def _failure(self, name: str | None, problem: str, error: BaseException) -> dict:
        frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename != __file__]  # user's only
        lines = [f.lineno for f in frames if f.filename == self.filename]
        location = f"{self.filename}, line {lines[-1]}" if lines else self.filename
        text = "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames))
        if not isinstance(error, TimeLimit):  # for a time limit, the line it was interrupted on says it all
            text += "".join(traceback.format_exception_only(type(error), error))
        return reward_failure(name, problem, location, traceback=text, output=_printed())

    def _location(self, function) -> str:
        return f"{self.filename}, line {_first_line(function)}"


def reward_failure(function: str | None, problem: str, location: str = "", **fields) -> dict:
    """The fields of a `workbench.events.RewardFailure`, which the parent builds from them."""
    return dict(function=function, problem=problem, location=location, **fields)


def _is_reward(name: str, value) -> bool:
    """A public top-level function or callable object with a `completions` or `completion_ids` parameter."""
    if name.startswith("_") or not callable(value) or inspect.isclass(value):
        return False
    try:
        parameters = inspect.signature(value).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return "completions" in parameters or "completion_ids" in parameters


def _signature_problem(function, columns: list[str]) -> str | None:
    """Why the trainer's keyword call would fail, or None. It passes PASSED and every dataset column."""
    parameters = inspect.signature(function).parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in parameters):
        return (
            "its signature has no **kwargs: TRL passes prompts, completion_ids, trainer_state and every dataset "
            "column as keywords, so add **kwargs (a helper that is not a reward: start its name with _)"
        )
    for p in parameters:
        if p.kind is p.POSITIONAL_ONLY:
            return f"parameter {p.name!r} is positional-only, but rewards are called with keywords"
        required = p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        if required and p.name not in PASSED and p.name not in columns:
            return (
                f"it needs {p.name!r}, which is not a column of the prompts "
                f"(columns: {', '.join(columns) or 'none besides prompt'})"
            )
    return None


def _checked(result, count: int) -> tuple[list[float | None] | None, str | None, int | None]:
    """(values, None, None) or (None, problem, index of the offending completion or None)."""
    if hasattr(result, "tolist"):  # numpy arrays and tensors
        result = result.tolist()
    if not isinstance(result, (list, tuple)):
        return None, f"returned {type(result).__name__}, not a list of numbers", None
    if len(result) != count:
        return None, f"returned {_values(len(result))} for {count} completions (one per completion, None to skip)", None
    values = []
    for index, value in enumerate(result):
        if value is None:
            values.append(None)
        elif isinstance(value, numbers.Real) and math.isfinite(value):
            values.append(float(value))
        else:
            return None, f"returned {value!r}: not a finite number (return None to leave a completion unscored)", index
    return values, None, None


def _values(n: int) -> str:
    return f"{n} value" if n == 1 else f"{n} values"


def _text(completion) -> str:
    """A completion's text, whether a string or TRL's message form."""
    return completion if isinstance(completion, str) else completion[0]["content"]


def _printed() -> str:
    sys.stdout.flush()
    sys.stderr.flush()
    size = os.fstat(1).st_size
    text = os.pread(1, min(size, OUTPUT_LIMIT * 4), 0).decode("utf-8", errors="replace")
    if len(text) > OUTPUT_LIMIT or size > OUTPUT_LIMIT * 4:
        text = text[:OUTPUT_LIMIT] + f"\n[... {size - OUTPUT_LIMIT} more characters]"
    return text


def _first_line(function) -> int:
    code = getattr(function, "__code__", None) or getattr(type(function).__call__, "__code__", None)
    return code.co_firstlineno if code else 0


def _alarm(signum, frame):
    raise TimeLimit


def _reap() -> None:
    """Collect the exit status of children the parent ended after the last request, so none stays a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> None:
    fd, memory_mb, processes = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    if memory_mb:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    if processes:  # the sandbox's user's processes and threads: in a user namespace of its own, only the sandbox's
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, a write raises OSError instead
    signal.signal(signal.SIGALRM, _alarm)
    connection, worker = Connection(fd), Worker()
    _send(connection, ("ready",))
    while True:
        _reap()
        try:
            kind, *arguments = connection.recv()
        except EOFError:  # the trainer closed its end, or died
            return
        if kind == "load":
            _send(connection, worker.load(*arguments))
        elif kind == "batch":
            worker.batch = tuple(arguments)
            _send(connection, ("ok",))
        elif kind == "call":
            _send(connection, worker.call(*arguments))


def _send(connection: Connection, reply: tuple) -> None:
    """A reply as JSON: the trainer never unpickles what reward code could have written."""
    connection.send_bytes(json.dumps(reply, default=repr).encode())


if __name__ == "__main__":
    main()
