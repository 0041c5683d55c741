"""The app's runner on the tiny model: one run at a time, a paused run resumed with a fixed reward,
its curves continuing from the stored steps."""

import time

import pytest

from workbench import Config, load_task
from workbench.engine.runner import Runner
from workbench.rewards.scoring import RewardSource
from workbench.rewards.tasks import TaskError

CONFIG = Config(steps=3, group_size=4, prompts_per_step=2, max_new_tokens=6, checkpoint_every=100)
SCORE = "    return [float(c.strip() == a) for c, a in zip(completions, answer)]\n"
FIXED = "def correct(completions, answer, **kwargs):\n" + SCORE
BROKEN_AT_STEP_2 = (
    "def correct(completions, answer, trainer_state, **kwargs):\n"
    "    if trainer_state.global_step == 1:\n"
    "        raise ValueError('step two')\n" + SCORE
)


def wait(runner, *statuses, timeout=120):
    deadline = time.monotonic() + timeout
    while runner.busy or runner.snapshot.status not in statuses:
        assert time.monotonic() < deadline, runner.snapshot
        time.sleep(0.1)
    return runner.snapshot


def test_a_paused_run_resumes_with_a_fixed_reward_and_keeps_its_curves(tmp_path):
    runner = Runner(str(tmp_path))
    task = load_task("arithmetic")
    runner.start(CONFIG, task.with_rewards(RewardSource(BROKEN_AT_STEP_2, "reward.py")))
    with pytest.raises(RuntimeError, match="one run trains at a time"):
        runner.start(CONFIG, task)
    paused = wait(runner, "paused")
    assert paused.step == 1 and "raised ValueError: step two" in paused.error
    run_id = paused.run_id

    runner.resume(run_id, RewardSource(FIXED, "reward.py"))
    finished = wait(runner, "finished")
    assert finished.run_id == run_id and finished.step == 3
    assert [m["step"] for m in finished.history] == [1, 2, 3]  # step 1 read back from the store
    assert finished.last_groups.step == 3 and finished.config["steps"] == 3
    with pytest.raises(TaskError, match="finished all its 3 steps"):
        runner.resume(run_id, RewardSource(FIXED, "reward.py"))


def test_a_run_paused_at_its_first_step_resumes(tmp_path):
    """A reward that fails on the very first step pauses the run with nothing stored; Resume redoes step 1."""
    broken = (  # the checks before training score a few made-up completions (`probes`); step 1 scores 8
        "def correct(completions, answer, **kwargs):\n"
        "    if len(completions) == 8:\n"
        "        raise ValueError('first step')\n" + SCORE
    )
    runner = Runner(str(tmp_path))
    runner.start(CONFIG, load_task("arithmetic").with_rewards(RewardSource(broken, "reward.py")))
    paused = wait(runner, "paused")
    assert paused.step == 0 and "raised ValueError: first step" in paused.error
    runner.resume(paused.run_id, RewardSource(FIXED, "reward.py"))
    finished = wait(runner, "finished")
    assert finished.run_id == paused.run_id and [m["step"] for m in finished.history] == [1, 2, 3]
