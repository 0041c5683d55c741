"""A TRL GRPOTrainer run watched by `workbench.integrations.trl.watch`: 3 steps on the tiny model, on a CPU.

Proves: the store holds the run (finished, its config readable as a workbench Config), a steps row per
optimizer step with TRL's logged metrics, every group of every step (P x G rollouts) with each reward
function's value and the advantage TRL's loss used (checked against TRL's formula recomputed from the
stored rewards), `workbench query` reads them from another process and the app's readers show them; a
run whose reward raises is marked failed with its finished steps kept; and under torchrun with two
processes rank 0 stores every rank's groups.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

from workbench.config import Config  # noqa: E402
from workbench.engine.tiny import tiny_model_path  # noqa: E402
from workbench.rewards.tasks import load_task  # noqa: E402
from workbench.store.database import Store  # noqa: E402

P, G, STEPS = 2, 4, 3


def task_reward():
    """The arithmetic task's `correct`, imported from its reward.py as a TRL script would."""
    path = load_task("arithmetic").folder + "/reward.py"
    spec = importlib.util.spec_from_file_location("arithmetic_reward", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.correct


def length_penalty(completions, **kwargs):
    """A second function, so that the weighted sum and each function's values are both checked."""
    return [-0.01 * len(c) for c in completions]


def grpo_trainer(workspace, reward_funcs, reward_weights=None, per_device=P * G):
    """TRL's GRPOTrainer on the tiny model: P prompts x G completions per optimizer step, LoRA, CPU."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    rows = load_task("arithmetic").rows[: P * STEPS]
    args = GRPOConfig(
        output_dir=str(workspace / "trl_output"),
        use_cpu=True,
        bf16=False,
        max_steps=STEPS,
        per_device_train_batch_size=per_device,  # completions per step and process: P prompts x G in all
        num_generations=G,
        max_completion_length=8,
        learning_rate=1e-3,
        beta=0.04,
        reward_weights=reward_weights,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    model = str(tiny_model_path())
    return GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model),
        processing_class=AutoTokenizer.from_pretrained(model),
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=Dataset.from_list(rows),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    from workbench.integrations.trl import watch

    workspace = tmp_path_factory.mktemp("trl")
    trainer = grpo_trainer(workspace, [task_reward(), length_penalty], reward_weights=[1.0, 0.5])
    run_id = watch(trainer, workspace=workspace)
    trainer.train()
    return workspace, run_id, Store(workspace), trainer.state.log_history


def test_the_run_is_stored_finished_with_a_workbench_config(watched):
    workspace, run_id, store, _ = watched
    run = store.run(run_id)
    assert run["status"] == "finished" and run["error"] is None
    config = Config.from_dict(run["config"])  # what the app does with every run
    assert (config.group_size, config.prompts_per_step, config.max_new_tokens, config.steps) == (G, P, 8, STEPS)
    assert (config.lora_rank, config.beta, config.learning_rate) == (4, 0.04, 1e-3)
    assert config.reward_weights == {"correct": 1.0, "length_penalty": 0.5}
    assert "def correct(" in run["reward_source"]
    trl_args = json.loads((workspace / "runs" / run_id / "trl_args.json").read_text())
    assert trl_args["num_generations"] == G and trl_args["loss_type"] == "dapo"  # TRL's own, kept in full


def test_every_step_has_trls_metrics(watched):
    _, run_id, store, history = watched
    steps = store.steps(run_id)
    logged = [entry for entry in history if "reward" in entry]
    assert steps.reward_mean.to_numpy() == pytest.approx([entry["reward"] for entry in logged], abs=1e-5)
    assert steps.kl.to_numpy() == pytest.approx([entry["kl"] for entry in logged])
    assert steps.truncated_frac.to_numpy() == pytest.approx([entry["completions/clipped_ratio"] for entry in logged])
    assert steps.step.tolist() == [1, 2, 3]
    assert (
        steps[["reward_mean", "reward_std", "loss", "kl", "learning_rate", "completion_tokens_mean"]]
        .notna()
        .all()
        .all()
    )
    assert set(steps.reward_function_means[0]) == {"correct", "length_penalty"}


def test_every_group_is_stored_with_the_advantages_trl_used(watched):
    _, run_id, store, _ = watched
    rollouts = store.query("SELECT * FROM rollouts WHERE run_id = $1 ORDER BY step, group_id, sample_idx", [run_id])
    assert len(rollouts) == STEPS * P * G
    counts = rollouts.groupby(["step", "group_id"]).size()
    assert counts.index.tolist() == [(s, g) for s in (1, 2, 3) for g in range(P)] and (counts == G).all()
    assert rollouts.groupby(["step", "group_id"]).prompt.nunique().eq(1).all()  # a group is one prompt's G
    assert (rollouts.num_tokens.between(1, 8)).all() and rollouts.completion_ids.map(len).eq(rollouts.num_tokens).all()
    # reward = TRL's weighted sum of the functions' values, each stored under its name
    values = store.query("SELECT * FROM reward_values WHERE run_id = $1", [run_id])
    wide = values.pivot_table(index=["step", "group_id", "sample_idx"], columns="name", values="value")
    weighted = (wide["correct"] * 1.0 + wide["length_penalty"] * 0.5).to_numpy()
    assert weighted == pytest.approx(rollouts.reward.to_numpy(), abs=1e-6)
    # the advantage TRL's loss used: scale_rewards 'group', (r - mean) / (std + 1e-4), std with Bessel's correction
    grouped = rollouts.groupby(["step", "group_id"]).reward
    expected = (rollouts.reward - grouped.transform("mean")) / (grouped.transform("std") + 1e-4)
    assert rollouts.advantage.to_numpy() == pytest.approx(expected.to_numpy(), abs=1e-4)
    assert rollouts.advantage.abs().sum() > 0  # the check has teeth: some group's rewards differ
    steps = store.steps(run_id)
    assert steps.reward_mean.to_numpy() == pytest.approx(rollouts.groupby("step").reward.mean().to_numpy(), abs=1e-5)


def test_workbench_query_reads_the_run(watched):
    workspace, run_id, _, _ = watched
    command = [sys.executable, "-m", "workbench", "query", "--workspace", str(workspace), "--format", "csv"]
    sql = f"SELECT count(*) AS n, count(DISTINCT step) AS steps FROM rollouts WHERE run_id = '{run_id}'"
    result = subprocess.run([*command, sql], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == f"{STEPS * P * G},{STEPS}"


def test_the_app_reads_it_like_its_own_runs(watched):
    from workbench.plots import training_curves
    from workbench.ui.group_view import stored_group_html

    _, run_id, store, _ = watched
    runs = store.runs()
    row = runs[runs.run_id == run_id].iloc[0]
    assert (row.status, row.last_step, row.steps) == ("finished", STEPS, STEPS)
    group = store.group(run_id, 2, 1)
    assert set(group.reward_values) == {"correct", "length_penalty"} and len(group.completions) == G
    config = Config.from_dict(store.run(run_id)["config"])
    assert "advantage" in stored_group_html(group, run_id, 2, 1, config)
    assert training_curves(store.steps(run_id), store.evals(run_id)).data  # the Runs tab's curves


def test_doctor_checks_a_trl_run(watched, capsys):
    """The health checks read TRL's mapped steps as the workbench's own (exit 1 when one fires, e.g. no_signal)."""
    from workbench.cli import main

    workspace, run_id, _, _ = watched
    assert main(["doctor", run_id, "--workspace", str(workspace)]) in (0, 1)
    printed = capsys.readouterr().out
    assert f"run {run_id}: finished, {STEPS} steps" in printed
    assert "no health check fires" in printed or "try:" in printed


def test_the_tokens_command_says_a_trl_run_has_no_token_stats(watched, capsys):
    from workbench.cli import main

    workspace, run_id, _, _ = watched
    assert main(["tokens", run_id, "--workspace", str(workspace)]) == 2
    assert f"run {run_id} stored no token stats for group 0 of step {STEPS} (a watched TRL run stores none)" in (
        capsys.readouterr().err
    )


def test_a_failing_run_is_marked_failed_with_its_steps_kept(tmp_path):
    from workbench.integrations.trl import watch

    def flaky(completions, trainer_state, **kwargs):
        if trainer_state.global_step == 1:  # the second step's scoring
            raise ValueError("flaky reward broke")
        return [0.0] * len(completions)

    trainer = grpo_trainer(tmp_path, [flaky])
    run_id = watch(trainer, workspace=tmp_path)
    with pytest.raises(ValueError, match="flaky reward broke"):
        trainer.train()
    store = Store(tmp_path)
    run = store.run(run_id)
    assert run["status"] == "failed" and "flaky reward broke" in run["error"]
    assert store.steps(run_id).step.tolist() == [1]
    from workbench.engine.runner import latest_resumable

    assert latest_resumable(store) is None  # TRL keeps its own checkpoints: the app offers no Resume for it


TWO_PROCESSES = """
import sys
from pathlib import Path

from tests.test_trl_watch import grpo_trainer, task_reward
from workbench.integrations.trl import watch

trainer = grpo_trainer(Path(sys.argv[1]), [task_reward()], per_device=P * G // 2)
print("run", trainer.accelerator.process_index, watch(trainer, workspace=sys.argv[1]), flush=True)
trainer.train()
trainer.accelerator.end_training()  # leaves the process group: without it gloo can abort the process at exit
"""


@pytest.mark.slow
def test_two_processes_rank_0_gathers_every_group(tmp_path):
    """Under torchrun (gloo on CPU), each rank scores half of a step's completions; rank 0 stores all of them."""
    script = tmp_path / "two.py"
    script.write_text(TWO_PROCESSES.replace("P * G", str(P * G)))
    # --standalone: a free port, not 29500, which another test's torchrun may hold
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)]
    root = str(Path(__file__).parent.parent)  # the script imports this module as tests.test_trl_watch
    env = os.environ | {"PYTHONPATH": root}
    result = subprocess.run([*command, str(tmp_path)], capture_output=True, text=True, cwd=root, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run_ids = {line.split()[2] for line in result.stdout.splitlines() if line.startswith("run ")}
    assert len(run_ids) == 1  # every rank returns rank 0's run id
    run_id = run_ids.pop()
    store = Store(tmp_path)
    assert store.run(run_id)["config"]["prompts_per_step"] == P
    rollouts = store.query("SELECT * FROM rollouts WHERE run_id = $1", [run_id])
    assert len(rollouts) == STEPS * P * G
    assert rollouts.groupby(["step", "group_id"]).prompt.nunique().eq(1).all()
    grouped = rollouts.groupby(["step", "group_id"]).reward
    expected = (rollouts.reward - grouped.transform("mean")) / (grouped.transform("std") + 1e-4)
    assert rollouts.advantage.to_numpy() == pytest.approx(expected.to_numpy(), abs=1e-4)
