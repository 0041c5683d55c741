"""Health checks: each fires on a run made to trigger it and stays quiet on a healthy one.

Real tiny-model runs trigger no_signal (a reward that is always 1), truncated (one new token),
adapter_still (a learning rate of 1e-9), kl_rising (one of 0.01), clip_high (one of 0.05 with four
updates per batch) and same_completion (three-digit sums cut to their first digit: "1" to every prompt);
the trainer stores each check as it starts firing and `workbench doctor` prints it. length_collapse,
reward_hacking and kl_high take long runs to show for real, so they are checked on steps rows (and a step's
completions) whose numbers are worked out by hand, with each check's boundary.
"""

import dataclasses
import json

import duckdb
import pytest

from workbench.cli import main
from workbench.config import Config
from workbench.engine.trainer import train
from workbench.events import Finding, HealthWarning
from workbench.rewards.scoring import RewardSource
from workbench.rewards.tasks import load_task
from workbench.store import health
from workbench.store.database import Store

ALWAYS_ONE = """
def always_one(completions, **kwargs):
    return [1.0 for _ in completions]
"""


def trained(workspace, reward: str | None = None, prompts=None, **settings) -> tuple[str, list[health.Finding]]:
    """Train the tiny model on arithmetic (the rows `prompts` keeps of it); the run id and the checks reported."""
    task = load_task("arithmetic")
    if reward:
        task = task.with_rewards(RewardSource(reward))
    if prompts:
        task = dataclasses.replace(task, rows=prompts(task.rows))
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
        ("no_signal", ALWAYS_ONE, dict(steps=health.WINDOW)),
        ("truncated", None, dict(steps=2, max_new_tokens=1)),
        ("adapter_still", None, dict(steps=health.STILL_STEPS, learning_rate=1e-9)),
        ("kl_rising", None, dict(steps=2 * health.WINDOW, learning_rate=0.01)),
        pytest.param("clip_high", None, dict(steps=6, learning_rate=0.05, num_iterations=4), marks=pytest.mark.slow),
    ],
)
def test_a_run_made_to_trigger_a_check_reports_and_stores_it(tmp_path, capsys, check, reward, settings):
    run_id, findings = trained(tmp_path, reward, **settings)
    reported_stored_and_printed(tmp_path, capsys, check, run_id, findings)


def three_digit_sums(rows: list[dict]) -> list[dict]:
    return [row for row in rows if len(row["answer"]) == 3]


def test_a_run_that_gives_one_answer_to_every_prompt_names_it(tmp_path, capsys):
    """Cut to one new token, the tiny model starts every three-digit sum with "1" (14 of 16 at seed 0)."""
    run_id, findings = trained(tmp_path, prompts=three_digit_sums, steps=1, max_new_tokens=1)
    reported_stored_and_printed(tmp_path, capsys, "same_completion", run_id, findings)
    assert '"1" (' in next(f.saw for f in findings if f.check == "same_completion")
    assert any(f.check == "same_completion" for f in health.examine(Store(tmp_path), run_id))  # from the rollouts


def reported_stored_and_printed(tmp_path, capsys, check: str, run_id: str, findings: list[health.Finding]):
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
    assert health.no_signal(rows(5, frac_zero_std=0.75), CONFIG).check == "no_signal"
    assert health.no_signal(rows(5, frac_zero_std=[0.75, 0.75, 0.75, 0.75, 0.7]), CONFIG) is None  # mean 0.74
    assert health.no_signal(rows(4, frac_zero_std=1.0), CONFIG) is None  # less than a window
    assert health.truncated(rows(5, truncated_frac=0.3), CONFIG) is not None
    assert health.truncated(rows(5, truncated_frac=0.29), CONFIG) is None
    assert health.clip_high(rows(5, clip_frac=0.2), CONFIG) is not None
    assert health.clip_high(rows(5, clip_frac=0.19), CONFIG) is None

    # window medians: steps 6-10's is 0.625 (>= 0.6), exactly twice steps 1-5's 0.3125; a spike alone does not fire
    kl = [0.3125] * 5 + [0.5, 0.75, 0.625, 0.7, 0.6]
    assert "from 0.312 (median over steps 1-5) to 0.625 (steps 6-10)" in health.kl_rising(rows(10, kl=kl), CONFIG).saw
    assert health.kl_rising(rows(10, kl=[0.32] * 5 + kl[5:]), CONFIG) is None  # not doubled
    assert health.kl_rising(rows(10, kl=[0.2] * 5 + [0.59] * 5), CONFIG) is None  # doubled, below 0.6
    assert health.kl_rising(rows(10, kl=[0.05] * 9 + [1.5]), CONFIG) is None  # a spike: median 0.05
    assert health.kl_rising(rows(10, kl=[0.15] * 6 + [7.0, 0.2, 0.15, 0.3]), CONFIG) is None  # mean 1.5, median 0.2
    assert health.kl_rising(rows(10, kl=[0.15] * 5 + [0.1, 0.7, 0.8, 0.9, 0.2]), CONFIG) is not None  # median 0.7
    assert health.kl_rising(rows(9, kl=kl[1:]), CONFIG) is None  # no window before

    lengths = [10.0] * 5 + [5.0] * 5  # halved: fires at exactly 0.5
    assert "from 10.0 tokens" in health.length_collapse(rows(10, completion_tokens_mean=lengths), CONFIG).saw
    assert health.length_collapse(rows(10, completion_tokens_mean=[10.0] * 5 + [5.1] * 5), CONFIG) is None
    assert health.length_collapse(rows(10, completion_tokens_mean=[3.0] * 5 + [1.0] * 5), CONFIG) is None  # short

    assert health.adapter_still(rows(10, kl=9e-5), CONFIG).check == "adapter_still"
    assert health.adapter_still(rows(9, kl=9e-5), CONFIG) is None  # too early to tell
    assert health.adapter_still(rows(10, kl=1e-4), CONFIG) is None
    assert health.adapter_still(rows(10, kl=None), CONFIG) is None  # beta 0: no KL logged


