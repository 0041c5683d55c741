"""Rewards for answering in <think>/<answer> tags (the DeepSeek-R1 format).

TRL's signature; imports nothing from the workbench."""

import re

FORMAT = re.compile(r"^<think>.*?</think><answer>(.*?)</answer>$", re.DOTALL)


def format_reward(completions, **kwargs):
    """1.0 when the completion is exactly <think>...</think><answer>...</answer>, else 0.0."""
    return [1.0 if FORMAT.match(completion.strip()) else 0.0 for completion in completions]


def correct(completions, answer, **kwargs):
    """1.0 when the <answer> tag holds the sum, else 0.0 (no tags: no credit)."""
    found = [FORMAT.match(completion.strip()) for completion in completions]
    return [1.0 if m and m.group(1).strip() == a else 0.0 for m, a in zip(found, answer)]
