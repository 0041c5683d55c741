"""The built-in rewards of workbench.rewards, against values worked out by hand, on both completion forms."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.rewards import (
    exact_match_reward,
    format_reward,
    get_length_reward,
    get_repetition_penalty_reward,
    numeric_match_reward,
)
from workbench.rewards.scoring import RewardSource, Scorer


def as_messages(texts):
    """TRL's conversational form of the same completions."""
    return [[{"role": "assistant", "content": text}] for text in texts]


FORMAT_CASES = [
    ("<think>2+2 is 4</think><answer>4</answer>", 1.0),
    ("\n  <think>\nadd\n</think>\n\n<answer>\n4\n</answer>  \n", 1.0),  # whitespace around and between: allowed
    ("<think>2+2</think> so <answer>4</answer>", 0.0),  # text between the blocks
    ("Sure. <think>2+2</think><answer>4</answer>", 0.0),  # text before <think>
    ("<think>2+2</think><answer>4</answer> Done.", 0.0),  # text after </answer>
    ("<think>a</think><think>b</think><answer>4</answer>", 0.0),  # two think blocks
    ("<think>a<think>b</think><answer>4</answer>", 0.0),  # <think> twice, </think> once
    ("<think>2+2</think><answer>4</answer><answer>5</answer>", 0.0),  # two answers
    ("<think>2+2</think>", 0.0),  # no answer
    ("<answer>4</answer>", 0.0),  # no think
    ("<think>2+2<answer>4</answer>", 0.0),  # no </think>
    ("<answer>4</answer><think>2+2</think>", 0.0),  # wrong order
    ("", 0.0),
]


@pytest.mark.parametrize("form", [list, as_messages])
def test_format_reward_wants_exactly_one_think_block_then_one_answer_block(form):
    texts, expected = zip(*FORMAT_CASES)
    assert format_reward(form(texts)) == list(expected)


EXACT_CASES = [
    ("<answer> 4 </answer>", 4, 1.0),  # inside the tag, stripped; str(4) == "4"
    ("4\n", " 4 ", 1.0),  # no tag: the whole completion, both sides stripped
    ("4.0", 4, 0.0),  # text, not numbers
    ("The answer is 4", "4", 0.0),  # no tag: the whole text must match
    ("<answer>3</answer> no wait <answer>4</answer>", "4", 1.0),  # the last answer block counts
    ("<think>4</think><answer>5</answer>", "4", 0.0),
    ("anything", None, None),  # no answer: not scored
]


@pytest.mark.parametrize("form", [list, as_messages])
def test_exact_match_compares_the_last_answer_block_or_the_whole_text(form):
    texts, answers, expected = zip(*EXACT_CASES)
    assert exact_match_reward(form(texts), answer=list(answers)) == list(expected)


NUMERIC_CASES = [
    ("1,234", 1234, 1.0),  # thousands separator
    ("1234", "1,234", 1.0),  # ... in the answer too
    ("so $1,234,567.5 in all", 1234567.5, 1.0),
    ("it is -12", "-12", 1.0),  # negative
    ("x = -12", 12, 0.0),  # the sign counts
    ("5-3", 3, 1.0),  # a minus between two terms is not a sign: the numbers are 5 and 3
    ("3/4", 0.75, 1.0),  # fraction
    ("-3/4", "-0.75", 1.0),
    ("about 50%", "50", 1.0),  # "%" ignored: 50, not 0.5
    ("50", "50%", 1.0),
    (".5", 0.5, 1.0),
    ("2 + 3 = 5", 5, 1.0),  # the last number wins
    ("2 + 3 = 5", 2, 0.0),
    ("<answer>7</answer> after 9 steps", 7, 1.0),  # inside <answer>: the 9 outside does not count
    ("<answer>1</answer> or <answer>8</answer>", 8, 1.0),  # the last answer block
    ("0.3333333", 1 / 3, 1.0),  # |diff| = 3.3e-8 <= rel_tol 1e-6 * 1/3
    ("0.333", 1 / 3, 0.0),  # |diff| = 3.3e-4: too far
    ("0", 1e-10, 1.0),  # within abs_tol 1e-9
    ("0.0000001", 1e-7, 1.0),  # a float answer is used as a number, not as its text "1e-07"
    ("no idea", 5, 0.0),  # no number in the completion
    ("1/0", 1, 0.0),  # a fraction over zero is not a number
    ("<answer>four</answer> from 2 and 2", 4, 0.0),  # the answer block has no number
    ("5", None, None),  # answer None: not scored
    ("5", "n/a", None),  # answer with no number: not scored
    ("5", float("nan"), None),  # a missing value from pandas
]


@pytest.mark.parametrize("form", [list, as_messages])
def test_numeric_match_reads_the_last_number_of_the_answer_text(form):
    texts, answers, expected = zip(*NUMERIC_CASES)
    assert numeric_match_reward(form(texts), answer=list(answers)) == list(expected)


