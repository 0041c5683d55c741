"""A classroom on one server, measured: 30 students' scripts train at once through the app's API.

    python bench/classroom.py [--students 30] [--steps 20] [--slots N]

Starts `python app.py --users FILE` on a free port (each student an account, one teacher), then one client per
student (threads of this process, bounded: gradio_client over 127.0.0.1; the class arriving over --arrival
seconds, as a room does) logs in, starts a --steps-step run of
the tiny model on arithmetic (group size 4, 4 prompts a step, at most 16 new tokens), and polls its status every
2 s, fetching its page every fifth poll, until the run finishes. Then it checks that every run finished with
every step stored (each student's store, read after the server stops) and that no student's run list holds
another's run. It prints: the p50/p95 latency of status and page calls while runs trained, the server's peak
RSS and the peak RSS of the server with its workers (sampled), and the total steps per second against one
student alone on the same server (the same run, measured first), both from the stores: every stored step over
the span from the first run's creation to the last step's. The queue must not lose throughput to
oversubscription.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import httpx
from gradio_client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app import ROOT, free_port, wait_http  # noqa: E402  the app bench's helpers

RUN = {"steps": 20, "group_size": 4, "prompts_per_step": 4, "max_new_tokens": 16, "checkpoint_every": 100}
POLL_SECONDS = 2.0
CLIENT_TIMEOUT = httpx.Timeout(120.0)  # a login's first call reads the page's API description, built once per user


def tree_rss_mib(pid: int) -> float:
    """The resident memory of a process and all its descendants, now."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(p) for p in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            pass
    return total / 1024


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024


def student(url: str, name: str, steps: int, latencies: dict, outcome: dict) -> None:
    client = Client(
        f"{url}/u/{name}/", auth=(name, f"{name}-pw"), verbose=False, httpx_kwargs={"timeout": CLIENT_TIMEOUT}
    )
    run_id = client.predict("arithmetic", RUN | {"steps": steps}, api_name="/train")
    polls = 0
    while True:
        time.sleep(POLL_SECONDS)
        started = time.monotonic()
        if polls % 5 == 4:
            with urllib.request.urlopen(f"{url}/u/{name}/", timeout=60) as response:
                response.read()
            latencies["page"].append(time.monotonic() - started)
        else:
            status = client.predict(run_id, api_name="/status")
            latencies["status"].append(time.monotonic() - started)
            if status["status"] not in ("queued", "starting", "running"):
                break
        polls += 1
    outcome[name] = (run_id, status, [r["run_id"] for r in client.predict(api_name="/runs")])


def one_class(users: list[str], steps: int, slots: int | None, workspace: Path, arrival: float) -> dict:
    accounts = workspace / "class.txt"
    accounts.write_text("".join(f"{name}:{name}-pw\n" for name in users) + "teacher:t-pw:teacher\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "app.py", "--users", str(accounts), "--workspace", str(workspace / "ws")]
    command += ["--port", str(port)] + (["--max-concurrent-runs", str(slots)] if slots else [])
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(workspace / "server.log", "wb") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_http(url + "/", server, timeout=600)
            latencies, outcome, peak = {"status": [], "page": []}, {}, [0.0]
            sampling = threading.Event()

            def sample():
                while not sampling.is_set():
                    peak[0] = max(peak[0], tree_rss_mib(server.pid))
                    time.sleep(0.5)

            threading.Thread(target=sample, daemon=True).start()
            started = time.monotonic()
            clients = [threading.Thread(target=student, args=(url, u, steps, latencies, outcome)) for u in users]
            for c in clients:
                c.start()
                time.sleep(arrival / len(users))
            for c in clients:
                c.join()
            wall = time.monotonic() - started
            sampling.set()
            server_peak = peak_rss_mib(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=60)
    return dict(latencies=latencies, outcome=outcome, wall=wall, server_peak=server_peak, tree_peak=peak[0])


def stored(workspace: Path, name: str, run_id: str) -> tuple[int, float, float]:
    """The run's stored steps, and when it was created and its last step stored (seconds since the epoch)."""
    from workbench.store.database import Store

    store = Store(workspace / "ws" / "users" / name)
    row = store.query(
        "SELECT count(*) AS n, epoch(any_value(r.created_at)) AS began, epoch(max(s.created_at)) AS ended "
        "FROM runs r JOIN steps s USING (run_id) WHERE run_id = $1",
        [run_id],
    ).iloc[0]
    return int(row.n), float(row.began), float(row.ended)


def steps_per_second(workspace: Path, outcome: dict) -> float:
    """Every run's steps over the span from the first run's start to the last run's last step, as stored."""
    spans = [stored(workspace, name, run_id) for name, (run_id, _, _) in outcome.items()]
    return sum(n for n, _, _ in spans) / (max(e for _, _, e in spans) - min(b for _, b, _ in spans))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--slots", type=int, help="--max-concurrent-runs (default: the app's)")
    parser.add_argument("--arrival", type=float, default=15.0, help="seconds over which the students log in")
    args = parser.parse_args()
    alone_folder = Path(tempfile.mkdtemp(prefix="bench-class-alone-"))
    alone = one_class(["solo"], args.steps, args.slots, alone_folder, 0.0)
    alone_rate = steps_per_second(alone_folder, alone["outcome"])
    folder = Path(tempfile.mkdtemp(prefix="bench-class-"))
    users = [f"s{n:02d}" for n in range(args.students)]
    result = one_class(users, args.steps, args.slots, folder, args.arrival)
    finished = [u for u, (_, status, _) in result["outcome"].items() if status["status"] == "finished"]
    whole = [u for u, (run_id, _, _) in result["outcome"].items() if stored(folder, u, run_id)[0] == args.steps]
    isolated = all(runs == [run_id] for run_id, _, runs in result["outcome"].values())
    rate = steps_per_second(folder, result["outcome"])

    def spread(values):
        return f"{statistics.median(values) * 1000:.0f} / {statistics.quantiles(values, n=20)[-1] * 1000:.0f} ms"

    print(
        f"{args.students} students x {args.steps} steps (tiny, 4 x 4 completions), polling every {POLL_SECONDS:.0f} s"
    )
    print(
        f"finished: {len(finished)}/{args.students}; every step stored: {len(whole)}/{args.students}; "
        f"each sees only their own run: {isolated}"
    )
    print(f"status calls p50 / p95: {spread(result['latencies']['status'])} (n={len(result['latencies']['status'])})")
    print(f"page calls p50 / p95: {spread(result['latencies']['page'])} (n={len(result['latencies']['page'])})")
    print(
        f"server peak RSS {result['server_peak']:.0f} MiB; "
        f"server and workers at once, peak {result['tree_peak']:.0f} MiB"
    )
    print(
        f"wall {result['wall']:.0f} s; total {rate:.2f} steps/s against {alone_rate:.2f} for one student alone "
        f"({rate / alone_rate:.0%})"
    )


if __name__ == "__main__":
    main()
