"""How many threads a run's torch ops use: the cores the run gets, not the cores the machine has.

torch's intra-op threads meet at a barrier after every op. With one of two cores held by another busy
process, each op then waits for the thread whose core is taken: a tiny-model step took 3-6 s where a
one-thread process took 0.13-0.36 s on the same busy machine, a loss of 10-30x rather than the fair 2x
(docs/figures.md, "Busy machines"). So a run takes

    threads = min(its share of the cores it may use, the cores other processes leave idle)

- the cores it may use: the process's CPU affinity (taskset, a container's cpuset) and its cgroup's CPU
  quota (docker --cpus);
- its share: those cores divided by the runs training at once on this machine (a sweep's `parallel`, the
  app's queue: `WORKBENCH_RUNS_AT_ONCE`);
- the idle cores: the cores minus what other processes used over the last interval (the machine's busy
  time in /proc/stat less this process's own and its children's, the reward worker's), rounded, so that a
  core another process holds is left to it.

The policy decides as the run opens (the interval: loading the model) and again after every step (the
interval: the step), since a video call or another student's run may start mid-run. `threads` in the config
fixes the number instead. Without /proc/stat (macOS) the other load is unknown and counts as none.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

RUNS_AT_ONCE = "WORKBENCH_RUNS_AT_ONCE"  # set by what starts several runs at once: each takes its share
HELD = 0.5  # another process's use of a core counts as holding it from half a core on


@dataclass(frozen=True)
class Choice:
    threads: int
    reason: str  # why, in a line a user reads at the start of a run


@dataclass(frozen=True)
class CpuTime:
    """CPU seconds used so far by every process on the machine, and by this one, at a moment."""

    machine: float | None  # None where /proc/stat is not there
    own: float
    at: float  # time.monotonic()


def cpu_time() -> CpuTime:
    times = os.times()
    return CpuTime(_machine_busy_seconds(), times.user + times.system + _children_seconds(), time.monotonic())


def _children_seconds() -> float:
    """CPU seconds used by this process's live children (the reward worker scores while the run waits)."""
    total = 0
    for pid in _children():
        try:  # utime, stime: fields 14, 15 of /proc/PID/stat, after the ")" that ends the command's name
            total += sum(map(int, Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]))
        except (OSError, IndexError, ValueError):
            pass  # it ended meanwhile
    return total / os.sysconf("SC_CLK_TCK") if total else 0.0


def _children() -> list[str]:
    """The pids of this process's live children, from each of its threads' /proc listing."""
    pids = []
    for listing in Path("/proc/self/task").glob("*/children") if Path("/proc/self/task").exists() else ():
        try:
            pids += listing.read_text().split()
        except OSError:
            pass  # the thread ended between the glob and the read (a reader's, a DuckDB worker's)
    return pids


def _machine_busy_seconds() -> float | None:
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def others_busy(since: CpuTime, now: CpuTime) -> float | None:
    """Cores other processes kept busy between two moments, on average."""
    if since.machine is None or now.machine is None or now.at - since.at < 0.05:
        return None
    return max(0.0, (now.machine - since.machine) - (now.own - since.own)) / (now.at - since.at)


def usable_cores() -> int:
    """The cores this process may run on: its affinity, bounded by its cgroup's CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def choose(fixed: int, busy: float | None, cores: int | None = None, runs: int | None = None) -> Choice:
    """The threads of a run: `fixed` when the config sets them, else its share of the cores less those that
    others hold (`busy` cores used by other processes, None when unknown)."""
    if fixed:
        return Choice(fixed, f"{fixed} thread{'s' * (fixed > 1)} (set by threads)")
    cores = cores or usable_cores()
    runs = runs or int(os.environ.get(RUNS_AT_ONCE, "1") or 1)
    share = max(1, cores // runs)
    held = 0 if busy is None else int(busy + 1 - HELD)
    free = max(1, cores - held)
    threads = min(share, free)
    why = [f"{cores} core{'s' * (cores > 1)}"]
    if runs > 1:
        why.append(f"{runs} runs at once")
    if busy is not None and held:
        why.append(f"other processes keep {busy:.1f} busy")
    return Choice(threads, f"{threads} thread{'s' * (threads > 1)} ({', '.join(why)})")


class ThreadPolicy:
    """The run's threads, decided as it opens and after each step from what other processes used meanwhile."""

    def __init__(self, fixed: int):
        self.fixed = fixed
        self.since = cpu_time()
        self.choice: Choice | None = None

    def decide(self) -> Choice:
        """Choose from the interval since the last decision, set torch's threads, and start the next interval."""
        import torch  # here: what only reads the policy (a sweep, the app's queue) need not load torch

        now = cpu_time()
        self.choice = choose(self.fixed, others_busy(self.since, now))
        torch.set_num_threads(self.choice.threads)  # this thread's intra-op pool: the run's own
        self.since = now
        return self.choice
