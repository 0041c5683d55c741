"""The thread policy: a run's torch threads are the cores it gets, worked out by hand and seen on a busy machine."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from workbench import Config, Store, load_task, train
from workbench.engine import threads
from workbench.engine.threads import CpuTime, ThreadPolicy, choose, others_busy
from workbench.events import RunStarted


@pytest.mark.parametrize(
    "cores, runs, busy, expected",
    [
        (2, 1, None, 2),  # nothing known of other processes: all of its share
        (2, 1, 0.0, 2),
        (2, 1, 0.3, 2),  # a browser's flicker holds no core
        (2, 1, 0.6, 1),  # from half a core on, another process holds it
        (2, 1, 1.0, 1),
        (2, 1, 2.0, 1),  # at least one thread, however busy
        (2, 2, 0.0, 1),  # two runs at once: a core each
        (8, 2, 1.2, 4),  # its share, with cores to spare
        (8, 1, 5.4, 3),
        (3, 2, 0.0, 1),
    ],
)
def test_threads_are_the_share_less_what_others_hold(cores, runs, busy, expected):
    assert choose(0, busy, cores=cores, runs=runs).threads == expected


def test_a_fixed_number_and_the_reason():
    assert choose(3, 1.0, cores=2).threads == 3
    assert choose(3, 1.0, cores=2).reason == "3 threads (set by threads)"
    assert choose(0, 1.0, cores=2).reason == "1 thread (2 cores, other processes keep 1.0 busy)"
    assert choose(0, 0.0, cores=4, runs=2).reason == "2 threads (4 cores, 2 runs at once)"


def test_the_runs_at_once_come_from_the_environment(monkeypatch):
    monkeypatch.setenv(threads.RUNS_AT_ONCE, "2")
    assert choose(0, 0.0, cores=4).threads == 2


def test_others_busy_is_the_machine_less_this_process():
    since = CpuTime(machine=100.0, own=10.0, at=50.0)
    now = CpuTime(machine=103.0, own=11.0, at=52.0)  # 3 CPU s in 2 s on the machine, 1 of them this process's
    assert others_busy(since, now) == pytest.approx(1.0)
    assert others_busy(CpuTime(None, 0.0, 0.0), CpuTime(None, 1.0, 1.0)) is None  # no /proc/stat


@pytest.mark.skipif(not os.path.exists("/proc/stat") or threads.usable_cores() < 2, reason="needs /proc/stat, 2 cores")
def test_a_busy_process_takes_a_thread_away():
    policy = ThreadPolicy(0)
    # another process's, not a child of this one (a run counts its children, the reward worker, as its own)
    spin = f"{sys.executable} -c 'while True: pass' >/dev/null 2>&1 & echo $!"
    spinner = int(subprocess.run(["sh", "-c", spin], capture_output=True, text=True, check=True).stdout)
    try:
        time.sleep(1.0)
        choice = policy.decide()
    finally:
        os.kill(spinner, signal.SIGKILL)
    assert choice.threads <= threads.usable_cores() - 1, choice
    assert "other processes keep" in choice.reason


def test_a_run_says_its_threads_and_stores_them_per_step(tmp_path):
    config = Config(steps=2, group_size=2, prompts_per_step=2, max_new_tokens=4, threads=1)
    events = list(train(config, load_task("arithmetic"), tmp_path))
    (started,) = [e for e in events if isinstance(e, RunStarted)]
    assert started.threads == "1 thread (set by threads)"
    assert Store(tmp_path).query("SELECT threads FROM steps ORDER BY step").threads.tolist() == [1, 1]


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs /proc")
def test_counting_children_survives_threads_that_end_meanwhile():
    """Readers and DuckDB start and end threads while a run counts its children's CPU time."""
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            worker = threading.Thread(target=time.sleep, args=(0.0005,))
            worker.start()
            worker.join()

    churners = [threading.Thread(target=churn) for _ in range(4)]
    for churner in churners:
        churner.start()
    try:
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        for _ in range(800):
            threads.cpu_time()  # raised FileNotFoundError on a thread gone between the listing and the read
    finally:
        stop.set()
        for churner in churners:
            churner.join()
        sleeper.kill()
        sleeper.wait()
