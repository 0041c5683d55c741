"""Three ways to try a reward before (or instead of) training: `validate` (probe completions), `dry-run` (groups
sampled from the base model), `rescore` (a past run's stored rollouts scored again).

validate loads no torch; dry-run and rescore import the engine inside the function that runs them.
"""

from __future__ import annotations

import argparse

from workbench.cli.flags import config_from_args, task_from_args
from workbench.rewards.scoring import RewardSource, probes, validate_rewards


def run_validate(args: argparse.Namespace) -> int:
    task = task_from_args(args, args.task)
    scores = validate_rewards(task.rewards, task.rows, config_from_args(args))
    print(f"{task.rewards.filename}: reward functions {', '.join(scores.values)}")
    for i, (row, completion) in enumerate(probes(task.rows)):
        values = ", ".join(f"{name}={v[i]}" for name, v in scores.values.items())
        print(f"  {completion!r} for {row['prompt']!r}: reward {scores.rewards[i]:g} ({values})")
    return 0


def run_dry_run(args: argparse.Namespace) -> int:
    from workbench.engine.dryrun import dry_run

    task = task_from_args(args, args.task)
    print(dry_run(config_from_args(args), task, num_prompts=args.prompts).report())
    return 0


def run_rescore(args: argparse.Namespace) -> int:
    from workbench.engine.rescoring import rescore

    print(rescore(args.workspace, args.run_id, RewardSource.from_file(args.reward), step=args.step).report())
    return 0
