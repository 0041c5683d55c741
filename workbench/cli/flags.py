"""The flags a command shares: one per `Config` field, made from the dataclass, --reward, and a dataset task's
--split and --columns; what they build."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from workbench.config import Config, field_docs
from workbench.rewards.hf_datasets import hub_task, parse_hub_name
from workbench.rewards.scoring import RewardSource
from workbench.rewards.tasks import Task, TaskError, load_task

HUB = "hf:"  # --task hf:ID[:CONFIG] (or hf:FOLDER): a Hugging Face dataset, as TRL's load_dataset takes it


def add_reward_flag(parser: argparse.ArgumentParser) -> None:
    """--reward, and --split and --columns for a dataset task: the flags of every command that takes --task."""
    parser.add_argument("--reward", metavar="FILE", help="score with this reward file instead of the task's reward.py")
    parser.add_argument("--split", help=f"with --task {HUB}ID: the split, as load_dataset takes it, e.g. train[:500]")
    parser.add_argument(
        "--columns",
        metavar="SRC=DST,...",
        help=f"with --task {HUB}ID: the columns kept, renamed (question=prompt,answer) [all, one named prompt]",
    )


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
        elif field.name == "reward_models":  # repeatable, as TRL's reward_funcs list: --reward-model A --reward-model B
            group.add_argument(flag, "--reward-model", dest=field.name, nargs="+", action="extend", help=help_text)
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
    """The task, scored by --reward when given; a dataset (`hf:ID[:CONFIG]`) is kept as a task folder in the
    workspace, and `args.task` names that folder from then on (what a sweep hands its runs)."""
    split, columns = getattr(args, "split", None), getattr(args, "columns", None)
    if name.startswith(HUB):
        if not args.reward:
            raise TaskError(f"--task {name} needs --reward FILE: a dataset has no reward.py")
        path, config = parse_hub_name(name.removeprefix(HUB))
        workspace = getattr(args, "workspace", None)  # validate and dry-run keep the rows in a temporary folder
        task = hub_task(path, config, split=split or "train", columns=columns, reward=args.reward, workspace=workspace)
        args.task = task.folder
        return task
    if split or columns:
        raise TaskError(f"--split and --columns choose a dataset's rows: use them with --task {HUB}ID")
    task = load_task(name)
    return task.with_rewards(RewardSource.from_file(args.reward)) if args.reward else task


def _weight(text: str) -> tuple[str, float]:
    name, _, weight = text.partition("=")
    try:
        return name, float(weight)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=WEIGHT, e.g. correct=1.0") from None
