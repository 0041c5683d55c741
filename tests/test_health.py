"""Health checks: each fires on a run made to trigger it and stays quiet on a healthy one.

Real tiny-model runs trigger no_signal (a reward that is always 1), truncated (one new token),
adapter_still (a learning rate of 1e-9), kl_rising (one of 0.01) and clip_high (one of 0.05 with four
updates per batch); the trainer stores each check as it starts firing and `workbench doctor` prints it.
length_collapse and reward_hacking take long runs to show for real, so they are checked on steps rows
whose numbers are worked out by hand, with each check's boundary.
"""

import json

import duckdb
import pytest

from workbench.cli import main
from workbench.config import Config
from workbench.engine.trainer import train
from workbench.events import HealthWarning
from workbench.rewards.scoring import RewardSource
from workbench.rewards.tasks import load_task
from workbench.store import health
from workbench.store.database import Store

ALWAYS_ONE = """
def always_one(completions, **kwargs):
    return [1.0 for _ in completions]
"""


def trained(workspace, reward: str | None = None, **settings) -> tuple[str, list[health.Finding]]:
    """Train the tiny model on arithmetic; the run id and the checks the trainer reported."""
    task = load_task("arithmetic")
    if reward:
        task = task.with_rewards(RewardSource(reward))
    config = Config(prompts_per_step=4, group_size=4, precision="fp32", **settings)
    events = list(train(config, task, workspace))
    return events[0].run_id, [e.finding for e in events if isinstance(e, HealthWarning)]


def test_a_healthy_run_stays_quiet(tmp_path):
    run_id, findings = trained(tmp_path, steps=12)
    assert findings == []
    assert health.examine(Store(tmp_path), run_id) == []
    assert main(["doctor", run_id, "--workspace", str(tmp_path)]) == 0


@pytest.mark.parametrize(
    "check, reward, settings",
    [
        ("no_signal", ALWAYS_ONE, dict(steps=2)),
        ("truncated", None, dict(steps=2, max_new_tokens=1)),
        ("adapter_still", None, dict(steps=health.STILL_STEPS, learning_rate=1e-9)),
        ("kl_rising", None, dict(steps=8, learning_rate=0.01)),
        pytest.param("clip_high", None, dict(steps=6, learning_rate=0.05, num_iterations=4), marks=pytest.mark.slow),
    ],
)
def test_a_run_made_to_trigger_a_check_reports_and_stores_it(tmp_path, capsys, check, reward, settings):
    run_id, findings = trained(tmp_path, reward, **settings)
    assert check in [f.check for f in findings]
    stored = Store(tmp_path).health(run_id)
    assert check in stored.name.tolist()
    assert stored.saw.str.len().gt(20).all() and stored.advice.str.len().gt(20).all()

    assert main(["doctor", run_id, "--workspace", str(tmp_path)]) in (0, 1)
    printed = capsys.readouterr().out
    assert check in printed  # firing now ("try: ..."), or earlier


def rows(n: int, **columns) -> list[dict]:
    """n steps rows; a column given as a list varies by step, a number stays."""
    return [{"step": s + 1} | {k: v[s] if isinstance(v, list) else v for k, v in columns.items()} for s in range(n)]


CONFIG = Config().to_dict()


def test_each_check_at_its_boundary():
    assert health.no_signal(rows(5, frac_zero_std=0.6), CONFIG).check == "no_signal"
    assert health.no_signal(rows(5, frac_zero_std=[0.6, 0.6, 0.6, 0.6, 0.55]), CONFIG) is None  # mean 0.59
    assert health.truncated(rows(5, truncated_frac=0.3), CONFIG) is not None
    assert health.truncated(rows(5, truncated_frac=0.29), CONFIG) is None
    assert health.clip_high(rows(5, clip_frac=0.2), CONFIG) is not None
    assert health.clip_high(rows(5, clip_frac=0.19), CONFIG) is None

    kl = [0.05, 0.06, 0.07, 0.08, 0.09, 0.10]  # step 6 against step 1: 0.10 >= 0.1 and >= 2 x 0.05
    assert "0.050 at step 1 to 0.100" in health.kl_rising(rows(6, kl=kl), CONFIG).saw
    assert health.kl_rising(rows(6, kl=[0.051, *kl[1:]]), CONFIG) is None  # not doubled
    assert health.kl_rising(rows(6, kl=[0.04, *kl[1:5], 0.09]), CONFIG) is None  # doubled, below 0.1
    assert health.kl_rising(rows(5, kl=kl[:5]), CONFIG) is None  # no window before

    lengths = [10.0] * 5 + [5.0] * 5  # halved: fires at exactly 0.5
    assert "from 10.0 tokens" in health.length_collapse(rows(10, completion_tokens_mean=lengths), CONFIG).saw
    assert health.length_collapse(rows(10, completion_tokens_mean=[10.0] * 5 + [5.1] * 5), CONFIG) is None
    assert health.length_collapse(rows(10, completion_tokens_mean=[3.0] * 5 + [1.0] * 5), CONFIG) is None  # short

    assert health.adapter_still(rows(10, kl=9e-5), CONFIG).check == "adapter_still"
    assert health.adapter_still(rows(9, kl=9e-5), CONFIG) is None  # too early to tell
    assert health.adapter_still(rows(10, kl=1e-4), CONFIG) is None
    assert health.adapter_still(rows(10, kl=None), CONFIG) is None  # beta 0: no KL logged


def test_reward_hacking_from_diverging_functions_or_held_out_reward():
    format_up = [json.dumps({"format": 0.2 if s < 5 else 0.5, "correct": 0.6 if s < 5 else 0.45}) for s in range(10)]
    finding = health.reward_hacking(rows(10, reward_function_means=format_up), [])
    assert "format rose by 0.30 while correct fell by 0.15" in finding.saw
    both_up = [json.dumps({"format": 0.2 if s < 5 else 0.5, "correct": 0.6 if s < 5 else 0.55}) for s in range(10)]
    assert health.reward_hacking(rows(10, reward_function_means=both_up), []) is None

    rising = [0.3] * 5 + [0.5] * 5
    evals = [{"step": 0, "reward_mean": 0.4}, {"step": 10, "reward_mean": 0.25}]
    assert "held-out reward fell by 0.15" in health.reward_hacking(rows(10, reward_mean=rising), evals).saw
    evals[1]["reward_mean"] = 0.35
    assert health.reward_hacking(rows(10, reward_mean=rising), evals) is None


def test_doctor_names_a_missing_run(tmp_path, capsys):
    Store(tmp_path)
    assert main(["doctor", "nope", "--workspace", str(tmp_path)]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


def test_doctor_brings_an_older_store_up_to_date(tmp_path, capsys):
    """A store of schema 5 has no `health` table: doctor migrates it rather than failing on it."""
    run_id, _ = trained(tmp_path, steps=1)
    with duckdb.connect(str(tmp_path / "store.duckdb")) as con:
        con.execute("DROP TABLE health; DROP TABLE tokens; UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    assert main(["doctor", run_id, "--workspace", str(tmp_path)]) == 0
    assert "no health check fires" in capsys.readouterr().out
    assert Store(tmp_path).health(run_id).empty
