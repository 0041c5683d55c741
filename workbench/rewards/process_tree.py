"""Bounding and ending a process tree: a cgroup per tree where this process may make one, /proc elsewhere.

`workbench.rewards.sandbox` bounds a reward worker's processes together with these: a `Cgroup` caps their memory
and number (cgroup v2, or v1's memory and pids hierarchies) and lists them wherever they went (a double fork
does not leave a cgroup); without one, `descendants` finds a process's tree and `tree_memory_mb` adds up its
memory. `kill_until_gone` ends a set of processes that may still be forking.
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import sys
import time
from pathlib import Path

PROCESS_LIMIT = 64  # processes and threads of one worker's tree: a small pool fits, a fork bomb does not
PROC = os.path.isdir("/proc/self/task")  # Linux's view of processes; elsewhere a tree is its root alone


def new_cgroup(memory_mb: int) -> Cgroup | None:
    """A cgroup for a new tree, or None (the hierarchy changed since `cgroup_support` tried it)."""
    try:
        return Cgroup.make(memory_mb)
    except OSError:
        return None


@functools.cache
def cgroup_support() -> tuple[int | None, str]:
    """(cgroup version, "") where this process can make a cgroup per worker, else (None, why not)."""
    try:
        Cgroup.make(64).remove()
    except OSError as error:
        return None, f"no cgroup can be made here: {error}"
    Cgroup.remove_stale()
    return _cgroup_parents()[0], ""


class Cgroup:
    """A control group of one worker's processes (a folder in each v1 hierarchy): their memory and number."""

    _names = itertools.count()

    def __init__(self, version: int, memory: Path, pids: Path):
        self.version, self.memory, self.pids_folder = version, memory, pids

    @classmethod
    def make(cls, memory_mb: int) -> Cgroup:
        """A new cgroup with these limits; OSError where none can be made."""
        version, parents = _cgroup_parents()
        name = f"workbench-reward-{os.getpid()}-{next(cls._names)}"
        cgroup = cls(version, parents["memory"] / name, parents["pids"] / name)
        try:
            for folder in cgroup.folders():
                folder.mkdir()
            if version == 2:
                if memory_mb:
                    _write(cgroup.memory / "memory.max", memory_mb << 20)
                    _write(cgroup.memory / "memory.swap.max", 0, missing_ok=True)
                    _write(cgroup.memory / "memory.oom.group", 1, missing_ok=True)  # an OOM kills them all
            elif memory_mb:
                _write(cgroup.memory / "memory.limit_in_bytes", memory_mb << 20)
                _write(cgroup.memory / "memory.memsw.limit_in_bytes", memory_mb << 20, missing_ok=True)
            _write(cgroup.pids_folder / "pids.max", PROCESS_LIMIT)
        except OSError:
            cgroup.remove()
            raise
        return cgroup

    def folders(self) -> list[Path]:
        return list(dict.fromkeys([self.memory, self.pids_folder]))

    def procs_files(self) -> list[Path]:
        return [folder / "cgroup.procs" for folder in self.folders()]

    def pids(self) -> list[int]:
        try:
            return [int(pid) for pid in (self.memory / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return []

    def oom_kills(self) -> int:
        events = self.memory / ("memory.events" if self.version == 2 else "memory.oom_control")
        return _counter(events, "oom_kill")

    def forks_refused(self) -> int:
        return _counter(self.pids_folder / "pids.events", "max")

    @classmethod
    def remove_stale(cls) -> None:
        """Remove the cgroups of workers whose app was killed before it could (their processes died with it)."""
        for parent in {*_cgroup_parents()[1].values()}:
            for folder in parent.glob("workbench-reward-*"):
                app = folder.name.split("-")[2]
                if app.isdigit() and int(app) != os.getpid() and not living({int(app)}):
                    try:
                        cls(_cgroup_parents()[0], folder, folder).remove()
                    except OSError:
                        pass

    def remove(self) -> None:
        kill_until_gone(lambda: living(set(self.pids())))
        deadline = time.monotonic() + 5
        for folder in self.folders():
            while True:
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while its last processes exit
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)


@functools.cache
def _cgroup_parents() -> tuple[int, dict[str, Path]]:
    """The cgroup version and the folders (of this process's cgroups) that new memory and pids cgroups go in."""
    if sys.platform != "linux":
        raise OSError("cgroups are Linux's")
    mounts = []  # (type, root, mount point, options)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, (kind, _, options) = left.split(), right.split()[:3]
        if kind in ("cgroup", "cgroup2"):
            mounts.append((kind, fields[3], Path(fields[4]), set(options.split(","))))
    own = {}  # controller ('' for v2) -> this process's cgroup path
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    for kind, root, mount, _ in mounts:
        if kind == "cgroup2" and "" in own:
            folder = mount / _relative(own[""], root)
            if {"memory", "pids"} <= set((folder / "cgroup.controllers").read_text().split()):
                enabled = set((folder / "cgroup.subtree_control").read_text().split())
                if not {"memory", "pids"} <= enabled:
                    _write(folder / "cgroup.subtree_control", "+memory +pids")  # EBUSY where it holds processes
                return 2, {"memory": folder, "pids": folder}
    parents = {}
    for kind, root, mount, options in mounts:
        for controller in ("memory", "pids"):
            if kind == "cgroup" and controller in options and controller in own:
                parents[controller] = mount / _relative(own[controller], root)
    if len(parents) < 2:
        raise OSError("no cgroup hierarchy with the memory and pids controllers is mounted")
    return 1, parents


def _relative(path: str, root: str) -> str:
    if root != "/" and not (path + "/").startswith(root.rstrip("/") + "/"):
        raise OSError(f"this process's cgroup {path} lies outside the mounted part {root}")
    return path[len(root.rstrip("/")) :].lstrip("/")


def _write(path: Path, value, missing_ok: bool = False) -> None:
    try:
        path.write_text(str(value))
    except FileNotFoundError:
        if not missing_ok:
            raise


def _counter(path: Path, name: str) -> int:
    """A named counter of a cgroup events file ('oom_kill 2')."""
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    except FileNotFoundError:
        pass
    return 0


def descendants(root: int) -> list[int]:
    """The process and its descendants, from /proc (itself only where there is no /proc)."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    todo.extend(int(child) for child in children.read().split())
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            continue
    return found


def in_session(leader: int) -> list[int]:
    """The processes of a session (an unsandboxed worker's orphans are in it unless they left it)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rindex(b")") + 2 :].split()[3]) == leader:
                found.append(int(name))
    return found


def tree_memory_mb(pids: list[int]) -> float:
    """The processes' memory together: each one's proportional set size, so that pages a fork shares count once."""
    kb = 0
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        kb += sum(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
    return kb / 1024


def living(pids: set[int]) -> set[int]:
    """Those of the processes that still run: not gone, not zombies (which wait for their parent to reap them)."""
    living = set()
    for pid in pids:
        if not PROC:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            living.add(pid)
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            continue
        if stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] not in (b"Z", b"X"):
            living.add(pid)
    return living


def kill_until_gone(victims) -> None:
    """SIGKILL `victims()` until it is empty (a fork bomb forks while it is being killed), for at most 2 s."""
    deadline = time.monotonic() + 2
    while (pids := victims()) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.001)
