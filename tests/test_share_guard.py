"""No public share link without a password: --share needs one, and the environment variables with which Gradio opens
a link by itself (GRADIO_SHARE, a Kaggle or Colab notebook) open none."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

APP = os.path.join(os.path.dirname(__file__), "..", "app.py")


def test_share_without_a_password_is_refused():
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_PASSWORD"}
    result = subprocess.run([sys.executable, APP, "--share"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert "--share opens a public link to a reward editor that runs code: give --password too" in result.stderr


def test_a_classroom_opens_no_share_link(tmp_path):
    users = tmp_path / "class.txt"
    users.write_text("ada:ada-pw\n")
    command = [sys.executable, APP, "--users", str(users), "--share", "--workspace", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "a classroom is served on its own address" in result.stderr


@pytest.mark.slow  # a server of its own
def test_gradio_share_kaggle_and_colab_variables_open_no_link(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_SHARE": "True", "KAGGLE_KERNEL_RUN_TYPE": "Interactive", "COLAB_RELEASE_TAG": "x"}
    env.pop("WORKBENCH_PASSWORD", None)
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, APP, "--port", str(port), "--workspace", str(tmp_path / "ws")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log.read_text()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        time.sleep(2)  # Gradio prints its share link (or its failure to make one) right after it starts serving
    finally:
        server.terminate()
        server.wait(timeout=30)
    printed = log.read_text()
    assert f"http://127.0.0.1:{port}" in printed
    assert "public URL" not in printed and "share link" not in printed.lower()
