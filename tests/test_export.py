"""Export to TRL: a stored run becomes a TRL project (grpo.yaml, rewards.py, prompts, launch.sh, PARITY.md).

What it proves: a config's values land in grpo.yaml field by field, and TRL's own parser reads the file
(every key a field it knows); the TRL defaults PARITY.md quotes are the installed TRL's; every config
field is mapped or listed as not mapped; bad inputs are refused, naming the run or the folder; the project
holds every file PARITY.md names and pins every requirement; and end to end, a tiny-model run exported,
away to another folder (the model travels in it) and trained by TRL for 2 steps on CPU samples rewards
like the workbench's first step, on the same prompts.
"""

import dataclasses
import importlib.metadata
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import serve_app

from workbench import Config, Store, load_task, train
from workbench.engine.tiny import tiny_model_path
from workbench.integrations import export
from workbench.integrations.export import (
    FILES,
    MODEL_FOLDER,
    PINNED,
    ExportError,
    export_trl,
    export_trl_zip,
    grpo_yaml,
    launch_script,
    parity_markdown,
    requirements,
)
from workbench.integrations.trl_settings import (
    NOT_MAPPED,
    TRL_DEFAULTS,
    TRL_VERSION,
    TWO_WAY,
    close_notes,
    trl_settings,
    unsupported,
    workbench_values,
)
from workbench.store.database import StoreError

trl = pytest.importorskip("trl")  # a dev extra: the peer the export is for

# Every field away from its default, so that a value landing in the wrong TRL field shows.
CHANGED = Config(
    lora_rank=8,
    lora_alpha=24.0,
    lora_dropout=0.1,
    lora_target_modules=("q_proj", "v_proj"),
    group_size=6,
    prompts_per_step=4,
    max_new_tokens=20,
    temperature=0.9,
    top_p=0.95,
    learning_rate=1e-5,
    lr_scheduler_type="cosine",
    warmup_steps=3,
    weight_decay=0.01,
    beta=0.02,
    clip_epsilon=0.25,
    epsilon_high=0.3,
    num_iterations=2,
    scale_rewards="batch",
    loss_type="dr_grpo",
    mask_truncated_completions=True,
    disable_dropout=False,
    max_grad_norm=0.5,
    reward_weights={"format_reward": 0.5},
    steps=40,
    checkpoint_every=10,
    seed=7,
    precision="fp32",
)
REWARDS = ["correct", "format_reward"]  # the reward source's functions, in its order


def settings_of(config: Config, model: str = "/models/m") -> dict:
    return {s.name: s.value for s in trl_settings(config, model, REWARDS, "run-1")}


def test_the_two_way_fields_read_back_as_the_config_they_came_from():
    """grpo.yaml's values, read as a watched TRL run's are (one process), give back every field of TWO_WAY; steps
    and warmup come back in TRL's optimizer steps (num_iterations per workbench step), as a watched run counts them."""
    fields = {pair.workbench for pair in TWO_WAY}
    assert fields <= set(CHANGED.changed())  # each pair carries a value of its own
    back = Config.from_dict(workbench_values(settings_of(CHANGED) | {"num_processes": 1}))
    mu = CHANGED.num_iterations
    expected = dataclasses.replace(CHANGED, steps=CHANGED.steps * mu, warmup_steps=CHANGED.warmup_steps * mu)
    assert {k: v for k, v in back.to_dict().items() if k in fields} == {
        k: v for k, v in expected.to_dict().items() if k in fields
    }


