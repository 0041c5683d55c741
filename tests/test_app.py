"""The app as a user starts it: binding rules, and a real run driven through its HTTP API."""

import os
import re
import subprocess
import sys
import time

import pytest
from gradio_client import Client, handle_file

from workbench.config import Config
from workbench.rewards.tasks import load_task
from workbench.ui import config_form

SMALL = config_form.values(Config(steps=3, group_size=4, prompts_per_step=2, max_new_tokens=8))

APP = os.path.join(os.path.dirname(__file__), "..", "app.py")
pytestmark = pytest.mark.slow  # each test starts the app in a process of its own


def test_binding_off_localhost_needs_a_password(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_PASSWORD"}
    result = subprocess.run(
        [sys.executable, APP, "--host", "0.0.0.0", "--workspace", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2 and "--password" in result.stderr


def test_start_a_run_and_query_it(app_url):
    client = Client(app_url, verbose=False)
    reward = load_task("arithmetic").rewards.text
    started, command, code = client.predict(reward, *SMALL, api_name="/start_run")
    assert started.startswith("Started with reward version")
    assert "--task arithmetic" in command and "--steps 3" in command and "--group-size 4" in command
    assert "load_task('arithmetic')" in code and "Config(" in code
    deadline = time.monotonic() + 120
    message = ""
    while time.monotonic() < deadline:
        message, table, _ = client.predict(
            "SELECT step, count(*) AS n FROM rollouts GROUP BY step ORDER BY step", api_name="/query"
        )
        if message == "3 rows":
            break
        time.sleep(1)
    assert message == "3 rows"
    assert [row[1] for row in table["data"]] == [8, 8, 8]
    error, _, _ = client.predict("DROP TABLE rollouts", api_name="/query")
    assert "read-only" in error

    runs, _, _ = client.predict(api_name="/list_runs")
    run_id = runs["data"][0][0]
    assert runs["data"][0][5:7] == ["finished", "3/3"] and "group_size=4" in runs["data"][0][-1]
    summary, _, last_step, group_id, group = client.predict(run_id, api_name="/open_run")
    assert f"**{run_id}** · finished" in summary and (last_step, group_id) == (3, 0)
    assert "data-step='3'" in group and "group mean reward" in group
    assert "finished all its 3 steps" in client.predict(reward, api_name="/resume_run")
    assert "No run is training" in client.predict(reward, api_name="/swap_reward")


def test_upload_validate_try_and_dry_run_a_reward(app_url, tmp_path):
    client = Client(app_url, verbose=False)
    good = (
        "def exact(completions, answer, **kwargs):\n"
        "    return [float(c.strip() == a) for c, a in zip(completions, answer)]\n"
    )
    valid = client.predict(good, api_name="/validate_reward")
    assert valid.startswith("**Valid:** reward functions exact") and "&#x27;The answer is 42.&#x27;" in valid
    broken = client.predict("def exact(completions):\n    return []\n", api_name="/validate_reward")
    assert "Not valid" in broken and "exact (reward.py, line 1): its signature has no **kwargs" in broken

    prompts = tmp_path / "capitals.jsonl"
    prompts.write_text(
        '{"prompt": "Capital of France?", "answer": "Paris"}\n{"prompt": "Capital of Peru?", "answer": "Lima"}\n'
    )
    message, preview, _ = client.predict(handle_file(str(prompts)), api_name="/upload_prompts")
    assert "**capitals**: 2 prompts; columns passed to rewards: answer" in message
    assert [row[0] for row in preview["data"]] == ["Capital of France?", "Capital of Peru?"]
    assert "reward **1**" in client.predict(good, " Paris", api_name="/try_reward")  # the uploaded first row
    assert "reward **0**" in client.predict(good, "Lyon", api_name="/try_reward")

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": \n')
    refused, _, _ = client.predict(handle_file(str(bad)), api_name="/upload_prompts")
    assert "Upload refused" in refused and "bad.jsonl, line 2: not valid JSON" in refused

    constant = "def same(completions, **kwargs):\n    return [1.0] * len(completions)\n"
    note, report = client.predict(constant, *SMALL, api_name="/dry_run")
    assert note == "" and "groups without signal: 100%" in report and "GRPO learns nothing" in report


def test_scripts_train_follow_and_list_runs_through_the_api(app_url):
    """train(task, config) -> run_id, status(run_id) -> dict, runs() -> list[dict]: JSON with the store's names."""
    client = Client(app_url, verbose=False)
    run_id = client.predict("arithmetic", {"steps": 2, "group_size": 2, "prompts_per_step": 2}, api_name="/train")
    assert run_id.startswith("arithmetic-")
    deadline, status = time.monotonic() + 120, {}
    while time.monotonic() < deadline and status.get("status") != "finished":
        status = client.predict(run_id, api_name="/status")
        assert status["status"] in ("starting", "running", "finished"), status
        time.sleep(0.5)
    assert status == dict(
        run_id=run_id,
        status="finished",
        step=2,
        steps=2,
        reward_mean=status["reward_mean"],
        error=None,
        queue_place=None,
    )
    (listed,) = [run for run in client.predict(api_name="/runs") if run["run_id"] == run_id]
    assert listed["task"] == "arithmetic" and listed["step"] == 2 and listed["created_at"][:2] == "20"
    for task, config, refusal in [
        ("/etc", {}, "no task '/etc'"),
        ("arithmetic", {"group_size": 1}, "group_size must be an integer of at least 2"),
        ("arithmetic", {"no_such_field": 1}, "unknown config field(s): no_such_field"),
    ]:
        with pytest.raises(Exception, match=re.escape(refusal)):
            client.predict(task, config, api_name="/train")
    with pytest.raises(Exception, match="no run 'nope'"):
        client.predict("nope", api_name="/status")


def test_calls_without_a_session_do_not_grow_the_server_without_bound(tmp_path):
    """An API call without a session_hash opens a session holding the state of every component of the page
    (~0.5 MB); the app keeps `ui.SESSIONS` of them, where Gradio keeps 10,000 (5 GB)."""
    import json
    import urllib.request

    from conftest import app_process

    from workbench.ui import SESSIONS

    def runs_without_a_session(url: str, times: int) -> None:
        for _ in range(times):
            request = urllib.request.Request(f"{url}gradio_api/call/runs", b'{"data": []}', method="POST")
            request.add_header("Content-Type", "application/json")
            with urllib.request.urlopen(request, timeout=60) as response:
                event_id = json.load(response)["event_id"]
            with urllib.request.urlopen(f"{url}gradio_api/call/runs/{event_id}", timeout=60) as stream:
                assert "event: complete" in stream.read().decode()

    def resident_mib(pid: int) -> float:
        with open(f"/proc/{pid}/status") as status:
            return int(next(line for line in status if line.startswith("VmRSS")).split()[1]) / 1024

    with app_process(tmp_path) as (url, app):
        runs_without_a_session(url, SESSIONS)  # the sessions the app keeps
        full = resident_mib(app.pid)
        runs_without_a_session(url, SESSIONS)  # as many again: each evicts the oldest
        grew = resident_mib(app.pid) - full
        assert grew < 0.1 * SESSIONS * 0.5, f"{SESSIONS} more sessions grew the server by {grew:.0f} MiB"
