"""Reward code failing on purpose in real runs on the tiny model: the run pauses, nothing is lost, a fix resumes it."""

import json
import queue

import pytest
import torch

from workbench import Config, Store, load_task, train
from workbench.engine.checkpoint import checkpoint_folder
from workbench.events import GroupsScored, RunFinished, RunPaused, StepFinished
from workbench.rewards.scoring import RewardError, RewardSource
from workbench.rewards.tasks import Task

SMALL = dict(group_size=4, prompts_per_step=3, max_new_tokens=8, checkpoint_every=100)
CONFIG = Config(steps=3, reward_time_limit=2.0, reward_memory_mb=256, **SMALL)
CORRECT = "    return [1.0 if c.strip() == a else 0.0 for c, a in zip(completions, answer)]\n"
# Each body breaks at step 2 only (trainer_state.global_step == 1), on the completions that contain a "1".
BROKEN = {
    "raise": ("if '1' in c: raise KeyError(c)", "raised KeyError"),
    "infinite loop": ("while '1' in c: pass", "ran longer than its time limit of 2 s"),
    "nan": ("if '1' in c: return [float('nan') if '1' in x else 0.0 for x in completions]", "returned nan"),
    "os._exit": ("if '1' in c: __import__('os')._exit(3)", "ended the reward worker process with exit code 3"),
    "memory bomb": ("if '1' in c: [bytearray(10**7) for _ in range(10**4)]", "ran out of memory"),
}


def source(body: str) -> RewardSource:
    text = (
        "def correct(completions, answer, trainer_state, **kwargs):\n"
        "    print('scoring step', trainer_state.global_step + 1)\n"
        "    for c in completions:\n"
        f"        if trainer_state.global_step == 1:\n            {body}\n" + CORRECT
    )
    return RewardSource(text, "reward.py")


def stored(workspace, sql):
    return Store(workspace).query(sql)


@pytest.mark.parametrize(
    "mode", [pytest.param(m, marks=pytest.mark.slow) if m == "infinite loop" else m for m in BROKEN]
)  # the infinite loop waits out reward_time_limit
def test_a_failing_reward_pauses_the_run_keeps_what_it_logged_and_a_fix_resumes_it(tmp_path, mode):
    body, problem = BROKEN[mode]
    task = load_task("arithmetic")
    events = list(train(CONFIG, task.with_rewards(source(body)), tmp_path))
    paused = events[-1]
    assert isinstance(paused, RunPaused) and paused.step == 2
    failure = paused.failure
    assert failure.function == "correct" and problem in failure.problem
    assert "1" in failure.completion and failure.output.startswith("scoring step 2\n")
    if mode not in ("os._exit", "nan"):  # a dead process leaves no traceback; a bad value has none
        assert 'File "reward.py", line 5, in correct' in failure.traceback
    run = Store(tmp_path).run(paused.run_id)
    assert run["status"] == "paused" and problem in run["error"]
    step_one = stored(tmp_path, "SELECT * FROM rollouts ORDER BY ALL")
    assert step_one["step"].unique().tolist() == [1]
    state = torch.load(checkpoint_folder(tmp_path, paused.run_id) / "trainer_state.pt", weights_only=True)
    assert state["step"] == 1

    fixed = task.with_rewards(RewardSource("def correct(completions, answer, **kwargs):\n" + CORRECT, "reward.py"))
    resumed = list(train(CONFIG, fixed, tmp_path, resume=paused.run_id))
    assert resumed[0].start_step == 2 and isinstance(resumed[-1], RunFinished) and resumed[-1].step == 3
    after = stored(tmp_path, "SELECT * FROM rollouts ORDER BY ALL")
    assert after[after["step"] == 1].reset_index(drop=True).equals(step_one)  # nothing logged is lost
    step_two = after[after["step"] == 2]["completion"].tolist()  # redone: the same RNG, the same completions
    first_with_one = next(i for i, c in enumerate(step_two) if "1" in c)
    assert (failure.completion_index, failure.completion) == (first_with_one, step_two[first_with_one])
    versions = stored(tmp_path, "SELECT step, any_value(reward_version) AS v FROM rollouts GROUP BY step ORDER BY step")
    assert versions["v"].tolist() == [source(body).version, fixed.rewards.version, fixed.rewards.version]
    assert Store(tmp_path).run(paused.run_id)["error"] is None


