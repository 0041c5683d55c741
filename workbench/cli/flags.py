"""The flags a command shares: one per `Config` field, made from the dataclass, and --reward; what they build."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from workbench.config import Config, field_docs
from workbench.rewards.scoring import RewardSource
from workbench.rewards.tasks import Task, load_task


def add_reward_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reward", metavar="FILE", help="score with this reward file instead of the task's reward.py")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """--kebab-case flag per Config field, typed from its annotation, helped by its docstring."""
    docs = field_docs()
    hints = typing.get_type_hints(Config)
    group = parser.add_argument_group("config (defaults in brackets)")
    for field in dataclasses.fields(Config):
        flag = "--" + field.name.replace("_", "-")
        kind = hints[field.name]
        help_text = f"{docs.get(field.name, '')} [{field.default}]"
        if kind is bool:
            group.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, help=help_text)
        elif kind == tuple[str, ...]:
            group.add_argument(flag, dest=field.name, nargs="+", help=help_text)
        elif kind == dict[str, float]:
            group.add_argument(flag, dest=field.name, nargs="+", type=_weight, metavar="NAME=WEIGHT", help=help_text)
        else:
            group.add_argument(flag, dest=field.name, type=kind, help=help_text)


def config_from_args(args: argparse.Namespace, base: dict | None = None) -> Config:
    """The flags given on the command line, over `base` (a stored run's config) or the defaults."""
    values = dict(base or {})
    for field in dataclasses.fields(Config):
        given = getattr(args, field.name)
        if given is not None:
            values[field.name] = dict(given) if field.name == "reward_weights" else given
    return Config.from_dict(values)


def task_from_args(args: argparse.Namespace, name: str) -> Task:
    """The task, scored by --reward when given."""
    task = load_task(name)
    return task.with_rewards(RewardSource.from_file(args.reward)) if args.reward else task


def _weight(text: str) -> tuple[str, float]:
    name, _, weight = text.partition("=")
    try:
        return name, float(weight)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=WEIGHT, e.g. correct=1.0") from None
