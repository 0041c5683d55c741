"""A run as the command line and the Python code that start it again: the CLI prints them, the app shows
them beside a run, a sweep starts its runs with them. The flags are the Config's non-default fields."""

from __future__ import annotations

import shlex

from workbench.config import Config


def command_line(config: Config, task: str, workspace: str, reward_file: str | None = None) -> str:
    """The `python -m workbench train` command that trains `config` (its non-default fields as flags)."""
    return shlex.join(["python", "-m", "workbench", "train", *train_arguments(config, task, workspace, reward_file)])


def train_arguments(config: Config, task: str, workspace: str, reward_file: str | None = None) -> list[str]:
    """The arguments of `python -m workbench train` that train `config`: its non-default fields as flags."""
    words = ["--task", task, "--workspace", workspace]
    if reward_file:
        words += ["--reward", reward_file]
    for name, value in config.changed().items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, tuple):
            words += [flag, *value]
        elif isinstance(value, dict):
            words += [flag, *(f"{k}={w}" for k, w in value.items())]
        else:
            words += [flag, str(value)]
    return words


def python_code(config: Config, task: str, workspace: str, reward_file: str | None = None) -> str:
    """The same run from Python (a notebook): load the task, build the Config, follow the events."""
    task_line = f"task = load_task({task!r})"
    if reward_file:
        task_line += f".with_rewards(RewardSource.from_file({reward_file!r}))"
    arguments = ", ".join(f"{name}={value!r}" for name, value in config.changed().items())
    return (
        "from workbench import Config, RewardSource, StepFinished, load_task, train\n\n"
        f"{task_line}\n"
        f"config = Config({arguments})\n"
        f"for event in train(config, task, {workspace!r}):\n"
        "    if isinstance(event, StepFinished):\n"
        "        print(event.step, event.metrics['reward_mean'])\n"
    )
