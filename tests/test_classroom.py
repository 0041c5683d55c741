"""Classroom mode for real: a server with three accounts, driven through its API as students' scripts would be
and through the teacher's page, one run training at a time."""

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from chromium import fill_stable, wait_text
from gradio_client import Client

from workbench.accounts import hash_password
from workbench.config import Config
from workbench.rewards.tasks import load_task
from workbench.ui import config_form

pytestmark = pytest.mark.slow  # a server in a process of its own, and real runs
APP = os.path.join(os.path.dirname(__file__), "..", "app.py")
SMALL = {"steps": 3, "group_size": 2, "prompts_per_step": 2, "max_new_tokens": 4}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classroom")
    users = folder / "class.txt"
    users.write_text(f"ada:ada-pw\nbob:{hash_password('bob-pw')}\nmia:mia-pw:teacher\n")
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "WORKBENCH_PASSWORD": "server-secret"}
    command = [sys.executable, APP, "--users", str(users), "--workspace", str(folder / "ws"), "--port", str(port)]
    server = subprocess.Popen(command + ["--max-concurrent-runs", "1"], env=env, stdout=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert server.poll() is None, server.stdout.read()
        try:
            urllib.request.urlopen(url + "/", timeout=2).read()
            break
        except OSError:
            assert time.monotonic() < deadline, "the classroom did not answer"
            time.sleep(0.5)
    yield url, folder
    server.terminate()
    server.wait(timeout=30)


def client(url: str, name: str, password: str) -> Client:
    return Client(f"{url}/u/{name}/", auth=(name, password), verbose=False)


def wait_for(predicate, timeout=180):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    return value


def test_each_student_has_their_own_runs_and_waits_their_turn(classroom):
    url, folder = classroom
    ada, bob = client(url, "ada", "ada-pw"), client(url, "bob", "bob-pw")
    first = ada.predict("arithmetic", SMALL, api_name="/train")
    second = bob.predict("arithmetic", SMALL, api_name="/train")
    waiting = bob.predict(second, api_name="/status")
    assert waiting["status"] == "queued" and waiting["queue_place"] == 1  # one run at a time on this machine
    wait_for(lambda: bob.predict(second, api_name="/status")["status"] == "finished")
    assert ada.predict(first, api_name="/status")["status"] == "finished"
    assert [r["run_id"] for r in ada.predict(api_name="/runs")] == [first]  # none of bob's
    assert [r["run_id"] for r in bob.predict(api_name="/runs")] == [second]
    with pytest.raises(Exception, match="no run"):
        bob.predict(first, api_name="/status")  # ada's run is not in bob's workspace
    assert (folder / "ws" / "users" / "ada" / "store.duckdb").exists()
    with pytest.raises(ValueError, match="Could not login"):
        client(url, "ada", "bob-pw")  # a wrong password
    with pytest.raises(ValueError, match="Could not login"):
        Client(f"{url}/u/bob/", auth=("ada", "ada-pw"), verbose=False)  # another student's page


def test_the_teacher_sees_every_run_publishes_a_task_and_stops_a_run(classroom):
    url, _ = classroom
    mia, ada = client(url, "mia", "mia-pw"), client(url, "ada", "ada-pw")
    summary, runs, queue, board, _ = mia.predict(api_name="/class_runs")
    students = {row[0] for row in runs["data"]}
    assert {"ada", "bob"} <= students and "students" in summary
    reward = load_task("arithmetic").rewards.text
    form = config_form.values(Config(steps=3, group_size=2, prompts_per_step=2, max_new_tokens=4))
    published = mia.predict("week1", reward, *form, api_name="/publish_task")  # the teacher's task, reward, form
    assert "Published **week1**" in published
    long = ada.predict("week1", {"steps": 200}, api_name="/train")  # a published task is a task for everyone
    wait_for(lambda: ada.predict(long, api_name="/status")["step"] >= 1)
    message = mia.predict(f"ada/{long}", api_name="/stop_student_run")
    assert "Stopping ada's run" in message
    wait_for(lambda: ada.predict(long, api_name="/status")["status"] == "stopped")


@pytest.mark.browser  # before the throttle test, whose wrong passwords throttle every login from 127.0.0.1
def test_in_the_browser_a_student_sees_only_their_own_runs_and_logs_in_only_on_their_page(classroom, browser):
    url, _ = classroom
    ada, bob = client(url, "ada", "ada-pw"), client(url, "bob", "bob-pw")
    hers, his = (student.predict("arithmetic", SMALL, api_name="/train") for student in (ada, bob))
    wait_for(lambda: bob.predict(his, api_name="/status")["status"] == "finished")
    wait_for(lambda: ada.predict(hers, api_name="/status")["status"] == "finished")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{url}/")
    page.fill("input[name=name]", "bob")
    page.click("button")  # the front page sends bob to his own page's login
    page.wait_for_url(f"{url}/u/bob/**")
    page.fill("input[type=text]", "bob")
    page.fill("input[type=password]", "bob-pw")
    page.keyboard.press("Enter")
    page.get_by_role("tab", name="Explore").click()
    wait_text(page, "#sql-message", "rows")  # the tab's own query, run as it opens, ends before bob's starts
    fill_stable(page, "#sql-input textarea", "SELECT run_id FROM runs")
    page.click("#sql-run")
    wait_text(page, "#sql-result", his)
    shown = page.inner_text("#sql-result")
    assert his in shown and hers not in shown  # bob's own runs, none of ada's
    assert "GRPO Workbench · bob" in page.inner_text("body")
    assert "Class" not in page.get_by_role("tab").all_inner_texts()  # the teacher's tab is not a student's

    page.goto(f"{url}/u/ada/")  # bob's login is not ada's page's
    page.fill("input[type=text]", "bob")
    page.fill("input[type=password]", "bob-pw")
    page.keyboard.press("Enter")
    wait_text(page, "body", "Incorrect")
    assert hers not in page.inner_text("body")
    page.close()


def test_logins_are_throttled(classroom):
    url, _ = classroom
    login = f"{url}/u/bob/login"

    def attempt(password: str) -> int:
        data = urllib.parse.urlencode({"username": "bob", "password": password}).encode()
        try:
            with urllib.request.urlopen(urllib.request.Request(login, data), timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    assert [attempt("nope") for _ in range(40)] == [400] * 40
    assert attempt("bob-pw") == 400  # the right password, throttled after so many wrong ones


def test_a_classroom_without_a_sandbox_or_with_a_bad_users_file_is_refused(tmp_path):
    users = tmp_path / "class.txt"
    users.write_text("ada\n")
    result = subprocess.run(
        [sys.executable, APP, "--users", str(users), "--workspace", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 2 and f"{users}, line 1: ada has no password" in result.stderr
