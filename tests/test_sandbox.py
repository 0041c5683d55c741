"""Hostile reward code, tried on purpose: what the reward sandbox keeps from it, and how its processes are bounded.

Each reward here does what a student's (or an attacker's) reward could do on a shared server, and the test
checks from outside that it did not work: the secret is not in what it printed, the store did not change,
the listening socket got no connection, the process it left behind is gone.
"""

import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from workbench.config import Config
from workbench.rewards import process_tree, sandbox
from workbench.rewards.sandbox import PROCESS_LIMIT, sandbox_status
from workbench.rewards.scoring import RewardFunctionError, RewardSource, Scorer, validate_rewards
from workbench.store.database import Store

pytestmark = pytest.mark.skipif(
    sandbox.bubblewrap()[0] is None, reason=f"no reward sandbox here: {sandbox.bubblewrap()[1]}"
)
ROW = {"prompt": "1+1=", "answer": "2"}
QUICK = Config(reward_time_limit=2.0, reward_memory_mb=1024)


@pytest.fixture(params=["cgroup", "watchdog"])
def bounds(request, monkeypatch):
    """How the processes are bounded together: by a cgroup, or (as where none can be made) by the parent's watch."""
    if request.param == "cgroup" and sandbox.cgroup_support()[0] is None:
        pytest.skip(f"no cgroup here: {sandbox.cgroup_support()[1]}")
    if request.param == "watchdog":
        monkeypatch.setattr(sandbox, "cgroup_support", lambda: (None, "none, for the test"))
    return request.param


@pytest.fixture
def workspace(tmp_path):
    """A workspace with a store (and its readers' note), an uploaded task, and another user's folder beside it."""
    workspace = tmp_path / "alice"
    store = Store(workspace)
    store.request_file.touch()
    task = workspace / "uploads" / "task-1234"
    task.mkdir(parents=True)
    (task / "helper.py").write_text("ANSWER = 2\n")
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "notes.txt").write_text("bob's secret\n")
    return workspace


def run(body: str, folder: Path | None = None, config: Config = QUICK, columns=("answer",)):
    """What reward `f` with this body printed, or its RewardFailure if it failed."""
    source = RewardSource(f"import os, signal, socket, sys, time\ndef f(completions, **kwargs):\n{body}\n")
    try:
        with Scorer(source, list(columns), config, folder=str(folder) if folder else None) as scorer:
            return scorer.score([ROW], ["2"]).output.get("f", "")
    except RewardFunctionError as error:
        return error.failure


def tries(paths, action: str) -> str:
    """A body that tries `action` (using `path`) on each path and prints what happened."""
    return (
        f"    for path in {[str(p) for p in paths]!r}:\n"
        "        try:\n"
        f"            {action}\n"
        "            print(path, 'DONE')\n"
        "        except OSError as error:\n"
        "            print(path, type(error).__name__)\n"
        "    return [0.0] * len(completions)"
    )