@pytest.mark.parametrize("form", [list, as_messages])
def test_length_reward_falls_linearly_to_zero_at_twice_the_target(form):
    length_reward = get_length_reward(10)
    texts = ["x" * 10, "x" * 5, "x" * 12, "x" * 15, "x" * 20, "x" * 25, ""]
    # 1 - |n - 10| / 10 for n = 10, 5, 12, 15, 20, 25, 0; clamped at 0
    assert length_reward(form(texts)) == pytest.approx([1.0, 0.5, 0.8, 0.5, 0.0, 0.0, 0.0])
    assert length_reward.__name__ == "length_reward"


def test_length_counts_characters_of_the_unstripped_text():
    # "  ab  " is 6 characters: 1 - |6 - 4| / 4 = 0.5; "héé" is 3 characters (5 bytes): 1 - 1/4
    assert get_length_reward(4)(["  ab  ", "héé"]) == [0.5, 0.75]


@pytest.mark.parametrize("form", [list, as_messages])
def test_repetition_penalty_counts_unique_ngrams_of_lowercased_words(form):
    bigram_penalty = get_repetition_penalty_reward(ngram_size=2)
    texts = [
        # 8 words, 7 bigrams: the-cat cat-sat sat-on on-the the-cat cat-sat sat-down; 5 unique -> (1 - 5/7) * -1
        "the cat sat on the cat sat down",
        # lowercased, 5 bigrams: the-cat cat-the the-cat cat-the the-cat; 2 unique -> (1 - 2/5) * -1
        "The cat THE CAT the Cat",
        "one two three four",  # 3 bigrams, all unique -> 0.0
        "alone",  # 1 word < ngram_size 2 -> 0.0
        "",
    ]
    assert bigram_penalty(form(texts)) == pytest.approx([-2 / 7, -0.6, 0.0, 0.0, 0.0])
    assert bigram_penalty.__name__ == "repetition_penalty_reward"


def test_repetition_penalty_defaults_to_trigrams_and_scales_by_max_penalty():
    # "a b c a b c": trigrams abc bca cab abc, 3 unique of 4 -> 1 - 3/4 = 0.25
    assert get_repetition_penalty_reward()(["a b c a b c", "a b"]) == [-0.25, 0.0]  # "a b": 2 words < 3
    assert get_repetition_penalty_reward(max_penalty=-0.5)(["a b c a b c"]) == [-0.125]
    # unigrams of "no no no no": 1 unique of 4 -> (1 - 1/4) * -2
    assert get_repetition_penalty_reward(ngram_size=1, max_penalty=-2.0)(["no no no no"]) == [-1.5]


def test_no_repetition_scores_plus_zero_not_minus_zero():
    (value,) = get_repetition_penalty_reward()(["one two three four"])
    assert value == 0.0 and math.copysign(1.0, value) == 1.0  # a UI would show "-0.0"


@pytest.mark.parametrize("target_chars", [0, -5])
def test_length_target_below_one_is_refused(target_chars):
    with pytest.raises(ValueError, match="target_chars must be at least 1"):
        get_length_reward(target_chars)


@pytest.mark.parametrize(
    ("ngram_size", "max_penalty", "message"),
    [(0, -1.0, "ngram_size must be at least 1"), (3, 0.5, "max_penalty must be 0 or negative")],
)
def test_repetition_penalty_arguments_are_checked(ngram_size, max_penalty, message):
    with pytest.raises(ValueError, match=message):
        get_repetition_penalty_reward(ngram_size, max_penalty)


def test_a_zero_max_penalty_is_allowed_and_scores_zero():
    assert get_repetition_penalty_reward(max_penalty=0.0)(["a b c a b c"]) == [0.0]


def test_importing_the_rewards_does_not_import_torch():
    # The reward worker imports this module; torch there would cost seconds and memory per worker.
    code = "import sys, workbench.rewards; print('torch' in sys.modules)"
    repo = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_in_a_reward_file_an_underscore_import_is_a_helper_and_a_public_one_is_trained_on():
    source = (
        "from workbench.rewards import format_reward as _format, get_length_reward, numeric_match_reward\n"
        "length_reward = get_length_reward(4)\n"
        "def formatted(completions, **kwargs):\n"
        "    return _format(completions)\n"
    )
    rows = [{"prompt": "1+1=", "answer": "2"}] * 2
    with Scorer(RewardSource(source, "reward.py"), ["answer"]) as scorer:
        scores = scorer.score(rows, ["<think>1+1</think><answer>2</answer>", "2"])
    # get_length_reward has no `completions` parameter and _format is private: neither is a reward.
    # Lengths 36 and 1 against the target 4: max(0, 1 - 32/4) = 0, 1 - 3/4 = 0.25.
    assert scores.values == {
        "numeric_match_reward": [1.0, 1.0],
        "length_reward": [0.0, 0.25],
        "formatted": [1.0, 0.0],
    }
