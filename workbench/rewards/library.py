"""Built-in reward functions that users of TRL and open-r1 know, in TRL's reward signature.

Every function here is `def name(completions, **kwargs) -> list[float | None]`: one value per
completion, None for "not scored". A completion is a string or TRL's message form
`[{"role": "assistant", "content": text}]`; both work. Dataset columns such as `answer` arrive as
keyword lists, one value per completion.

    format_reward(completions)                   1.0 for "<think>...</think> <answer>...</answer>", else 0.0
    exact_match_reward(completions, answer)      1.0 when the answer text equals `answer`, else 0.0
    numeric_match_reward(completions, answer)    1.0 when the last number in the answer text equals `answer`'s
    get_length_reward(target_chars)              -> length_reward: 1.0 at the target length, falling to 0.0
    get_repetition_penalty_reward(ngram_size, max_penalty)  -> repetition_penalty_reward: open-r1's n-gram penalty

Use them from your reward file:

    from workbench.rewards import format_reward, get_length_reward

    length_reward = get_length_reward(400)

Every public top-level function (or callable) with a `completions` parameter in a reward file is
trained on, imported ones included. To call one inside your own reward without also training on it,
import it under a leading underscore:

    from workbench.rewards import format_reward as _format

    def format_or_penalty(completions, **kwargs):
        return [2 * value - 1 for value in _format(completions)]  # -1 unformatted, +1 formatted

Standard library only: the reward worker imports this module, and it must stay free of torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

Completion = str | list[dict[str, str]]
Reward = Callable[..., list[float | None]]

_FORMAT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_FORMAT_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NUMBER = re.compile(
    r"""
    (?P<sign>(?<![\w)])[-+])?                                      # a sign, but not the minus in "5-3"
    (?P<digits>(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)    # "1,234.5", "1234", ".5"
    (?:/(?P<denominator>\d+))?                                     # "3/4"
    """,
    re.VERBOSE,
)


def _text(completion: Completion) -> str:
    """A completion's text: the string itself, or the content of its last message."""
    if isinstance(completion, str):
        return completion
    return completion[-1]["content"]


def _answer_text(completion: Completion) -> str:
    """The content of the last <answer>...</answer>, or the whole text when there is none."""
    text = _text(completion)
    answers = _ANSWER.findall(text)
    return answers[-1] if answers else text


def _last_number(text: str) -> float | None:
    """The value of the last number in the text ("1,234.5", "-3/4", "50%" -> 50), or None."""
    numbers = [_value(match) for match in _NUMBER.finditer(text)]
    numbers = [number for number in numbers if number is not None]
    return numbers[-1] if numbers else None


def _value(match: re.Match) -> float | None:
    """A _NUMBER match as a float; None for a fraction over zero."""
    value = float(match["digits"].replace(",", ""))
    if match["denominator"] is not None:
        if int(match["denominator"]) == 0:
            return None
        value /= int(match["denominator"])
    return -value if match["sign"] == "-" else value


def _expected_number(answer: str | float | None) -> float | None:
    """The number a dataset answer stands for; None when it has none (None, NaN, "n/a")."""
    if answer is None:
        return None
    if isinstance(answer, int | float):  # str(1e-7) is "1e-07", which _NUMBER does not read
        return None if math.isnan(answer) else float(answer)
    return _last_number(str(answer))


def format_reward(completions: list[Completion], **kwargs) -> list[float]:
    """1.0 when the stripped completion is exactly `<think>...</think>` then `<answer>...</answer>`, else 0.0.

    Whitespace may separate the two blocks; each of the four tags must appear exactly once, and
    nothing may come before <think> or after </answer> (DeepSeek-R1's format reward, as in open-r1).

        format_reward(["<think>2+2</think>\\n<answer>4</answer>", "<answer>4</answer>"]) == [1.0, 0.0]
    """
    return [1.0 if _is_formatted(_text(completion).strip()) else 0.0 for completion in completions]


def _is_formatted(text: str) -> bool:
    return _FORMAT.fullmatch(text) is not None and all(text.count(tag) == 1 for tag in _FORMAT_TAGS)


def exact_match_reward(completions: list[Completion], answer: list, **kwargs) -> list[float | None]:
    """1.0 when the answer text, stripped, equals `str(answer).strip()`, else 0.0; None where answer is None.

    The answer text is the content of the completion's last <answer>...</answer>, or the whole
    completion when it has none.

        exact_match_reward(["<answer> 4 </answer>", "4.0"], answer=[4, 4]) == [1.0, 0.0]
    """
    return [
        None if expected is None else float(_answer_text(completion).strip() == str(expected).strip())
        for completion, expected in zip(completions, answer)
    ]


def numeric_match_reward(completions: list[Completion], answer: list, **kwargs) -> list[float | None]:
    """1.0 when the last number in the answer text equals answer's number, else 0.0 (also with no number).

    Equal means `math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9)`. The answer text is as in
    `exact_match_reward`. A number is an optional sign, digits with optional thousands commas, optional
    decimals, and optionally "/denominator": "-1,234.5", "3/4". A trailing "%" is ignored ("50%" is
    50), a minus between two terms is not a sign ("5-3" ends in 3), and "1e-6" is not read as one
    number. An answer that is None or holds no number is not scored (None); answer may be a number or
    a string.

        numeric_match_reward(["so 1,200 in all", "<answer>-3/4</answer>", "none"], answer=["1200", -0.75, 1])
            == [1.0, 1.0, 0.0]
    """
    return [_numeric_match(completion, _expected_number(expected)) for completion, expected in zip(completions, answer)]


def _numeric_match(completion: Completion, expected: float | None) -> float | None:
    if expected is None:
        return None
    got = _last_number(_answer_text(completion))
    return float(got is not None and math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9))


