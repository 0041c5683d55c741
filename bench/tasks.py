"""Each sample task's mean reward for the tiny model before GRPO and after a wall-clock budget of training.

    python bench/tasks.py [--minutes 5] [--seeds 0 1 2] [--tasks arithmetic coding ...]

The mean reward is over 32 prompts x 8 sampled completions (temperature 1, the training
distribution), the prompts of a run's first step, for the base model and for the adapter trained
for --minutes with the default config and that seed. Prints one line per run and a table of medians.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from learning import train_for  # bench/learning.py

from workbench import Config, load_task
from workbench.checkpoint import checkpoint_folder
from workbench.dryrun import dry_run
from workbench.policy import load_policy
from workbench.tasks import sample_task_names


def mean_reward(config: Config, task, policy) -> float:
    report = dry_run(config, task, num_prompts=32, policy=policy)
    rewards = [r for group in report.groups for r in group.rewards]
    return sum(rewards) / len(rewards)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", default=sample_task_names())
    args = parser.parse_args()
    table = []
    for name in args.tasks:
        task, results = load_task(name), []
        for seed in args.seeds:
            config = Config(seed=seed, steps=100_000, checkpoint_every=100_000)
            before = mean_reward(config, task, load_policy(config))
            workspace = tempfile.mkdtemp(prefix="bench-tasks-")
            run_id, steps = train_for(config, task, args.minutes, workspace)
            trained = load_policy(config)
            trained.load_adapter(checkpoint_folder(workspace, run_id))
            after = mean_reward(config, task, trained)
            results.append((before, after))
            print(f"{name} seed {seed}: {steps} steps in {args.minutes} min, mean reward {before:.3f} -> {after:.3f}")
        table.append((name, statistics.median(b for b, _ in results), statistics.median(a for _, a in results)))
    print(f"\n| task | before | after {args.minutes:g} min |\n|---|---|---|")
    for name, before, after in table:
        print(f"| {name} | {before:.3f} | {after:.3f} |")


if __name__ == "__main__":
    main()
