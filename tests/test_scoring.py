"""Reward functions in TRL's signature, run in the reward worker: what they get, and every way they fail."""

import pytest

from workbench.config import Config
from workbench.rewards.scoring import (
    RewardError,
    RewardFunctionError,
    RewardSource,
    Scorer,
    try_rewards,
    validate_rewards,
)

ROWS = [{"prompt": "1+1=", "answer": "2"}, {"prompt": "2+2=", "answer": "4"}]
QUICK = Config(reward_time_limit=1.0, reward_memory_mb=512)


def scorer(text, columns=("answer",), config=QUICK):
    return Scorer(RewardSource(text, "reward.py"), list(columns), config)


def failure(body, completions=("2", "3", "x", "4"), config=QUICK):
    """The RewardFailure of a function `f` with this body, called on the completions."""
    rows = [ROWS[0]] * len(completions)
    with (
        scorer(f"def f(completions, **kwargs):\n{body}\n", config=config) as s,
        pytest.raises(RewardFunctionError) as error,
    ):
        s.score(rows, list(completions))
    return error.value.failure


def test_columns_prompts_ids_and_state_arrive_as_keywords_and_none_is_skipped_in_the_total():
    source = (
        "def correct(completions, answer, **kwargs):\n"
        "    return [1.0 if c == a else 0.0 for c, a in zip(completions, answer)]\n"
        "def short(completions, prompts=None, completion_ids=None, trainer_state=None, **kwargs):\n"
        "    assert prompts == ['1+1=', '2+2=', '2+2='] and trainer_state.global_step == 0\n"
        "    return [None if c == '' else -0.1 * len(ids) for c, ids in zip(completions, completion_ids)]\n"
    )
    with scorer(source) as s:
        scores = s.score([ROWS[0], ROWS[1], ROWS[1]], ["2", "44", ""], [[7, 0], [5, 5, 0], [0]])
    assert scores.values == {"correct": [1.0, 0.0, 0.0], "short": [pytest.approx(-0.2), pytest.approx(-0.3), None]}
    assert scores.rewards == pytest.approx([0.8, -0.3, 0.0])  # 1 - 0.2; 0 - 0.3; 0 + nothing


def test_weights_multiply_each_function_and_must_name_one():
    source = (
        "def a(completions, **kw):\n    return [1.0] * len(completions)\n"
        "def b(completions, **kw):\n    return [2.0] * len(completions)\n"
    )
    with scorer(source, config=Config(reward_weights={"a": 0.5, "b": -1.0})) as s:
        assert s.score([ROWS[0]], ["x"]).rewards == [0.5 * 1.0 - 1.0 * 2.0]
    with pytest.raises(RewardError, match=r"reward_weights names c, not a reward function of reward.py \(.*a, b\)"):
        scorer(source, config=Config(reward_weights={"c": 1.0}))


def test_chat_prompts_give_message_completions_as_in_trl():
    source = "def seen(completions, **kw):\n    return [float(c[0]['role'] == 'assistant') for c in completions]\n"
    rows = [{"prompt": [{"role": "user", "content": "hi"}]}]
    assert try_rewards(RewardSource(source), "hello", rows[0]).values == {"seen": [1.0]}


def test_rewards_written_as_trl_documents_them_run_unchanged():
    # The examples of TRL's GRPOTrainer documentation, verbatim apart from the dataset column name.
    source = r"""
import re

def reward_len(completions, **kwargs):
    return [-abs(20 - len(completion)) for completion in completions]

def format_reward_func(completions, **kwargs):
    pattern = r"^<think>.*?</think><answer>.*?</answer>$"
    completion_contents = [completion[0]["content"] for completion in completions]
    matches = [re.match(pattern, content) for content in completion_contents]
    return [1.0 if match else 0.0 for match in matches]

def reward_func(completions, answer, **kwargs):
    matches = [re.search(r"\\boxed\{(.*?)\}", completion[0]["content"]) for completion in completions]
    contents = [match.group(1) if match else "" for match in matches]
    return [1.0 if c == gt else 0.0 for c, gt in zip(contents, answer)]
"""
    chat = {"prompt": [{"role": "user", "content": "1+1?"}], "answer": "2"}
    with scorer(source) as s:
        values = s.score([chat, chat], ["<think>easy</think><answer>\\boxed{2}</answer>", "3"]).values
    assert values == {"reward_len": [-(20 - 1), -(20 - 1)], "format_reward_func": [1.0, 0.0], "reward_func": [1.0, 0.0]}
    # reward_len measures the message list (length 1), as it would in TRL with chat prompts