def test_kl_high_when_kl_stays_at_its_threshold_for_a_window():
    high = health.KL_STAYS
    assert "stayed at 1.00 or more over steps 1-5" in health.kl_high(rows(5, kl=high), CONFIG).saw
    assert health.kl_high(rows(6, kl=[0.01, high, high, 2.0, high, high]), CONFIG) is not None  # not rising
    assert health.kl_high(rows(5, kl=[high, high, 0.99, high, high]), CONFIG) is None  # one step below
    assert health.kl_high(rows(4, kl=high), CONFIG) is None  # less than a window
    assert health.kl_high(rows(5, kl=None), CONFIG) is None  # beta 0: no KL logged


def step_of(prompts_completions: dict[str, list[str]], reward=lambda prompt, completion: 1.0) -> list[tuple]:
    """A step's (prompt, completion, reward) triples from each prompt's group; every completion paid 1 by default."""
    return [(p, c, reward(p, c)) for p, group in prompts_completions.items() for c in group]


def test_same_completion_names_a_string_that_takes_over_across_prompts():
    # 4 prompts x 5 completions: "s2" (spaces and newlines stripped) is 3 of each group, 12 of 20 = 60%
    hacked = step_of({p: [" s2", "s2\n", "s2", f"{p} a", f"{p} b"] for p in ("1+1=", "2+2=", "3+3=", "4+4=")})
    finding = health.same_completion(12, hacked)
    assert finding.check == "same_completion" and finding.step == 12
    assert finding.saw == '"s2" (60%): 12 of step 12\'s 20 completions (60%), given to 4 different prompts'
    assert "reward hacking" in finding.advice and "loophole" in finding.advice
    assert health.diagnose(rows(12, kl=0.01), CONFIG, (), hacked)[-1] == finding

    # exactly half fires; 9 of 20 does not (the other completions differ from prompt to prompt)
    half = step_of({p: ["s2"] * 3 + [p + "x", p + "y"] for p in "abc"} | {"d": ["s2", "dw", "dx", "dy", "dz"]})
    assert health.same_completion(1, half).saw.startswith('"s2" (50%): 10 of')
    fewer = step_of({p: ["s2"] * 3 + [p + "x", p + "y"] for p in "abc"} | {"d": ["dv", "dw", "dx", "dy", "dz"]})
    assert health.same_completion(1, fewer) is None

    # each group agreeing on its own prompt's answer is a model that learned it: 100%, no string on 3 prompts
    learned = step_of({"1+1=": ["2"] * 5, "2+2=": ["4"] * 5, "3+3=": ["6"] * 5, "4+4=": ["8"] * 5})
    assert health.same_completion(1, learned) is None
    # one string over only two prompts (50%) does not fire
    two = step_of({"a": ["s2"] * 5, "b": ["s2"] * 5, "c": list("vwxyz"), "d": list("VWXYZ")})
    assert health.same_completion(1, two) is None
    assert health.same_completion(1, []) is None

    # a string whose reward depends on the prompt is the right answer to some of them (word problems whose answer
    # is 4): 12 of 20 "4" over 4 prompts, right for two of them, does not fire; paid 0 on all four, it does
    groups = {p: ["4", "4", "4", p + "x", p + "y"] for p in ("8-4=", "2+2=", "9-4=", "1+2=")}
    assert health.same_completion(1, step_of(groups, lambda p, c: float(c == "4" and p in ("8-4=", "2+2=")))) is None
    assert health.same_completion(1, step_of(groups, lambda p, c: 0.0)).saw.startswith('"4" (60%)')


def test_same_completion_names_a_few_strings_that_take_over_together():
    # "s2" 6 of 20 (30%) over 4 prompts, "s1" 5 of 20 (25%) over 3 prompts: together 55%
    step = step_of(
        {
            "a": ["s2", "s2", "s1", "s1", "a"],
            "b": ["s2", "s2", "s1", "s1", "b"],
            "c": ["s2", "s1", "c", "cc", "ccc"],
            "d": ["s2", "d", "dd", "ddd", "dddd"],
        }
    )
    assert health.same_completion(3, step).saw == (
        '"s2" (30%) and "s1" (25%): 11 of step 3\'s 20 completions (55%), given to 4 different prompts'
    )


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


def test_a_check_that_fires_on_and_off_is_announced_again_only_after_a_quiet_spell(tmp_path, monkeypatch):
    """no_signal fires at steps 1-2, 4 (one quiet step between) and 15 (10 quiet steps after 4): announced at
    1 and 15; kl_high fires at 3 alone and is announced there."""
    from workbench.engine.records import Checkup

    fires = {1: ["no_signal"], 2: ["no_signal"], 3: ["kl_high"], 4: ["no_signal"], 15: ["no_signal"]}

    def diagnose(steps, *_):
        step = steps[-1]["step"]
        return [Finding(check, step, "what it saw", "what to try") for check in fires.get(step, [])]

    monkeypatch.setattr(health, "diagnose", diagnose)
    checkup = Checkup(Store(tmp_path), "no-run", Config())
    announced = {step: [f.check for f in checkup.after(step, {}, [])] for step in range(1, 20)}
    assert {step: checks for step, checks in announced.items() if checks} == {
        1: ["no_signal"],
        3: ["kl_high"],
        15: ["no_signal"],
    }
    assert health.QUIET == 10
