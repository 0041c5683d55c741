"""Reward functions in TRL's signature: loading, scoring, and results that are refused."""

import math

import pytest

from workbench.rewards import RewardError, load_reward_functions, score, total_rewards

SOURCE = """
import re

def correct(completions, answer, **kwargs):
    return [1.0 if c.strip() == a else 0.0 for c, a in zip(completions, answer)]

def short(completions, prompts=None, **columns):
    return [None if c == "" else -0.1 * len(c) for c in completions]

def _helper(completions):
    return []

def not_a_reward(text):
    return text
"""


def test_public_functions_taking_completions_are_rewards():
    assert [f.name for f in load_reward_functions(SOURCE)] == ["correct", "short"]


def test_scores_pass_columns_and_skip_none_in_the_total():
    functions = load_reward_functions(SOURCE)
    rows = [{"prompt": "1+1=", "answer": "2"}] * 3
    values = score(functions, rows, ["2", "3", ""])
    assert values == {"correct": [1.0, 0.0, 0.0], "short": [pytest.approx(-0.1), pytest.approx(-0.1), None]}
    assert total_rewards(functions, values) == pytest.approx([0.9, -0.1, 0.0])


def test_chat_prompts_give_message_completions_as_in_trl():
    source = "def seen(completions, **kw):\n    return [float(c[0]['role'] == 'assistant') for c in completions]\n"
    rows = [{"prompt": [{"role": "user", "content": "hi"}]}]
    assert score(load_reward_functions(source), rows, ["hello"]) == {"seen": [1.0]}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("return [1.0]", ["length", "returned 1 values for 2 completions"]),
        ("return 1.0", ["length", "not a list"]),
        ("return [float('nan'), 1.0]", ["length", "nan", "completion 0"]),
        ("return ['a', 1.0]", ["length", "'a'"]),
    ],
)
def test_bad_results_name_the_function(body, words):
    functions = load_reward_functions(f"def length(completions, **kw):\n    {body}\n")
    with pytest.raises(RewardError) as error:
        score(functions, [{"prompt": "p"}] * 2, ["a", "b"])
    for word in words:
        assert word in str(error.value)


def test_syntax_error_names_file_and_line():
    with pytest.raises(RewardError, match=r"reward.py, line 2: syntax error"):
        load_reward_functions("def f(completions):\n    return [\n", "reward.py")


def test_no_reward_function_found():
    with pytest.raises(RewardError, match="no reward function"):
        load_reward_functions("def f(x):\n    return x\n")


def test_numbers_of_any_real_type_are_accepted():
    functions = load_reward_functions("def b(completions, **kw):\n    return [True, 2]\n")
    assert score(functions, [{"prompt": "p"}] * 2, ["a", "b"]) == {"b": [1.0, 2.0]}
    assert not math.isnan(total_rewards(functions, {"b": [None, 2.0]})[0])
