"""Reward functions in TRL's signature, loaded from source text and applied to a step's completions.

A reward function is any public top-level function of the source that takes a `completions`
argument: `def name(completions, prompts=None, **columns) -> list[float | None]`. Extra dataset
columns (e.g. `answer`) arrive as keyword lists, one value per completion; `None` means "not
scored". The total reward is the weighted sum over functions, skipping None (as TRL's nansum).
"""

from __future__ import annotations

import inspect
import math
import numbers
import types
from collections.abc import Callable
from dataclasses import dataclass


class RewardError(ValueError):
    """A reward source or a reward function's result is unusable; the message names the function."""


@dataclass(frozen=True)
class RewardFunction:
    name: str
    function: Callable
    weight: float = 1.0


def load_reward_functions(source: str, filename: str = "reward.py") -> list[RewardFunction]:
    """Execute the source as a module and collect its reward functions, in definition order."""
    module = types.ModuleType(filename.rsplit("/", 1)[-1].removesuffix(".py"))
    module.__file__ = filename
    try:
        exec(compile(source, filename, "exec"), module.__dict__)
    except SyntaxError as error:
        raise RewardError(f"{filename}, line {error.lineno}: syntax error: {error.msg}") from None
    functions = [
        RewardFunction(name, value)
        for name, value in vars(module).items()
        if inspect.isfunction(value)
        and not name.startswith("_")
        and value.__code__.co_filename == filename
        and "completions" in inspect.signature(value).parameters
    ]
    if not functions:
        raise RewardError(
            f"{filename}: no reward function found; define "
            "`def name(completions, prompts=None, **columns) -> list[float]`"
        )
    return functions


def completions_for_trl(prompts: list, texts: list[str]) -> list:
    """Completions as TRL passes them: strings for string prompts, assistant messages for chat."""
    return [
        [{"role": "assistant", "content": text}] if isinstance(prompt, list) else text
        for prompt, text in zip(prompts, texts)
    ]


def score(functions: list[RewardFunction], rows: list[dict], texts: list[str]) -> dict[str, list[float | None]]:
    """Each function's values for the completions; `rows[i]` is completion i's dataset row."""
    prompts = [row["prompt"] for row in rows]
    columns = {key: [row[key] for row in rows] for key in rows[0] if key != "prompt"}
    completions = completions_for_trl(prompts, texts)
    values = {}
    for reward in functions:
        result = reward.function(completions=completions, prompts=prompts, **columns)
        values[reward.name] = _checked(reward.name, result, len(texts))
    return values


def total_rewards(functions: list[RewardFunction], values: dict[str, list[float | None]]) -> list[float]:
    """r_i = sum over functions of weight * value, skipping None."""
    count = len(next(iter(values.values())))
    return [sum(f.weight * values[f.name][i] for f in functions if values[f.name][i] is not None) for i in range(count)]


def _checked(name: str, result, count: int) -> list[float | None]:
    if not isinstance(result, (list, tuple)):
        raise RewardError(f"reward function {name} returned {type(result).__name__}, not a list")
    if len(result) != count:
        raise RewardError(f"reward function {name} returned {len(result)} values for {count} completions")
    checked = []
    for i, value in enumerate(result):
        if value is None:
            checked.append(None)
            continue
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise RewardError(f"reward function {name} returned {value!r} for completion {i}: not a finite number")
        checked.append(float(value))
    return checked