def processes_with(marker: str) -> list[int]:
    """Host processes whose command line holds the marker."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and name != str(os.getpid()):
            try:
                if marker.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                    found.append(int(name))
            except OSError:
                continue
    return found


def test_the_status_line_says_how_reward_code_is_confined(monkeypatch):
    assert sandbox_status().startswith("reward code runs sandboxed by bubblewrap: no network")
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    sandbox.bubblewrap.cache_clear()
    try:
        assert sandbox_status().startswith(
            "reward code is NOT sandboxed (bubblewrap is not installed: apt-get install bubblewrap)"
        )
    finally:
        sandbox.bubblewrap.cache_clear()


def test_the_server_environment_is_not_readable(monkeypatch):
    monkeypatch.setenv("WORKBENCH_PASSWORD", "hunter2-the-password")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-key-of-the-server")
    printed = run(
        "    print(dict(os.environ))\n"
        "    for path in ('/proc/self/environ', '/proc/1/environ', f'/proc/{os.getppid()}/environ'):\n"
        "        print(open(path, 'rb').read())\n"
        "    return [0.0]"
    )
    assert "hunter2" not in printed and "aws-key" not in printed
    names = set(eval(printed.splitlines()[0]))
    assert names <= set(sandbox.ENVIRONMENT) | {"PWD", "LC_CTYPE"}  # PWD from bwrap, LC_CTYPE from Python


def test_the_store_the_workspace_other_users_and_the_package_source_are_not_readable(workspace, tmp_path):
    import workbench.store.database

    task = workspace / "uploads" / "task-1234"
    secrets = [
        workspace / "store.duckdb",
        workspace / "store.duckdb.wanted",
        tmp_path / "bob" / "notes.txt",
        Path(workbench.store.database.__file__),
        Path(sandbox.__file__),
        Path(process_tree.__file__),
        Path.home() / ".bash_history",
        Path("/etc/shadow"),
        Path("/etc/passwd"),
    ]
    body = tries([*secrets, task / "helper.py"], "open(path, 'rb').read()")
    printed = run(body.replace("    return", "    import helper\n    print('helper', helper.ANSWER)\n    return"), task)
    for path in secrets:
        assert f"{path} DONE" not in printed, printed
    assert f"{task / 'helper.py'} DONE" in printed and "helper 2" in printed  # its own folder it sees
    printed = run("    import workbench.store\n    return [0.0]", task)
    assert "No module named 'workbench.store'" in printed.problem


def test_a_reward_file_sees_its_own_folder_and_works_in_it(workspace):
    task = workspace / "uploads" / "task-1234"
    (task / "reward.py").write_text(
        "import helper\n"
        "def f(completions, **kwargs):\n"
        "    return [float(helper.ANSWER) + len(open('helper.py').read())] * len(completions)\n"
    )
    with Scorer(RewardSource.from_file(task / "reward.py"), []) as scorer:
        assert scorer.score([ROW], ["2"]).values == {"f": [2.0 + len("ANSWER = 2\n")]}


def test_the_store_and_the_workspace_cannot_be_written(workspace):
    task = workspace / "uploads" / "task-1234"
    store, note = workspace / "store.duckdb", workspace / "store.duckdb.wanted"
    before = store.read_bytes()
    body = tries(
        [store, note, workspace / "planted.py", task / "helper.py", "/usr/planted"], "open(path, 'ab').write(b'x')"
    )
    printed = run(body.replace("    return", "    open('/tmp/scratch', 'w').write('ok')\n    return"), task)
    # Seen from the host: nothing changed. (Under /tmp, as here, the sandbox's own scratch /tmp holds the folders
    # that lead to the task's, so writing beside them lands in that scratch and goes with it.)
    assert store.read_bytes() == before and note.read_bytes() == b"" and not (workspace / "planted.py").exists()
    assert (task / "helper.py").read_text() == "ANSWER = 2\n"
    assert f"{task / 'helper.py'} OSError" in printed and "/usr/planted OSError" in printed  # read-only
    assert "Traceback" not in printed  # /tmp is the reward's scratch: writing there works


def test_no_network_even_to_a_port_listening_on_this_machine():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        body = (
            "    try:\n"
            f"        socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "        print('CONNECTED')\n"
            "    except OSError as error:\n"
            "        print(type(error).__name__)\n"
            "    return [0.0]"
        )
        printed = run(body)
        assert printed.strip() == "ConnectionRefusedError"
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing reached it


def test_what_reward_code_writes_to_the_trainers_socket_is_never_unpickled(tmp_path):
    planted = tmp_path / "ran-in-the-app"
    body = (
        "    from multiprocessing.connection import Connection\n"
        "    class Payload:\n"
        "        def __reduce__(self):\n"
        f"            return (os.system, ('touch {planted}',))\n"
        "    Connection(int(sys.argv[1])).send(Payload())\n"  # the worker's socket to the app
        "    return [0.0]"
    )
    failure = run(body)
    assert failure.problem.startswith("sent the trainer something that is not a reply")
    assert not planted.exists()
    forged = '    Connection(int(sys.argv[1])).send_bytes(b\'["scored", ["1"], ""]\')\n    return [0.0]'
    failure = run("    from multiprocessing.connection import Connection\n" + forged)
    assert failure.problem.startswith("sent the trainer something that is not a reply")


def test_killing_the_parent_from_validate_leaves_the_app_running():
    source = RewardSource(
        "import os, signal\n"
        "def f(completions, answer, **kwargs):\n"
        "    os.kill(os.getppid(), signal.SIGKILL)\n"  # the sandbox's init: the kernel ignores it
        "    os.kill(int(answer[0]), signal.SIGKILL)\n"  # the app's pid on the host: no such process in here
        "    return [0.0] * len(completions)\n"
    )
    with pytest.raises(RewardFunctionError, match="raised ProcessLookupError"):
        validate_rewards(source, [{"prompt": "x", "answer": str(os.getpid())}], QUICK)
    os.kill(os.getpid(), 0)  # still here


def test_a_double_forked_process_does_not_outlive_the_call():
    marker = f"4242.{uuid.uuid4().int % 10**9}"
    body = (
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        f"            os.execv('/bin/sleep', ['sleep', '{marker}'])\n"
        "        os._exit(0)\n"
        "    os.wait()\n"
        f"    if os.fork() == 0:\n        os.execv('/bin/sleep', ['sleep', '{marker}'])\n"  # a child never waited for
        "    time.sleep(0.3)\n"
        "    return [0.0] * len(completions)"
    )
    source = RewardSource(f"import os, time\ndef f(completions, **kwargs):\n{body}\n")
    with Scorer(source, [], QUICK) as scorer:
        scorer.score([ROW], ["2"])
        assert processes_with(marker) == []  # gone as the call returned, with the worker still running
        assert scorer.score([ROW], ["2"]).values == {"f": [0.0]}
    assert processes_with(marker) == []


def test_memory_is_capped_across_forks(bounds):
    # Six children of 512 MiB each: each is under the per-process limit (RLIMIT_AS), together they are three times it.
    body = (
        "    children = []\n"
        "    for _ in range(6):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            block = b'x' * (512 << 20)\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "        children.append(pid)\n"
        "    for pid in children:\n"
        "        os.waitpid(pid, 0)\n"
        "    return [0.0]"
    )
    started = time.monotonic()
    failure = run(body, config=Config(reward_time_limit=30.0, reward_memory_mb=1024))
    assert failure.problem == (
        "its processes together went past the memory limit of 1024 MiB (reward_memory_mb), so they were killed"
    )
    assert time.monotonic() - started < 20  # killed as it happened, not at the time limit


def test_a_fork_bomb_is_bounded_by_the_process_limit(bounds):
    if bounds == "cgroup":  # forks past the limit fail: the bomb raises, and its processes are ended
        source = RewardSource("import os\ndef f(completions, **kwargs):\n    while True:\n        os.fork()\n")
        with Scorer(source, [], QUICK) as scorer:
            with pytest.raises(RewardFunctionError) as error:
                scorer.score([ROW], ["2"])
            assert error.value.failure.problem == (
                "raised BlockingIOError: [Errno 11] Resource temporarily unavailable "
                f"(its processes reached the sandbox's limit of {PROCESS_LIMIT})"
            )
            running = process_tree.living(set(process_tree.descendants(scorer.worker.process.pid)))
            assert len(running) == 3  # bwrap, the sandbox's init and the worker: the bomb's processes are gone
        return
    # The parent counts them and kills the tree. A bounded bomb: as root here, no RLIMIT_NPROC holds a real one.
    marker = f"4545.{uuid.uuid4().int % 10**9}"
    body = (
        "    for _ in range(100):\n"
        f"        if os.fork() == 0:\n            os.execv('/bin/sleep', ['sleep', '{marker}'])\n"
        "    time.sleep(60)"
    )
    failure = run(body, config=Config(reward_time_limit=30.0))
    assert failure.problem == (
        f"it started more than {PROCESS_LIMIT} processes, the reward sandbox's limit, so they were killed"
    )
    assert processes_with(marker) == []


def test_the_time_limit_kills_a_tree_that_ignores_the_alarm():
    marker = f"4343.{uuid.uuid4().int % 10**9}"
    body = (
        f"    if os.fork() == 0:\n        os.execv('/bin/sleep', ['sleep', '{marker}'])\n"
        "    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        "    while True:\n"
        "        pass"
    )
    started = time.monotonic()
    failure = run(body, config=Config(reward_time_limit=1.0))
    assert failure.problem == "ran longer than its time limit of 1 s and ignored the alarm, so it was killed"
    assert time.monotonic() - started < 10 and processes_with(marker) == []
    failure = run("    while True:\n        pass", config=Config(reward_time_limit=1.0))
    assert failure.problem == "ran longer than its time limit of 1 s (reward_time_limit)"


def test_no_cgroup_or_worker_is_left_after_close():
    with Scorer(RewardSource("def f(completions, **kwargs):\n    return [0.0] * len(completions)\n"), []) as scorer:
        confinement = scorer.worker.confinement
        pid = scorer.worker.process.pid
    assert not process_tree.living({pid})
    if confinement.cgroup:
        assert not any(folder.exists() for folder in confinement.cgroup.folders())


def test_without_bubblewrap_the_worker_is_plain_but_still_ends_what_a_call_left(monkeypatch):
    not_installed = (None, "bubblewrap is not installed: apt-get install bubblewrap")
    monkeypatch.setattr(sandbox, "bubblewrap", lambda: not_installed)
    assert sandbox_status().startswith("reward code is NOT sandboxed (bubblewrap is not installed")
    marker = f"4444.{uuid.uuid4().int % 10**9}"
    body = f"    if os.fork() == 0:\n        os.execv('/bin/sleep', ['sleep', '{marker}'])\n    return [1.0]"
    source = RewardSource(f"import os\ndef f(completions, **kwargs):\n{body}\n")
    with Scorer(source, [], QUICK) as scorer:
        assert scorer.score([ROW], ["2"]).values == {"f": [1.0]}
        assert scorer.worker.confinement.bwrap is None and processes_with(marker) == []


def test_the_killed_signal_is_named_through_the_sandbox():
    failure = run("    os.kill(os.getpid(), signal.SIGSEGV)")
    assert failure.problem == "killed the reward worker process with SIGSEGV (a segmentation fault)"