def get_length_reward(target_chars: int) -> Reward:
    """A reward `length_reward`: max(0, 1 - |len(text) - target_chars| / target_chars) per completion.

    Length is in characters of the completion's text, unstripped. With target_chars=10, texts of 10,
    5, 15 and 20 characters get 1.0, 0.5, 0.5 and 0.0.
    """
    if target_chars < 1:
        raise ValueError(f"target_chars must be at least 1, got {target_chars}")

    def length_reward(completions: list[Completion], **kwargs) -> list[float]:
        """max(0, 1 - |len(text) - target_chars| / target_chars), length in characters."""
        return [max(0.0, 1 - abs(len(_text(completion)) - target_chars) / target_chars) for completion in completions]

    return length_reward


def get_repetition_penalty_reward(ngram_size: int = 3, max_penalty: float = -1.0) -> Reward:
    """A reward `repetition_penalty_reward`: (1 - unique_ngrams / total_ngrams) * max_penalty per completion.

    The n-grams are those of `text.lower().split()` (open-r1's and TRL's rule); a text with fewer
    words than ngram_size gets 0.0. With ngram_size=2, "a b a b" has bigrams (a b), (b a), (a b):
    2 unique of 3, so (1 - 2/3) * -1.0 = -1/3.
    """
    if ngram_size < 1:
        raise ValueError(f"ngram_size must be at least 1, got {ngram_size}")
    if max_penalty > 0:
        raise ValueError(f"max_penalty must be 0 or negative: it is a penalty, got {max_penalty}")

    def repetition_penalty_reward(completions: list[Completion], **kwargs) -> list[float]:
        """(1 - unique_ngrams / total_ngrams) * max_penalty over the lowercased words."""
        repetitions = [_repetition(_text(completion), ngram_size) for completion in completions]
        return [repetition * max_penalty if repetition else 0.0 for repetition in repetitions]  # 0.0, not -0.0

    return repetition_penalty_reward


def _repetition(text: str, ngram_size: int) -> float:
    """1 - unique_ngrams / total_ngrams over the lowercased words; 0.0 with fewer words than ngram_size."""
    words = text.lower().split()
    ngrams = [tuple(words[i : i + ngram_size]) for i in range(len(words) - ngram_size + 1)]
    return 1 - len(set(ngrams)) / len(ngrams) if ngrams else 0.0