def test_a_config_maps_into_grpo_yaml_field_by_field():
    assert settings_of(CHANGED) == {
        "model_name_or_path": "/models/m",
        "dtype": "float32",
        "bf16": False,
        "use_peft": True,
        "lora_r": 8,
        "lora_alpha": 24,
        "lora_dropout": 0.1,
        "lora_target_modules": ["q_proj", "v_proj"],
        "disable_dropout": False,
        "datasets": [{"path": "json", "data_files": "train.jsonl", "split": "train"}],
        "shuffle_dataset": False,
        "remove_unused_columns": False,
        "reward_funcs": ["rewards.correct", "rewards.format_reward"],
        "reward_weights": [1.0, 0.5],  # unnamed functions weigh 1.0
        "multi_objective_aggregation": "sum_then_normalize",
        "num_generations": 6,
        "max_completion_length": 20,
        "temperature": 0.9,
        "top_p": 0.95,
        "top_k": 0,
        "repetition_penalty": 1.0,
        "per_device_train_batch_size": 6,  # x gradient_accumulation_steps = P x G = 24
        "gradient_accumulation_steps": 4,
        "steps_per_generation": 4,
        "beta": 0.02,
        "use_bias_correction_kl": False,
        "epsilon": 0.25,
        "epsilon_high": 0.3,
        "importance_sampling_level": "token",
        "num_iterations": 2,
        "scale_rewards": "batch",
        "loss_type": "dr_grpo",
        "mask_truncated_completions": True,
        "top_entropy_quantile": 1.0,
        "entropy_coef": 0.0,
        "learning_rate": 1e-5,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 6,  # TRL counts optimizer steps: num_iterations of them per workbench step
        "weight_decay": 0.01,
        "max_grad_norm": 0.5,
        "max_steps": 80,
        "seed": 7,
        "gradient_checkpointing": False,
        "logging_steps": 1,
        "log_completions": True,
        "num_completions_to_print": 6,
        "save_steps": 20,
        "output_dir": "output",
        "run_name": "run-1",
        "report_to": "none",
        "project": "grpo-workbench",
    }
    defaults = settings_of(Config(warmup_steps=2, loss_type="bnpo", lora_alpha=16.5))
    assert defaults["lr_scheduler_type"] == "constant_with_warmup"  # transformers' 'constant' ignores warmup
    assert defaults["loss_type"] == "dapo"  # the workbench's bnpo is the whole batch's token mean: TRL's dapo
    assert defaults["epsilon_high"] == 0.2  # 0 means clip_epsilon
    assert defaults["lora_alpha"] == 16.5
    assert (defaults["bf16"], defaults["dtype"]) == (True, "bfloat16")  # precision 'auto', as on a GPU


def test_trls_own_parser_reads_grpo_yaml(tmp_path):
    from trl.scripts.grpo import make_parser

    path = tmp_path / "grpo.yaml"
    path.write_text(grpo_yaml(trl_settings(CHANGED, str(tiny_model_path()), REWARDS, "run-1"), "run-1", []))
    # fail_with_unknown_args (the default): a key that is no field of TRL's raises
    script, training, model, data = make_parser().parse_args_and_config(["--config", str(path)])
    assert script.reward_funcs == ["rewards.correct", "rewards.format_reward"]
    assert (data.datasets[0].path, data.datasets[0].data_files) == ("json", "train.jsonl")
    assert (model.use_peft, model.lora_r, model.lora_alpha, model.lora_dropout) == (True, 8, 24, 0.1)
    assert model.lora_target_modules == ["q_proj", "v_proj"] and model.dtype == "float32"
    assert (training.num_generations, training.generation_batch_size, training.steps_per_generation) == (6, 24, 4)
    assert (training.loss_type, training.scale_rewards, training.beta) == ("dr_grpo", "batch", 0.02)
    assert (training.epsilon, training.epsilon_high, training.use_bias_correction_kl) == (0.25, 0.3, False)
    assert (training.max_steps, training.warmup_steps, training.lr_scheduler_type) == (80, 6, "cosine")
    assert training.reward_weights == [1.0, 0.5] and training.shuffle_dataset is False
    assert training.bf16 is False and training.disable_dropout is False and training.learning_rate == 1e-5


def test_the_trl_defaults_parity_quotes_are_the_installed_trls():
    from trl import GRPOConfig, ModelConfig

    assert trl.__version__ == TRL_VERSION
    fields = {**ModelConfig.__dataclass_fields__, **GRPOConfig.__dataclass_fields__}
    for name, default in TRL_DEFAULTS.items():
        field = fields[name]
        actual = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        assert actual == default, name


def test_every_config_field_is_mapped_or_listed_as_not_mapped():
    sources = {s.source for s in trl_settings(Config(), "m", REWARDS, "run-1")}
    for field in dataclasses.fields(Config):
        assert field.name in sources or field.name in NOT_MAPPED or field.name == "advantage_estimator", field.name


