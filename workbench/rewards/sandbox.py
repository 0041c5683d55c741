"""The reward sandbox: what reward code sees, and how its processes are bounded and ended.

Reward code is untrusted (DESIGN.md, Process model). On Linux with bubblewrap (`bwrap`) installed, the reward
worker starts in a sandbox of its own (`Confinement.start`):

1. It sees, read-only, the system's programs and libraries (/usr, /bin, /lib*), the /etc files the dynamic
   linker reads, the Python runtime and the environment's site-packages, the reward library (`REWARD_VIEW`,
   nothing else of the workbench package) and its task's folder. Nothing else on disk: not the store, the
   workspace, other users' folders, home directories.
2. It writes only to /tmp, a tmpfs of `SCRATCH_MB` of its own that goes with it.
3. Its namespaces are its own (`--unshare-all`): a network with nothing but an empty loopback, its own
   processes, IPC and host name. It runs as nobody with no capabilities, in a session of its own, and may
   not make user namespaces of its own.
4. Its environment is `ENVIRONMENT`, and under torchrun the process's rank (`RANK_VARIABLES`): none of the
   server's other variables (its password) reach it.
5. It dies with the process that started it, and killing it kills every process in it (its pid namespace).

Its processes are bounded together, not one by one (a limit on one process does not hold across a fork): a
control group per worker caps their memory (`reward_memory_mb`) and their number (`PROCESS_LIMIT`) where this
process may make one (cgroup v2, or v1's memory and pids hierarchies). Elsewhere the parent adds up the tree's
memory (proportional set sizes: pages a fork shares count once) and counts its processes every `WATCH`
seconds of a request, and kills it past either limit; in a sandbox, RLIMIT_NPROC also caps its processes
(`workbench.rewards.process_tree` holds the cgroups and the watch).
After each request the parent ends whatever the request left running (a double-forked daemon, a fork bomb's
survivors), so only the worker and the sandbox's own process remain between requests.

Without bubblewrap (macOS, or Linux without the package) the worker is a plain process of the server's user:
it keeps its time and memory limits and the tree's bounds, but it reads what the server can read, reaches
the network and inherits the server's environment. `sandbox_status()` says which holds here, in one line.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

from workbench.rewards.process_tree import (
    PROC,
    PROCESS_LIMIT,
    cgroup_support,
    descendants,
    in_session,
    kill_until_gone,
    living,
    new_cgroup,
    tree_memory_mb,
)

SCRATCH_MB = 256  # the sandbox's /tmp; its files count against the memory limit too
WATCH = 0.05  # seconds between the parent's looks at a request's processes
PACKAGE = Path(__file__).resolve().parents[1]  # the workbench package
REWARD_VIEW = ("__init__.py", "rewards/__init__.py", "rewards/library.py", "rewards/worker.py")
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives")
NOBODY = "65534"
ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "USER": "nobody",  # getpass.getuser(): the sandbox has no /etc/passwd
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONPATH": str(PACKAGE.parent),
    "PYTHONDONTWRITEBYTECODE": "1",  # the view is read-only
    # One thread per numeric library: threads count against PROCESS_LIMIT, and a reward is small work.
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
# Which process of a torchrun/accelerate launch this is: reward code may split work by rank, as under TRL
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")
MEMORY_PROBLEM = "its processes together went past the memory limit of {} MiB (reward_memory_mb), so they were killed"
PROCESS_PROBLEM = f"it started more than {PROCESS_LIMIT} processes, the reward sandbox's limit, so they were killed"
# Puts the shell in the cgroups named before `--`, then becomes the command after it: every process the
# command forks is born inside them.
JOIN = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


def sandbox_status() -> str:
    """How reward code is confined on this machine, in one line for the app and the CLI."""
    bwrap, why = bubblewrap()
    version, cgroup_why = cgroup_support()
    if version:
        bounds = f"its processes' memory and number are capped together by a cgroup (v{version})"
    else:
        bounds = f"its processes' memory and number are watched together by the parent ({cgroup_why})"
    if bwrap:
        return (
            "reward code runs sandboxed by bubblewrap: no network, none of the server's environment, only Python, "
            f"its libraries and the task's folder visible (read-only), a scratch /tmp; {bounds}"
        )
    return (
        f"reward code is NOT sandboxed ({why}): it runs in a separate process with time and memory limits "
        f"and {bounds}, but it can read what the server's user can, use the network and read the server's "
        "environment"
    )


@functools.cache
def bubblewrap() -> tuple[str | None, str]:
    """(bwrap's path, "") where a sandbox starts here, else (None, why not). Tried once per process."""
    if sys.platform != "linux":
        return None, "bubblewrap needs Linux"
    path = shutil.which("bwrap")
    if path is None:
        return None, "bubblewrap is not installed: apt-get install bubblewrap"
    probe = [path, *_isolation(), *_runtime()[0], sys.executable, "-S", "-c", ""]
    try:
        result = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"bubblewrap is installed but did not start: {error}"
    if result.returncode:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        return None, f"bubblewrap is installed but cannot make a sandbox here: {last}"
    return path, ""


class Confinement:
    """How one reward worker is started and bounded: its sandbox and cgroup, the watch on its processes,
    and how they end."""

    def __init__(self, memory_mb: int, folder: str | None, sandboxed: bool = True):
        self.memory_mb, self.folder = memory_mb, folder
        self.bwrap = bubblewrap()[0] if sandboxed else None
        self.cgroup = new_cgroup(memory_mb) if cgroup_support()[0] else None
        self.process: subprocess.Popen | None = None
        self.keep: set[int] = set()  # the worker and the sandbox's own processes: never ended between requests
        # Without a cgroup, a sandbox's user namespace of its own makes RLIMIT_NPROC count its processes only
        # (Linux 5.14); outside one it would count every process of the server's user.
        self.process_rlimit = PROCESS_LIMIT if self.bwrap and not self.cgroup else 0
        self.oom_kills = self.forks_refused = 0

    def start(self, argv: list[str], env: dict[str, str], **popen) -> subprocess.Popen:
        """Start `argv` (a Python command) confined; `env` is its environment where there is no sandbox."""
        if self.bwrap:
            argv = [self.bwrap, *_isolation(), *_runtime()[0], *self._view(), "--", *argv]
            # Not the server's: the sandbox's pid 1 is a copy of bwrap, whose /proc/1/environ reward code can read.
            env = {"PATH": ENVIRONMENT["PATH"]}
        if self.cgroup:
            argv = ["/bin/sh", "-c", JOIN, "sh", *map(str, self.cgroup.procs_files()), "--", *argv]
        # A session of its own: Ctrl-C in a terminal stops the trainer, not a reward call, and the tree is one group.
        self.process = subprocess.Popen(argv, env=env, start_new_session=True, **popen)
        return self.process

    def started(self) -> None:
        """The worker said it is ready, before any reward code ran: what runs now is the sandbox and the worker."""
        self.keep = set(self._processes())

    def breach(self) -> str | None:
        """Why the processes must be killed now (memory or number past the limit), or None. Cheap: polled."""
        if self.cgroup:
            kills = self.cgroup.oom_kills()
            if kills > self.oom_kills:
                self.oom_kills = kills
                return MEMORY_PROBLEM.format(self.memory_mb)
            return None
        tree = descendants(self.process.pid)
        if self.memory_mb and tree_memory_mb(tree) > self.memory_mb:
            return MEMORY_PROBLEM.format(self.memory_mb)
        if len(tree) - len(self.keep) > PROCESS_LIMIT:
            return PROCESS_PROBLEM
        return None

    def refused_forks(self) -> bool:
        """Whether the process limit refused a fork since the last time this was asked."""
        if not self.cgroup:
            return False
        refused = self.cgroup.forks_refused()
        seen, self.forks_refused = self.forks_refused, refused
        return refused > seen

    def end_leftovers(self) -> None:
        """Kill every process a request left running, but the worker and the sandbox's own."""
        kill_until_gone(lambda: living(set(self._processes()) - self.keep))

    def kill(self) -> None:
        """Kill every process of the tree, the worker included."""
        if self.process is None:
            return
        pids = set(self._processes())
        if not self.bwrap and PROC:
            pids |= set(in_session(self.process.pid))  # orphans of a plain worker's tree that stayed in its session
        if self.process.poll() is None:
            self.process.kill()  # with bubblewrap: its pid namespace, so everything in it
        if not self.bwrap:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # a plain worker leads its process group
            except (ProcessLookupError, PermissionError):
                pass
        kill_until_gone(lambda: living(pids | set(self.cgroup.pids() if self.cgroup else [])) - {self.process.pid})

    def close(self) -> None:
        self.kill()
        if self.cgroup:
            self.cgroup.remove()

    def _processes(self) -> list[int]:
        return self.cgroup.pids() if self.cgroup else descendants(self.process.pid)

    def _view(self) -> list[str]:
        """bwrap's arguments for what the sandbox sees beyond the runtime: the reward library, the task's folder."""
        folder = self.folder
        arguments = ["--ro-bind", folder, folder] if folder else []
        shown = _runtime()[1] + ([Path(folder)] if folder else [])
        if any(PACKAGE.is_relative_to(path) for path in shown):  # installed in site-packages: hide the rest of it
            arguments += ["--tmpfs", str(PACKAGE)]
        for name in REWARD_VIEW:
            arguments += ["--ro-bind", str(PACKAGE / name), str(PACKAGE / name)]
        if folder and Path(folder).is_relative_to(PACKAGE):  # a sample task inside an installed package
            arguments += ["--ro-bind", folder, folder]
        return [*arguments, "--remount-ro", "/", "--chdir", folder or "/tmp"]


def _isolation() -> list[str]:
    """bwrap's arguments for namespaces, identity, environment and the fresh /proc, /dev and /tmp."""
    arguments = [
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--uid",
        NOBODY,
        "--gid",
        NOBODY,
        "--cap-drop",
        "ALL",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
    ]
    ranks = {name: os.environ[name] for name in RANK_VARIABLES if name in os.environ}
    for name, value in {**ENVIRONMENT, **ranks}.items():
        arguments += ["--setenv", name, value]
    return [*arguments, "--proc", "/proc", "--dev", "/dev", "--size", str(SCRATCH_MB << 20), "--tmpfs", "/tmp"]


@functools.cache
def _runtime() -> tuple[list[str], list[Path]]:
    """bwrap's read-only binds of the system and the Python runtime, and the folders they show."""
    arguments, shown = [], []
    for path in SYSTEM:
        if os.path.islink(path):
            arguments += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            arguments += ["--ro-bind", path, path]
            shown.append(Path(path))
    for path in ETC:
        arguments += ["--ro-bind-try", path, path]
    paths = sysconfig.get_paths()
    python = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix, os.path.dirname(sys.executable)}
    python |= {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    python |= {os.path.realpath(path) for path in python}
    for path in sorted(map(Path, python), key=lambda p: len(p.parts)):  # a folder before those inside it
        if path.is_dir() and not any(path.is_relative_to(other) for other in shown):
            arguments += ["--ro-bind", str(path), str(path)]
            shown.append(path)
    return arguments, shown
