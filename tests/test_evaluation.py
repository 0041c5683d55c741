"""Held-out evaluation: pass@k by hand, the evals a run stores, and that evaluating changes no training rollout."""

import json
import shutil

import pytest
import torch

from workbench import Config, ConfigError, Store, load_task, train
from workbench.engine.evaluation import GREEDY_TOP_P, pass_at_k
from workbench.engine.policy import load_policy
from workbench.engine.rollout import sample_groups
from workbench.events import Evaluated, RunFinished
from workbench.plots import training_curves
from workbench.rewards.tasks import SAMPLE_TASKS

SMALL = dict(group_size=4, prompts_per_step=3, max_new_tokens=8, checkpoint_every=100)
EVAL = dict(eval_steps=2, eval_max_prompts=5, eval_num_generations=4)
HELD_OUT_TRACES = {"held-out reward mean", "held-out greedy", "greedy accuracy", "pass@1", "pass@4"}
ROLLOUTS = "SELECT step, group_id, sample_idx, prompt, completion, reward, advantage FROM rollouts ORDER BY ALL"


def test_pass_at_k_by_hand():
    # n = 4 samples, c correct: pass@1 = c / n; pass@4 = 1 as soon as one is correct
    assert pass_at_k(4, 1, 1) == 0.25
    assert pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(4, 0, 1) == 0.0 and pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0
    # 1 - C(2, 2) / C(4, 2) = 1 - 1/6: not the biased 1 - (1 - 2/4)^2 = 0.75
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)


def test_a_run_evaluates_every_eval_steps_and_stores_the_evals(tmp_path):
    config = Config(steps=4, **SMALL, **EVAL)
    events = list(train(config, load_task("arithmetic"), tmp_path))
    evaluated = [e for e in events if isinstance(e, Evaluated)]
    assert [e.step for e in evaluated] == [0, 2, 4]  # the base model's, then every 2 steps
    assert isinstance(events[-1], RunFinished)
    evals = Store(tmp_path).evals(events[0].run_id)
    assert evals.step.tolist() == [0, 2, 4]
    assert (evals.num_prompts == 5).all() and (evals.num_generations == 4).all()
    for column in ("reward_mean", "greedy_reward_mean", "greedy_accuracy", "pass_at_1", "pass_at_k"):
        assert evals[column].between(0, 1).all(), column  # arithmetic's reward is 0 or 1
    assert (evals.pass_at_k >= evals.pass_at_1).all()
    assert evals.pass_at_1.tolist() == pytest.approx(evals.reward_mean.tolist())  # correct means reward 1 here
    assert evals.created_at.notna().all()
    assert evaluated[1].metrics == pytest.approx(evals.drop(columns=["run_id", "created_at"]).iloc[1].to_dict())

    figure = training_curves(Store(tmp_path).steps(events[0].run_id), evals)
    held_out = {trace.name: list(trace.y) for trace in figure.data if trace.name in HELD_OUT_TRACES}
    assert held_out["held-out reward mean"] == evals.reward_mean.tolist()
    assert held_out["pass@4"] == evals.pass_at_k.tolist() and len(held_out) == len(HELD_OUT_TRACES)
    assert not HELD_OUT_TRACES & {trace.name for trace in training_curves(Store(tmp_path).steps(events[0].run_id)).data}


def test_evaluating_changes_no_training_rollout(tmp_path):
    task = load_task("arithmetic")
    list(train(Config(steps=3, seed=2, **SMALL), task, tmp_path / "plain"))
    list(train(Config(steps=3, seed=2, **SMALL, eval_steps=1, eval_max_prompts=3), task, tmp_path / "evaluated"))
    plain, evaluated = (Store(tmp_path / name).query(ROLLOUTS) for name in ("plain", "evaluated"))
    assert plain.equals(evaluated)
    assert Store(tmp_path / "evaluated").query("SELECT count(*) AS n FROM evals").n.item() == 4  # steps 0 to 3


def test_a_split_task_never_trains_on_its_held_out_prompts(tmp_path):
    folder = tmp_path / "task"
    folder.mkdir()
    shutil.copy(SAMPLE_TASKS / "arithmetic" / "reward.py", folder)
    rows = [{"prompt": f"{a}+{a}=", "answer": str(2 * a)} for a in range(10, 20)]
    (folder / "prompts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = load_task(folder)
    config = Config(steps=5, **SMALL, eval_split=0.3, eval_steps=5)
    events = list(train(config, task, tmp_path / "workspace"))
    held_out = {row["prompt"] for row in task.split(0.3).eval_rows}
    trained = set(Store(tmp_path / "workspace").query("SELECT DISTINCT prompt FROM rollouts").prompt)
    assert len(held_out) == 3 and len(trained) == 7  # 15 prompts drawn: every training prompt, none held out
    assert not held_out & trained
    assert [e.metrics["num_prompts"] for e in events if isinstance(e, Evaluated)] == [3, 3]

    rows_only = task.split(0.0)  # the folder has no eval file: evaluating needs eval_split
    with pytest.raises(ConfigError, match="no held-out prompts.*eval_split"):
        next(train(Config(steps=1, **SMALL, eval_steps=1), rows_only, tmp_path / "none"))


def test_greedy_decoding_is_the_same_under_any_seed():
    policy = load_policy(Config(**SMALL))
    prompt_ids = [policy.encode_prompt(row["prompt"]) for row in load_task("arithmetic").eval_rows[:6]]
    completions = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        completions.append(sample_groups(policy, prompt_ids, 1, 8, 1.0, GREEDY_TOP_P).completions)
    assert completions[0] == completions[1]


def test_the_cli_prints_each_evaluation(tmp_path, capsys):
    from workbench.cli import main

    flags = "--steps 2 --eval-steps 2 --eval-max-prompts 3 --group-size 2 --max-new-tokens 4".split()
    assert main(["train", "--task", "arithmetic", "--workspace", str(tmp_path), *flags]) == 0
    err = capsys.readouterr().err
    assert "step 0 held-out (3 prompts): reward" in err and "step 2 held-out (3 prompts)" in err and "pass@4" in err