def test_parity_names_what_grpotrainer_cannot_do_and_what_differs():
    assert unsupported(Config()) == []
    config = Config(advantage_estimator="rloo", dynamic_sampling=True)
    problems = unsupported(config)
    assert "advantage_estimator='rloo'" in problems[0] and "RLOOTrainer" in problems[0]
    assert problems[1].startswith("dynamic_sampling=True")
    settings = trl_settings(config, "m", REWARDS, "run-1")
    run = dict(run_id="run-1", task="arithmetic", model="tiny", train=10, held_out=2)
    text = parity_markdown(config, settings, run, problems, close_notes(config, 10, 1))
    assert "## Not the run's algorithm" in text and "RLOOTrainer" in text
    assert '| loss_type | `"dapo"` | `"grpo"` | the run\'s loss_type |' in text  # TRL's default, what is set
    assert "| use_bias_correction_kl | `true` | `false` |" in text
    assert '| lr_scheduler_type | `"linear"` | `"constant"` |' in text
    assert "| dynamic_sampling | `true` (changed) |" in text
    for name in NOT_MAPPED:
        assert f"| {name} |" in text
    assert "# NOT THE RUN'S ALGORITHM: advantage_estimator='rloo'" in grpo_yaml(settings, "run-1", problems)


def test_launch_sh_keeps_p_x_g_per_step_on_several_gpus_and_nodes(tmp_path, monkeypatch):
    """launch.sh's command lines, caught by a stand-in `trl`, read by TRL's and accelerate's own parsers."""
    from accelerate.commands.launch import launch_command_parser
    from trl.cli.accelerate_config import resolve_accelerate_config_argument
    from trl.scripts.grpo import make_parser

    config = Config(group_size=8, prompts_per_step=8, precision="fp32")
    (tmp_path / "launch.sh").write_text(launch_script(config, "run-1"))
    (tmp_path / "grpo.yaml").write_text(grpo_yaml(trl_settings(config, "m", REWARDS, "run-1"), "run-1", []))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "trl").write_text('#!/bin/sh\nshift\necho "$@"\n')  # prints what `trl grpo` was given
    (tmp_path / "bin" / "trl").chmod(0o755)

    def launch(*args, **env):
        path = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
        return subprocess.run(
            ["bash", "launch.sh", *args], cwd=tmp_path, env=os.environ | path | env, capture_output=True, text=True
        )

    single = launch().stdout.split()
    assert single == [
        "--config",
        "grpo.yaml",
        *"--per_device_train_batch_size 8 --gradient_accumulation_steps 8 --steps_per_generation 8".split(),
    ]
    nodes = launch("zero2", "--max_steps", "3", GPUS="2", NODES="2", NODE_RANK="1", MASTER_ADDR="10.0.0.1")
    words = nodes.stdout.split()
    monkeypatch.chdir(tmp_path)  # where launch.sh runs trl, grpo.yaml beside it
    *_, training, _, _, config_left, cli_left = make_parser().parse_args_and_config(
        words, return_remaining_strings=True, separate_remaining_strings=True
    )
    accelerate = launch_command_parser().parse_args(resolve_accelerate_config_argument(config_left + cli_left) + ["x"])
    assert accelerate.config_file.endswith("zero2.yaml") and accelerate.num_processes == 4
    assert (accelerate.num_machines, accelerate.machine_rank, accelerate.main_process_ip) == (2, 1, "10.0.0.1")
    assert accelerate.mixed_precision == "no" and training.max_steps == 3
    per_step = training.per_device_train_batch_size * training.gradient_accumulation_steps * accelerate.num_processes
    assert per_step == config.batch_size and training.steps_per_generation == training.gradient_accumulation_steps
    uneven = launch("ddp", GPUS="3")
    assert uneven.returncode == 2 and "do not split into 3 processes" in uneven.stderr
    assert "set NODE_RANK" in launch("fsdp", NODES="2", MASTER_ADDR="a").stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step workbench run on the tiny model: arithmetic, 8 prompts x 8 completions a step, fp32."""
    workspace = tmp_path_factory.mktemp("workspace")
    config = Config(steps=2, group_size=8, prompts_per_step=8, max_new_tokens=8, precision="fp32", device="cpu")
    events = list(train(config, load_task("arithmetic"), workspace))
    assert events[-1].status == "finished"
    return SimpleNamespace(workspace=workspace, run_id=events[0].run_id, config=config)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True)


def test_bad_inputs_are_refused_naming_the_run_or_the_folder(trained, tmp_path):
    with pytest.raises(StoreError, match="no store in workspace"):
        export_trl(tmp_path / "nothing", trained.run_id, tmp_path / "out")
    with pytest.raises(StoreError, match=f"no run 'nope' .*{trained.run_id}"):
        export_trl(trained.workspace, "nope", tmp_path / "out")
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="already holds files.*--force"):
        export_trl(trained.workspace, trained.run_id, full)
    assert os.listdir(full) == ["notes.txt"]
    export_trl(trained.workspace, trained.run_id, full, force=True)  # the export's files; the others kept
    assert sorted(os.listdir(full)) == sorted([*FILES, MODEL_FOLDER, "notes.txt"])
    result = cli("export", "nope", "--to", "trl", "--out", str(tmp_path / "out"), "--workspace", str(trained.workspace))
    assert result.returncode == 2 and "error: no run 'nope'" in result.stderr


@pytest.mark.slow
def test_an_exported_run_trains_with_trl_and_samples_like_the_workbench(trained, tmp_path):
    """TRL's first-step reward mean is within 4 standard errors of the workbench's.

    Both runs sample step 1 from the same policy (the base model: the adapter's B starts at 0), at the
    same temperature, on the same 8 prompts (train.jsonl is in the run's order, unshuffled), so their
    mean rewards estimate the same number; same seed does not mean the same samples (different
    samplers). With 0/1 rewards each mean over n = P x G = 64 completions has a variance of at most
    p (1 - p) / n (p the pooled mean; fixed prompts only lower it), so the difference has a standard
    error of at most sqrt(2 p (1 - p) / n), about 0.09 at p = 0.5.
    """
    out = tmp_path / "project"
    workspace, run_id = str(trained.workspace), trained.run_id
    exported = cli("export", run_id, "--to", "trl", "--out", str(out), "--workspace", workspace)
    assert exported.returncode == 0 and f"exported to {out}" in exported.stderr, exported.stderr
    assert sorted(os.listdir(out)) == sorted([*FILES, MODEL_FOLDER])
    task = load_task("arithmetic")
    assert (out / "rewards.py").read_text() == task.rewards.text  # the reward, unchanged
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert rows == task.batch(1, len(task.rows), seed=0)  # every column, in the order the run drew them
    assert [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()] == task.eval_rows
    first = Store(workspace).query(
        "SELECT prompt FROM rollouts WHERE run_id = $1 AND step = 1 AND sample_idx = 0 ORDER BY group_id", [run_id]
    )
    assert first.prompt.tolist() == [row["prompt"] for row in rows[:8]]
    grpo = yaml.safe_load((out / "grpo.yaml").read_text())
    assert grpo["model_name_or_path"] == f"./{MODEL_FOLDER}" and grpo["reward_funcs"] == ["rewards.correct"]
    assert "trl==1.16.0" in (out / "requirements.txt").read_text()
    away = tmp_path / "another-machine" / "project"  # nothing in it names a path of this machine
    shutil.copytree(out, away)
    shutil.rmtree(out)
    for path in away.rglob("*"):
        if path.suffix in (".yaml", ".sh", ".md", ".txt", ".py", ".json"):
            assert str(tmp_path) not in path.read_text() and str(tiny_model_path()) not in path.read_text(), path

    started = time.monotonic()
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # the venv's `trl`
        "HF_DATASETS_CACHE": str(tmp_path / "datasets"),
    }
    overrides = ["--max_steps", "2", "--output_dir", str(tmp_path / "trl"), "--report_to", "none"]
    ran = subprocess.run(["bash", "launch.sh", "single", *overrides], cwd=away, env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[-4000:]
    state = json.loads((tmp_path / "trl" / "checkpoint-2" / "trainer_state.json").read_text())
    rewards = {entry["step"]: entry["reward"] for entry in state["log_history"] if "reward" in entry}
    assert sorted(rewards) == [1, 2]
    ours = float(Store(workspace).steps(run_id).reward_mean[0])
    p, n = (rewards[1] + ours) / 2, trained.config.batch_size
    standard_error = math.sqrt(2 * p * (1 - p) / n)
    print(
        f"first-step reward: TRL {rewards[1]:.3f}, workbench {ours:.3f}, 4 SE = {4 * standard_error:.3f}; "
        f"TRL ran 2 steps in {time.monotonic() - started:.0f} s"
    )
    assert abs(rewards[1] - ours) <= 4 * standard_error + 1e-9


@pytest.fixture
def app_on(trained):
    """The app serving the trained run's workspace."""
    with serve_app(trained.workspace) as url:
        yield url


@pytest.mark.slow
def test_the_runs_tab_hands_out_the_project_as_a_zip(trained, app_on):
    from gradio_client import Client

    client = Client(app_on, verbose=False)
    client.predict(api_name="/list_runs")  # the run in the Runs tab's dropdown, as a user opens it
    archive, message = client.predict(trained.run_id, api_name="/export_trl")
    assert "bash launch.sh" in message and "Warning" not in message
    with zipfile.ZipFile(archive) as project:
        names = {name.split("/", 1)[1] for name in project.namelist() if not name.endswith("/")}
    assert names >= set(FILES) and {name.split("/")[0] for name in names} == {*FILES, MODEL_FOLDER}


REWARD = "def correct(completions, answer, **kwargs):\n    return [0.0] * len(completions)\n"


def _stored_run(workspace: Path, task_folder: Path, config: Config) -> str:
    """A run as the store holds it before its first step (no training): enough to export."""
    store = Store(workspace)
    store.create_run("run-1", task_folder.name, str(task_folder), config.model, config.to_dict(), REWARD)
    return "run-1"


def _named_files(parity: str) -> set[str]:
    """The project's files PARITY.md names: words ending in a file suffix, and folders such as model/."""
    names = set(re.findall(r"(?<![\w/.])[\w-]+\.(?:jsonl|yaml|py|sh|txt|md|json|safetensors)\b", parity))
    return names | {m.rstrip("/") for m in re.findall(r"(?<![\w/.])[\w-]+/(?![\w])", parity)}


@pytest.mark.parametrize("eval_split", [0.0, 0.25])
def test_the_project_holds_every_file_parity_names_in_the_folder_and_the_zip(tmp_path, eval_split):
    folder = tmp_path / "task"
    folder.mkdir()
    rows = [{"prompt": f"{k}+1=", "answer": str(k + 1)} for k in range(8)]
    (folder / "prompts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "reward.py").write_text(REWARD)
    run_id = _stored_run(tmp_path / "ws", folder, Config(eval_split=eval_split, prompts_per_step=2))
    out = export_trl(tmp_path / "ws", run_id, tmp_path / "out").folder
    parity = (out / "PARITY.md").read_text()
    named = _named_files(parity)
    assert {"train.jsonl", "grpo.yaml", "launch.sh", MODEL_FOLDER} <= named
    assert ("eval.jsonl" in named) == (eval_split > 0)
    assert named <= set(os.listdir(out)), named - set(os.listdir(out))
    archive, warnings = export_trl_zip(tmp_path / "ws", run_id)
    with zipfile.ZipFile(archive) as project:
        zipped = {name.split("/")[1] for name in project.namelist()}
    assert named <= zipped and warnings == []
    assert yaml.safe_load((out / "grpo.yaml").read_text())["model_name_or_path"] == f"./{MODEL_FOLDER}"
    assert sorted(os.listdir(out / MODEL_FOLDER)) == sorted(os.listdir(tiny_model_path()))


def test_a_local_model_folder_is_named_with_a_warning(tmp_path):
    folder = tmp_path / "task"
    folder.mkdir()
    (folder / "prompts.jsonl").write_text('{"prompt": "1+1=", "answer": "2"}\n')
    (folder / "reward.py").write_text(REWARD)
    model = tmp_path / "my-model"
    model.mkdir()
    run_id = _stored_run(tmp_path / "ws", folder, Config(model=str(model), eval_split=0.0))
    exported = export_trl(tmp_path / "ws", run_id, tmp_path / "out")
    assert MODEL_FOLDER not in os.listdir(exported.folder)
    assert yaml.safe_load((exported.folder / "grpo.yaml").read_text())["model_name_or_path"] == str(model)
    assert any("a folder of this machine" in warning for warning in exported.warnings)
    assert "a folder of this machine" in (exported.folder / "PARITY.md").read_text()


def test_every_requirement_is_pinned_to_this_environment_or_to_the_tested_version(monkeypatch):
    lines = [line for line in requirements().splitlines() if line and not line.startswith("#")]
    assert [line.split("==")[0] for line in lines] == list(PINNED)
    for line in lines:
        name, version = line.split("==")
        assert version == (TRL_VERSION if name == "trl" else importlib.metadata.version(name).split("+")[0])
    monkeypatch.setattr(export, "_installed", lambda name: None)  # an app installed without the dev extras
    assert "datasets==5.2.0" in requirements().splitlines()
