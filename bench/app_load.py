"""The app under load while it trains: training speed, and how fast pages and status calls are answered.

    python bench/app_load.py [--clients 0 5 20] [--seconds 40] [--model tiny]

Starts `python app.py` on a free port with a fresh workspace and, through the app's API, a long run of
bench/step_time.py's work (8 prompts x 8 completions). Once it trains, for each number of clients in turn:
that many clients (threads of one other process, plain HTTP) each poll the app once a second for
--seconds: the run's status through the API (`/gradio_api/call/status`, the request and the answer's
event stream, in a session of the client's own as gradio_client keeps one), and every fifth time the page
itself (GET /). Prints, per number of clients, the run's
steps per second over the window (its step count from the status endpoint), and the median and 95th
percentile latency of status and page calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_time import SETTINGS  # noqa: E402  the same work as the step-time bench

from app import ROOT, free_port, start_app, wait_http  # noqa: E402  the app bench's launcher

POLL_SECONDS = 1.0
PAGE_EVERY = 5


def call(url: str, endpoint: str, *data, session: str | None = None) -> object:
    """One API call as gradio_client makes it: post the inputs (in the client's session), then read the answer's
    event stream. Without a session each call opens one: the app builds a session's state from every component
    of its page (~60 ms of the server's time here, where a call in a session takes ~15)."""
    body = json.dumps({"data": list(data), "session_hash": session}).encode()
    request = urllib.request.Request(f"{url}gradio_api/call/{endpoint}", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        event_id = json.load(response)["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/{endpoint}/{event_id}", timeout=60) as stream:
        lines = stream.read().decode().splitlines()
    if "event: error" in lines:
        raise RuntimeError(f"{endpoint} failed: {lines}")
    return json.loads(next(line[len("data: ") :] for line in lines if line.startswith("data: ")))[0]


def client(url: str, run_id: str, until: float, latencies: dict) -> None:
    n, session = 0, str(uuid.uuid4())
    while time.monotonic() < until:
        started = time.monotonic()
        if n % PAGE_EVERY == PAGE_EVERY - 1:
            with urllib.request.urlopen(url, timeout=60) as response:
                response.read()
            latencies["page"].append(time.monotonic() - started)
        else:
            call(url, "status", run_id, session=session)
            latencies["status"].append(time.monotonic() - started)
        n += 1
        time.sleep(max(0.0, POLL_SECONDS - (time.monotonic() - started)))


def clients(url: str, run_id: str, count: int, seconds: float) -> None:
    """The --clients side, in a process of its own: `count` polling threads; prints their latencies as JSON."""
    latencies = {"status": [], "page": []}
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=client, args=(url, run_id, until, latencies)) for _ in range(count)]
    for t in threads:
        t.start()
        time.sleep(POLL_SECONDS / max(count, 1))  # spread over the second, as independent users would be
    for t in threads:
        t.join()
    print(json.dumps(latencies))


def window(url: str, run_id: str, count: int, seconds: float) -> tuple[float, dict]:
    """Steps per second of the run while `count` clients poll, and their latencies."""
    first = call(url, "status", run_id)
    started = time.monotonic()
    if count:
        command = [sys.executable, __file__, "--poll", url, run_id, str(count), str(seconds)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        latencies = json.loads(output.strip().splitlines()[-1])
    else:
        time.sleep(seconds)
        latencies = {"status": [], "page": []}
    last = call(url, "status", run_id)
    if last["status"] != "running":
        raise RuntimeError(f"the run stopped training during the window: {last}")
    return (last["step"] - first["step"]) / (time.monotonic() - started), latencies


def quantiles(values: list[float]) -> str:
    if len(values) < 2:
        return "-"
    p95 = statistics.quantiles(values, n=20, method="inclusive")[-1]
    return f"{statistics.median(values) * 1000:.0f} / {p95 * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[0, 5, 20])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--poll", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.poll:
        url, run_id, count, seconds = args.poll
        clients(url, run_id, int(count), float(seconds))
        return
    workspace = Path(tempfile.mkdtemp(prefix="bench-app-load-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with open(workspace / "app.log", "wb") as log:
        app = start_app(port, workspace / "runs", log)
        try:
            wait_http(url, app)
            settings = SETTINGS | dict(model=args.model, steps=100_000, checkpoint_every=100_000)
            run_id = call(url, "train", "arithmetic", settings)
            while call(url, "status", run_id)["step"] < 3:  # past the model's loading and the first steps
                time.sleep(0.5)
            print(f"app on {url} ({ROOT}), run {run_id}: {args.model}, 8 x 8 completions a step")
            print("| polling clients | steps/s | status median / p95 | page median / p95 |")
            print("|---|---|---|---|")
            for count in args.clients:
                rate, latencies = window(url, run_id, count, args.seconds)
                row = f"| {count} | {rate:.2f} | {quantiles(latencies['status'])} | {quantiles(latencies['page'])} |"
                print(row, flush=True)
        finally:
            app.terminate()
            app.wait(timeout=30)


if __name__ == "__main__":
    main()
