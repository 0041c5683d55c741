"""Reward for one-step word problems with whole-number answers. TRL's signature; imports nothing from the workbench."""

import re


def correct(completions, answer, **kwargs):
    """1.0 when the first number in the completion is the answer, else 0.0."""
    scores = []
    for completion, expected in zip(completions, answer):
        found = re.search(r"-?\d+", completion)
        scores.append(1.0 if found and found.group() == expected else 0.0)
    return scores
