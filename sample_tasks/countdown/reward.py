"""Reward for the countdown game: reach the target with the given numbers.

TRL's signature; imports nothing from the workbench."""

import re

EXPRESSION = re.compile(r"^[0-9+\-*() ]+$")


def countdown_reward(completions, numbers, target, **kwargs):
    """1.0 when the expression uses exactly the given numbers, each once, and equals the target;
    0.1 when it uses them but misses the target; 0.0 for anything else."""
    return [_score(c.strip(), n, t) for c, n, t in zip(completions, numbers, target)]


def _score(expression, numbers, target):
    if not EXPRESSION.match(expression) or sorted(map(int, re.findall(r"\d+", expression))) != sorted(numbers):
        return 0.0
    try:
        value = eval(expression, {"__builtins__": {}})  # digits, + - * and brackets only
    except (SyntaxError, ZeroDivisionError):
        return 0.0
    return 1.0 if value == target else 0.1
