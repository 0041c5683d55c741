"""Training and sampling for the app in processes of their own, forked from a server that loaded the engine once.

A run in a thread of the app shares the app's GIL with every page it serves: 20 clients polling the app cut
such a run from 7.1 to 1.3 steps/s. In a process of its own the run computes on its own threads (as many as
workbench.engine.threads gives it) while the app's threads serve. Workers fork from multiprocessing's fork
server, which imports the engine once (`warm_up` starts it as the app starts), so a worker is training within
a fraction of a second instead of importing torch and transformers again.

A worker dies with the app: killed (SIGKILL, out of memory) or not, the app's end ends its workers, and a
run left 'running' in the store is marked interrupted when the store is next opened (resumable from its
last checkpoint).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor

METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
CONTEXT = multiprocessing.get_context(METHOD)
PRELOAD = ["workbench.engine.trainer", "workbench.engine.dryrun"]  # what every worker needs, imported once
if METHOD == "forkserver":
    CONTEXT.set_forkserver_preload(PRELOAD)


CALLS = threading.BoundedSemaphore(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def warm_up() -> None:
    """Start the fork server in the background (it imports the engine: seconds), so that a Start does not wait;
    once per process."""
    global _warming
    if _warming is None:
        _warming = threading.Thread(target=_start_one, daemon=True)
        _warming.start()


_warming: threading.Thread | None = None


def _start_one() -> None:
    process = CONTEXT.Process(target=die_with_parent)
    process.start()
    process.join()


def die_with_parent() -> None:
    """Linux: this process gets SIGTERM when its parent (the fork server, which ends with the app) ends."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def call(function, *arguments):
    """function(*arguments) in a worker process: its result, or its exception raised here. At most one such call
    per core at once, whoever asks (a class of students dry-running at the same time waits in turn here, rather
    than loading a model each at once)."""
    with CALLS, ProcessPoolExecutor(1, mp_context=CONTEXT, initializer=die_with_parent) as pool:
        return pool.submit(function, *arguments).result()