def test_imported_callables_and_factories_are_rewards_and_underscored_names_are_not():
    source = (
        "from workbench.rewards import format_reward, get_length_reward\n"
        "from workbench.rewards import exact_match_reward as _exact\n"
        "short = get_length_reward(4)\n"
        "class Penalty:\n"
        "    def __call__(self, completions, **kwargs):\n"
        "        return [-1.0] * len(completions)\n"
        "penalty = Penalty()\n"
        "def _helper(completions):\n"
        "    return []\n"
    )
    with scorer(source) as s:
        assert s.names == ["format_reward", "short", "penalty"]
        values = s.score([ROWS[0]], ["<think>a</think><answer>2</answer>"]).values
    assert values["format_reward"] == [1.0] and values["penalty"] == [-1.0]


def test_what_a_function_prints_is_captured_per_function():
    source = (
        "import sys, os\n"
        "def loud(completions, **kw):\n"
        "    print('scoring', len(completions))\n"
        "    sys.stderr.write('careful\\n')\n"
        "    os.system('echo from a shell')\n"
        "    return [0.0] * len(completions)\n"
        "def quiet(completions, **kw):\n"
        "    return [0.0] * len(completions)\n"
    )
    with scorer(source) as s:
        for _ in range(2):  # each call keeps only its own output
            output = s.score(ROWS, ["a", "b"]).output
            assert output == {"loud": "scoring 2\ncareful\nfrom a shell\n"}


def test_a_raise_names_the_function_line_first_failing_completion_traceback_and_output():
    body = (
        "    for c in completions:\n        print('checking', c)\n        if c == 'x':\n            int(c)\n"
        "    return [0.0] * len(completions)"
    )
    f = failure(body)
    assert f.function == "f" and f.location == "reward.py, line 5"
    assert f.problem == "raised ValueError: invalid literal for int() with base 10: 'x'"
    assert (f.completion_index, f.completion, f.prompt) == (2, "x", "1+1=")
    assert 'File "reward.py", line 5, in f' in f.traceback and "reward_worker" not in f.traceback
    assert f.output == "checking 2\nchecking 3\nchecking x\n"  # the batch call's prints, up to the raise


def test_an_infinite_loop_is_interrupted_at_its_line():
    f = failure(
        "    for c in completions:\n        while c == '3':\n            pass\n    return [0.0] * len(completions)"
    )
    assert f.problem == "ran longer than its time limit of 1 s (reward_time_limit)"
    assert f.location == "reward.py, line 3" and (f.completion_index, f.completion) == (1, "3")


@pytest.mark.slow
def test_a_loop_that_swallows_the_alarm_is_killed_and_the_next_call_works():
    body = (
        "    import time\n    while '3' in completions:\n        try:\n            time.sleep(5)\n"
        "        except BaseException:\n            pass\n    return [0.0] * len(completions)"
    )
    with scorer(f"def f(completions, **kwargs):\n{body}\n") as s:
        with pytest.raises(RewardFunctionError, match="ignored the alarm, so it was killed") as error:
            s.score([ROWS[0]] * 2, ["2", "3"])
        assert error.value.failure.completion == "3"
        assert s.score([ROWS[0]], ["2"]).values == {"f": [0.0]}  # a fresh worker, the source reloaded


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("    import os\n    if '3' in completions: os._exit(7)\n    return [0.0] * len(completions)",
         "ended the reward worker process with exit code 7 (os._exit or a crash)"),
        ("    import ctypes\n    if '3' in completions: ctypes.string_at(0)\n    return [0.0] * len(completions)",
         "killed the reward worker process with SIGSEGV (a segmentation fault)"),
    ],
)  # fmt: skip
def test_a_function_that_kills_its_process_is_caught_and_located(body, problem):
    f = failure(body)
    assert f.problem == problem and f.completion == "3"


