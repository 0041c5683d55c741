"""Data-parallel training under torchrun, on CPU with gloo and two processes.

Proves: a step's groups are the same on one process or two, and the adapter after each step equals the
one-process run's on the same global batch (fp32, to 1e-5; the weights are ~6e-2); every stored step has
all P x G rollouts; a process that dies mid-run stops the run with a message naming what happened, keeps
its finished steps, and the run resumes under torchrun; settings that cannot split are refused by name.
And what the equality rests on: a group's draws are its own (tests/test_rollout.py), so a dry run samples
exactly what the run's first step samples.
"""

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from workbench.cli import progress
from workbench.config import Config, ConfigError
from workbench.engine import distributed, trainer
from workbench.engine.checkpoint import checkpoint_folder
from workbench.engine.dryrun import dry_run
from workbench.engine.trainer import train
from workbench.events import GroupsScored
from workbench.rewards.tasks import load_task
from workbench.store.database import Store

ROOT = Path(__file__).parent.parent
P, G = 4, 4
SETTINGS = ["--task", "arithmetic", "--prompts-per-step", str(P), "--group-size", str(G), "--precision", "fp32"]


def workbench_train(
    workspace: Path, *arguments: str, processes: int = 1, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`python -m workbench train`, or under `torchrun --standalone --nproc-per-node N` (a free port)."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    command = [*launcher, "-m", "workbench", "train", *arguments, "--workspace", str(workspace)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)


def only_run(workspace: Path) -> dict:
    runs = Store(workspace).runs()
    assert len(runs) == 1
    return Store(workspace).run(runs.run_id[0])


def rollouts(workspace: Path):
    return Store(workspace).query("SELECT * FROM rollouts ORDER BY step, group_id, sample_idx")


def adapter(workspace: Path, run_id: str) -> dict[str, torch.Tensor]:
    return load_file(checkpoint_folder(workspace, run_id) / "adapter_model.safetensors")


@pytest.mark.slow
def test_two_processes_train_as_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert workbench_train(one, *SETTINGS, "--steps", "2").returncode == 0
    result = workbench_train(two, *SETTINGS, "--steps", "2", processes=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("finished at step 2") == 1  # rank 0 reports for both

    single, split = rollouts(one), rollouts(two)
    assert len(split) == 2 * P * G  # every rank's groups, every step
    assert split.groupby("step").group_id.unique().map(list).tolist() == [list(range(P))] * 2
    for column in ("prompt", "completion", "reward"):
        assert split[column].tolist() == single[column].tolist()  # step 2 too: the adapters agreed after step 1
    assert split.advantage.to_numpy() == pytest.approx(single.advantage.to_numpy(), abs=1e-6)

    steps = [Store(w).steps(only_run(w)["run_id"]) for w in (one, two)]
    for column in ("reward_mean", "reward_std", "frac_zero_std", "completion_tokens_mean", "entropy"):
        assert steps[1][column].tolist() == pytest.approx(steps[0][column].tolist(), rel=1e-6)
    for column in ("loss", "kl", "grad_norm", "clip_frac"):  # all-reduced: the whole batch's, not rank 0's half
        assert steps[1][column].tolist() == pytest.approx(steps[0][column].tolist(), rel=1e-4, abs=1e-8)

    tokens = [Store(w).query("SELECT * FROM tokens ORDER BY step, group_id, sample_idx") for w in (one, two)]
    assert len(tokens[1]) == 2 * P * G  # every rank's completions, every step
    assert [list(t) for t in tokens[1].tokens] == [list(t) for t in tokens[0].tokens]
    for stored, expected in zip(tokens[1].logprob, tokens[0].logprob):
        assert list(stored) == pytest.approx(list(expected), abs=1e-5)

    single_adapter, split_adapter = (adapter(w, only_run(w)["run_id"]) for w in (one, two))
    assert single_adapter.keys() == split_adapter.keys()
    for name, weight in single_adapter.items():
        assert weight.abs().max() > 0
        torch.testing.assert_close(split_adapter[name], weight, atol=1e-5, rtol=0)


KILLER = """
import os, signal

def correct(completions, answer, trainer_state, **kwargs):
    if os.environ["RANK"] == "1" and trainer_state.global_step == 1:  # step 2, on the second process
        os.kill(os.getppid(), signal.SIGKILL)  # the rank's process dies, as an out-of-memory kill would
    return [1.0 if c.strip() == str(a) else 0.0 for c, a in zip(completions, answer)]
"""


@pytest.mark.slow
def test_a_process_that_dies_stops_the_run_and_it_resumes(tmp_path):
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    arguments = [*SETTINGS, "--steps", "3", "--checkpoint-every", "1"]
    # bwrap off the PATH: in the sandbox a reward cannot reach its rank's process, which is what the killer does
    unsandboxed = {**os.environ, "PATH": os.path.dirname(sys.executable)}
    result = workbench_train(tmp_path, *arguments, "--reward", str(killer), processes=2, env=unsandboxed)
    assert result.returncode != 0 and "failed at step 2" in result.stderr, result.stderr[-3000:]
    run = only_run(tmp_path)
    assert run["status"] == "failed"
    assert "another process of this 2-process run stopped" in run["error"]
    assert "failed at step 2: another process" in result.stderr
    assert "torchrun --nproc-per-node 2 -m workbench train" in result.stderr  # the resume line, launched alike
    assert rollouts(tmp_path).step.unique().tolist() == [1]  # step 1 kept, whole

    healthy = load_task("arithmetic").folder + "/reward.py"
    resumed = workbench_train(tmp_path, "--resume", run["run_id"], "--reward", healthy, processes=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert only_run(tmp_path)["status"] == "finished"
    assert rollouts(tmp_path).groupby("step").size().tolist() == [P * G] * 3


@pytest.fixture
def torchrun_sigterm():
    """This process handles SIGTERM as a torchrun rank does (`distributed.setup`)."""
    previous = signal.signal(signal.SIGTERM, distributed._stop)
    yield
    signal.signal(signal.SIGTERM, previous)


class SigtermWhileDrawing(progress.tqdm):
    """A progress bar during which torchrun's SIGTERM arrives: at step 1's update, or as the bar closes."""

    at = "update"

    def update(self, n=1):
        super().update(n)
        if self.at == "update" and self.n == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    def close(self):
        if self.at == "close" and not self.disable:
            os.kill(os.getpid(), signal.SIGTERM)
        super().close()


@pytest.mark.parametrize("at", ["update", "close"])
def test_a_sigterm_in_the_progress_bar_still_fails_the_run_with_its_report(
    tmp_path, monkeypatch, capsys, torchrun_sigterm, at
):
    """When another process dies, torchrun's SIGTERM raises ProcessStopped wherever rank 0 is, and the test
    above can lose that race. At step 1's progress (update) the run is handed the stop and fails at step 2
    as its own failure, rather than being closed as stopped. After the run failed on its own (close: here
    a RuntimeError at step 2, as gloo raises when a peer is gone), the SIGTERM no longer cuts its report."""
    monkeypatch.setattr(SigtermWhileDrawing, "at", at)
    monkeypatch.setattr(progress, "tqdm", SigtermWhileDrawing)
    if at == "close":
        update_policy = trainer.update_policy

        def update_then_lose_a_peer(learner, batch, advantages, config):
            if batch.step == 2:
                raise RuntimeError("Connection closed by peer")
            return update_policy(learner, batch, advantages, config)

        monkeypatch.setattr(trainer, "update_policy", update_then_lose_a_peer)
    config = Config(prompts_per_step=P, group_size=G, steps=3, precision="fp32")
    events = train(config, load_task("arithmetic"), tmp_path)
    follow = functools.partial(progress.follow, config=config, workspace=str(tmp_path))
    try:
        assert progress.follow_to_the_end(events, follow) == 1
    finally:
        events.close()
    error = "ProcessStopped: torchrun stopped this process" if at == "update" else "RuntimeError: Connection closed"
    stderr = capsys.readouterr().err
    assert f"failed at step 2: {error}" in stderr and "resume with: python -m workbench train" in stderr
    run = only_run(tmp_path)
    assert run["status"] == "failed" and error in run["error"]
    assert rollouts(tmp_path).step.unique().tolist() == [1]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # the run ended: a later SIGTERM waits for SIGKILL


RAISER = """
import os

def correct(completions, answer, trainer_state, **kwargs):
    if os.environ["RANK"] == "1" and trainer_state.global_step == 1:
        raise ValueError("no answer on rank 1")
    return [1.0 if c.strip() == str(a) else 0.0 for c, a in zip(completions, answer)]
"""


@pytest.mark.slow
def test_a_reward_that_raises_on_one_rank_pauses_the_run_on_every_rank(tmp_path):
    raiser = tmp_path / "raiser.py"
    raiser.write_text(RAISER)
    result = workbench_train(tmp_path, *SETTINGS, "--steps", "3", "--reward", str(raiser), processes=2)
    assert result.returncode != 0
    assert "paused at step 2: reward function correct" in result.stderr and "no answer on rank 1" in result.stderr
    run = only_run(tmp_path)
    assert run["status"] == "paused" and "no answer on rank 1" in run["error"]
    assert rollouts(tmp_path).groupby("step").size().tolist() == [P * G]  # step 1 whole; step 2 redone on resume


@pytest.mark.slow
def test_accelerate_launch_runs_it_alike(tmp_path):
    """accelerate launch sets up the same environment as torchrun (--multi_gpu: its launcher, gloo on CPU)."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command = [*launcher, "-m", "workbench", "train", *SETTINGS, "--steps", "1", "--workspace", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert only_run(tmp_path)["status"] == "finished"
    assert rollouts(tmp_path).group_id.tolist() == [g for g in range(P) for _ in range(G)]


@pytest.mark.slow
def test_what_cannot_split_is_refused_by_name(tmp_path, monkeypatch):
    result = workbench_train(tmp_path, *SETTINGS[:2], "--prompts-per-step", "3", "--steps", "1", processes=2)
    assert result.returncode != 0
    assert "prompts_per_step (3) must divide among the 2 processes" in result.stderr

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(ConfigError, match="dynamic_sampling runs in one process"):
        distributed.check(Config(prompts_per_step=4, dynamic_sampling=True))
    with pytest.raises(ConfigError, match="advantage_estimator 'ppo' runs in one process"):
        distributed.check(Config(prompts_per_step=4, advantage_estimator="ppo", scale_rewards="batch"))
    distributed.check(Config(prompts_per_step=4))


def test_a_dry_run_samples_what_step_one_samples(tmp_path):
    config = Config(prompts_per_step=P, group_size=G, steps=1, precision="fp32")
    task = load_task("arithmetic")
    dry = dry_run(config, task, num_prompts=P)
    scored = next(e for e in list(train(config, task, tmp_path)) if isinstance(e, GroupsScored))
    assert [g.completions for g in dry.groups] == [g.completions for g in scored.groups]
