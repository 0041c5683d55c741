"""report_to: each step goes to trackio or wandb under TRL's metric names, with TRL's completions table.

A fake tracker module records what the run sends; trackio itself (a dev dependency) is written to and read back
from its local files in a subprocess, since it fixes its folder ($TRACKIO_DIR) when it is imported.
"""

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import types

import pytest

from workbench import Config, ConfigError, Store, load_task, train
from workbench.engine.trackers import PROJECT, check_tracker
from workbench.integrations.trl_settings import trl_settings

SMALL = dict(group_size=2, prompts_per_step=2, max_new_tokens=8, checkpoint_every=100)


class FakeRun:
    def __init__(self, calls):
        self.calls = calls

    def log(self, metrics, step=None):
        self.calls.append(("log", metrics, step))

    def finish(self):
        self.calls.append(("finish",))


def fake_tracker(name: str) -> types.ModuleType:
    """A module with trackio's and wandb's API (init, a Run's log and finish, Table) that records its calls."""
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.calls = []

    def init(**settings):
        module.calls.append(("init", settings))
        return FakeRun(module.calls)

    module.init = init
    module.Table = lambda dataframe: ("table", dataframe)
    return module


def test_a_run_reports_trls_metric_names_and_completions_table(tmp_path, monkeypatch):
    tracker = fake_tracker("trackio")
    monkeypatch.setitem(sys.modules, "trackio", tracker)
    events = list(train(Config(steps=2, report_to="trackio", **SMALL), load_task("arithmetic"), tmp_path))
    run_id = events[-1].run_id
    (init, *logs, finish) = tracker.calls
    assert init[1] | {"config": None} == dict(
        project=PROJECT, name=run_id, group="arithmetic", config=None, resume="allow", embed=False,
        auto_log_gpu=False, auto_log_cpu=False,
    )  # fmt: skip
    assert init[1]["config"]["report_to"] == "trackio" and finish == ("finish",)
    metrics = [call for call in logs if "completions" not in call[1]]
    tables = [call for call in logs if "completions" in call[1]]
    assert [step for _, _, step in metrics] == [1, 2] == [step for _, _, step in tables]
    stored = Store(tmp_path).query("SELECT * FROM steps ORDER BY step")
    first = metrics[0][1]
    assert first["train/global_step"] == 1
    assert first["train/reward"] == pytest.approx(stored.reward_mean[0])
    assert first["train/kl"] == pytest.approx(stored.kl[0]) and first["train/entropy"] == pytest.approx(
        stored.entropy[0]
    )
    assert first["train/completions/mean_length"] == pytest.approx(stored.completion_tokens_mean[0])
    assert first["train/clip_ratio/region_mean"] == pytest.approx(stored.clip_frac[0])
    assert {"train/reward_std", "train/loss", "train/learning_rate", "train/rewards/correct/mean"} <= set(first)
    assert {"train/completions/min_length", "train/completions/max_length", "train/frac_reward_zero_std"} <= set(first)
    table = tables[0][1]["completions"][1]
    assert list(table.columns)[:3] == ["step", "prompt", "completion"] and list(table.columns)[-1] == "advantage"
    rollouts = Store(tmp_path).query("SELECT * FROM rollouts WHERE step = 1 ORDER BY group_id, sample_idx")
    assert table.completion.tolist() == rollouts.completion.tolist()
    assert table.advantage.tolist() == pytest.approx(rollouts.advantage.tolist())
    values = Store(tmp_path).query("SELECT value FROM reward_values WHERE step = 1 AND name = 'correct'")
    assert sorted(table.correct) == sorted(values.value)


def test_trls_reward_std_is_the_batchs_and_unscored_values_are_left_out():
    from workbench.engine.trackers import trl_metrics
    from workbench.events import Group

    groups = [
        Group(0, "p", ["a", "b"], [1.0, 0.0], {"f": [1.0, 0.0], "g": [None, None]}, [0.7, -0.7], [1, 3], [False] * 2),
        Group(1, "q", ["c", "d"], [1.0, 1.0], {"f": [1.0, 1.0], "g": [None, None]}, [0.0, 0.0], [2, 2], [False] * 2),
    ]
    metrics = trl_metrics(3, {"reward_mean": 0.75, "kl": None}, groups)
    assert metrics["train/reward_std"] == pytest.approx(0.5)  # Bessel's std of 1, 0, 1, 1: as TRL's nanstd
    assert metrics["train/rewards/f/mean"] == 0.75 and "train/rewards/g/mean" not in metrics
    assert "train/kl" not in metrics and metrics["train/completions/max_length"] == 3


def test_wandb_needs_a_login_and_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", fake_tracker("wandb"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    (tmp_path / "netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    config = Config(steps=1, report_to="wandb", **SMALL)
    with pytest.raises(ConfigError, match="report_to 'wandb' needs a login"):
        list(train(config, load_task("arithmetic"), tmp_path / "ws"))
    assert Store(tmp_path / "ws").runs().empty
    monkeypatch.setenv("WANDB_MODE", "offline")
    check_tracker(config)
    events = list(train(config, load_task("arithmetic"), tmp_path / "ws"))
    init = sys.modules["wandb"].calls[0][1]
    assert init["id"] == init["name"] == events[-1].run_id and init["project"] == PROJECT


def test_a_missing_tracker_package_is_named(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match="report_to 'wandb' needs its package: pip install wandb"):
        check_tracker(Config(report_to="wandb"))
    with pytest.raises(ConfigError, match="report_to must be one of none, trackio, wandb"):
        Config(report_to="tensorboard")


def test_the_export_sets_trls_report_to():
    settings = {s.name: s for s in trl_settings(Config(report_to="trackio"), "m", ["f"], "run-1")}
    assert settings["report_to"].value == "trackio" and settings["report_to"].source == "report_to"
    assert settings["project"].value == PROJECT


READ_BACK = """
import json, sys
from trackio.sqlite_storage import SQLiteStorage
print(json.dumps(SQLiteStorage.get_logs(sys.argv[1], sys.argv[2]), default=str))
"""


@pytest.mark.slow
def test_trackio_writes_a_project_that_it_reads_back(tmp_path):
    pytest.importorskip("trackio")
    env = os.environ | {"TRACKIO_DIR": str(tmp_path / "trackio")}
    command = [sys.executable, "-m", "workbench", "train", "--task", "arithmetic", "--workspace", str(tmp_path)]
    command += ["--steps", "2", "--group-size", "2", "--prompts-per-step", "2", "--max-new-tokens", "8"]
    subprocess.run([*command, "--report-to", "trackio"], env=env, check=True, capture_output=True, timeout=300)
    run_id = Store(tmp_path).runs().run_id[0]
    read = subprocess.run(
        [sys.executable, "-c", READ_BACK, PROJECT, run_id], env=env, check=True, capture_output=True, text=True
    )
    logs = json.loads(read.stdout.strip().splitlines()[-1])
    metrics = [log for log in logs if "train/reward" in log]
    tables = [log for log in logs if "completions" in log]
    assert [log["step"] for log in metrics] == [1, 2] == [log["step"] for log in tables]
    rows = tables[0]["completions"]["_value"]
    assert len(rows) == 4 and {"step", "prompt", "completion", "correct", "advantage"} <= set(rows[0])
    stored = Store(tmp_path).query("SELECT reward_mean FROM steps ORDER BY step").reward_mean.tolist()
    assert [log["train/reward"] for log in metrics] == pytest.approx(stored)