def test_sys_exit_and_a_memory_bomb_are_caught():
    assert failure("    raise SystemExit(3)").problem == "called sys.exit(3)"
    bomb = failure(
        "    grow = []\n    while True:\n        grow.append(' ' * 10**7)", config=Config(reward_memory_mb=256)
    )
    assert bomb.problem.startswith("ran out of memory") and "MemoryError" in bomb.traceback


@pytest.mark.parametrize(
    ("body", "problem", "index"),
    [
        ("    return [1.0]", "returned 1 value for 4 completions (one per completion, None to skip)", None),
        ("    return 1.0", "returned float, not a list of numbers", None),
        ("    return [float('nan') if c == 'x' else 1.0 for c in completions]", "returned nan: not a finite", 2),
        ("    return [float('inf')] * len(completions)", "returned inf: not a finite", 0),
        ("    return ['1.0'] * len(completions)", "returned '1.0': not a finite", 0),
    ],
)
def test_bad_return_values_name_the_function_and_completion(body, problem, index):
    f = failure(body)
    assert f.problem.startswith(problem) and f.location == "reward.py, line 1" and f.completion_index == index


def test_numpy_values_and_bools_are_numbers():
    with scorer("import numpy as np\ndef f(completions, **kw):\n    return np.array([True, 2])\n") as s:
        assert s.score(ROWS, ["a", "b"]).values == {"f": [1.0, 2.0]}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def f(completions, **kw):\n    return [\n", r"the reward source \(reward.py, line 2\): syntax error"),
        ("def f(x):\n    return x\n", r"no reward function found"),
        ("import no_such_module\n", r"line 1\): raised ModuleNotFoundError: No module named 'no_such_module'"),
        (
            "def f(completions):\n    return [0.0]\n",
            r"reward function f \(reward.py, line 1\): its signature has no \*\*kwargs",
        ),
        (
            "\ndef f(completions, solution, **kw):\n    return [0.0]\n",
            r"f \(reward.py, line 2\): it needs 'solution', which is not a column of the prompts \(columns: answer\)",
        ),
        ("def f(completions, **kw):\n    return [1.0]\n", r"f \(reward.py, line 1\): returned 1 value for 4"),
    ],
)
def test_validation_before_training_names_the_problem_and_line(source, message):
    with pytest.raises(RewardError, match=message):
        validate_rewards(RewardSource(source, "reward.py"), ROWS)


def test_validation_probes_every_function_with_empty_and_plain_completions():
    source = "def length(completions, **kw):\n    return [len(c) for c in completions]\n"
    scores = validate_rewards(RewardSource(source), ROWS)
    assert scores.values == {"length": [0.0, 17.0, 0.0, 17.0]}  # '' and 'The answer is 42.' per row


def test_a_source_can_be_swapped_and_each_text_has_its_version():
    first, second = RewardSource("def a(completions, **kw):\n    return [1.0]\n"), RewardSource("x = 1\n")
    assert first.version != second.version and len(first.version) == 12
    with scorer(first.text) as s:
        with pytest.raises(RewardError, match="no reward function"):
            s.load(second)
        s.load(RewardSource("def b(completions, **kw):\n    return [2.0] * len(completions)\n"))
        assert s.score([ROWS[0]], ["x"]).values == {"b": [2.0]}