def test_a_wrong_length_pauses_with_no_completion_named(tmp_path):
    body = "return [1.0]"
    events = list(train(CONFIG, load_task("arithmetic").with_rewards(source(body)), tmp_path))
    failure = events[-1].failure
    assert failure.problem.startswith("returned 1 value for 12 completions") and failure.completion is None
    assert failure.location == "reward.py, line 1"  # the def line: the whole list is wrong, not one value


def test_a_broken_source_is_refused_before_any_training(tmp_path):
    task = load_task("arithmetic").with_rewards(RewardSource("def correct(completions):\n    return []\n"))
    with pytest.raises(RewardError, match=r"correct \(reward.py, line 1\): its signature has no \*\*kwargs"):
        next(train(CONFIG, task, tmp_path))
    assert stored(tmp_path, "SELECT count(*) AS n FROM runs")["n"].item() == 0


def test_prints_are_kept_with_each_step_and_a_swapped_reward_scores_from_the_next_step(tmp_path):
    first = source("pass")
    second = RewardSource("def length(completions, **kwargs):\n    return [float(len(c)) for c in completions]\n")
    swaps = queue.Queue()
    events = []
    for event in train(CONFIG, load_task("arithmetic").with_rewards(first), tmp_path, new_rewards=swaps):
        events.append(event)
        if isinstance(event, StepFinished) and event.step == 1:
            swaps.put(second)
    scored = [e for e in events if isinstance(e, GroupsScored)]
    assert [list(e.groups[0].reward_values) for e in scored] == [["correct"], ["length"], ["length"]]
    assert scored[0].reward_output == {"correct": "scoring step 1\n"} and scored[1].reward_output == {}
    logs = stored(tmp_path, "SELECT step, name, output FROM reward_logs ORDER BY step")
    assert logs.values.tolist() == [[1, "correct", "scoring step 1\n"]]
    per_step = stored(tmp_path, "SELECT step, any_value(reward_version) AS v FROM rollouts GROUP BY step ORDER BY 1")
    assert per_step["v"].tolist() == [first.version, second.version, second.version]
    versions = stored(tmp_path, "SELECT version, source FROM reward_versions ORDER BY created_at")
    assert versions.values.tolist() == [[first.version, first.text], [second.version, second.text]]
    lengths = stored(tmp_path, "SELECT completion, reward FROM rollouts WHERE step = 3")
    assert (lengths["reward"] == lengths["completion"].str.len()).all()


def test_rewards_written_as_trl_documents_them_train_with_chat_prompts(tmp_path):
    from workbench.engine.tiny import tiny_model_path

    task = load_task("arithmetic")
    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}], "solution": r["answer"]} for r in task.rows[:8]]
    trl_style = (  # TRL's documented forms: message completions, its own column name, **kwargs
        "import re\n"
        "def format_reward_func(completions, **kwargs):\n"
        "    contents = [completion[0]['content'] for completion in completions]\n"
        "    return [1.0 if re.match(r'^\\d+$', c) else 0.0 for c in contents]\n"
        "def accuracy_reward(completions, solution, **kwargs):\n"
        "    return [float(c[0]['content'].strip() == s) for c, s in zip(completions, solution)]\n"
    )
    chat = Task("chat", task.folder, rows, RewardSource(trl_style, "trl_reward.py"))
    events = list(train(Config(model=str(tiny_model_path()), steps=1, **SMALL), chat, tmp_path))
    assert isinstance(events[-1], RunFinished)
    values = stored(tmp_path, "SELECT name, count(*) AS n FROM reward_values GROUP BY name ORDER BY name")
    assert values.values.tolist() == [["accuracy_reward", 12], ["format_reward_func", 12]]
    row = stored(tmp_path, "SELECT extra_columns, completion_ids, num_tokens FROM rollouts LIMIT 1").iloc[0]
    assert json.loads(row["extra_columns"]).keys() == {"solution"} and len(row["completion_ids"]) == row["num_tokens"]
