"""Each sample task's mean reward before GRPO and after a wall-clock budget of training, on training
prompts and on held-out ones.

    python bench/tasks.py [--minutes 5] [--seeds 0 1 2] [--tasks arithmetic coding ...]
    python bench/tasks.py --model HuggingFaceTB/SmolLM2-135M-Instruct --tasks short_answers --minutes 10

The mean reward is over 32 prompts x 8 sampled completions (temperature 1, the training
distribution), for the base model and for the adapter trained for --minutes with that seed: the tiny
model with the default config, SmolLM2 with the settings in REAL_MODEL (the task README's command).
It is measured twice: on the prompts of a run's first step, which the run trains on (a rise there
can be memorisation), and on 32 of the task's held-out prompts (`eval.jsonl`), which no run trains
on. Prints one line per run and a table of medians.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile

from learning import train_for  # bench/learning.py

from workbench import Config, load_task
from workbench.engine.checkpoint import checkpoint_folder
from workbench.engine.dryrun import dry_run
from workbench.engine.policy import load_policy
from workbench.rewards.tasks import sample_task_names

# A real model's settings: 4 chat prompts x 8 completions, replies up to 32 tokens, a lower learning rate.
REAL_MODEL = dict(prompts_per_step=4, max_new_tokens=32, learning_rate=2e-4)
CHAT_TASKS = ("short_answers",)  # for real instruct models; the tiny model does not know them


def mean_rewards(config: Config, task, policy) -> dict[tuple[str, str], float]:
    """{(reward or function, 'train' or 'held-out'): mean}: on a run's first-step prompts and on held-out ones."""
    held_out = dataclasses.replace(task, rows=task.eval_rows)  # dry_run samples the rows a first step would
    means = {(key, "train"): value for key, value in _means(config, task, policy).items()}
    return means | {(key, "held-out"): value for key, value in _means(config, held_out, policy).items()}


def _means(config: Config, task, policy) -> dict[str, float]:
    """The mean reward, and each reward function's mean when there are several."""
    report = dry_run(config, task, num_prompts=32, policy=policy)
    rewards = [r for group in report.groups for r in group.rewards if r is not None]
    means = {"reward": sum(rewards) / len(rewards)}
    functions = report.function_stats()
    if len(functions) > 1:
        means |= dict(zip(functions.function, functions["mean"]))
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", default=[t for t in sample_task_names() if t not in CHAT_TASKS])
    parser.add_argument("--model", default="tiny")
    args = parser.parse_args()
    settings = {} if args.model == "tiny" else REAL_MODEL
    table = []
    for name in args.tasks:
        task, results = load_task(name), []
        for seed in args.seeds:
            config = Config(model=args.model, seed=seed, steps=100_000, checkpoint_every=100_000, **settings)
            before = mean_rewards(config, task, load_policy(config))
            workspace = tempfile.mkdtemp(prefix="bench-tasks-")
            run_id, steps = train_for(config, task, args.minutes, workspace)
            trained = load_policy(config)
            trained.load_adapter(checkpoint_folder(workspace, run_id))
            after = mean_rewards(config, task, trained)
            results.append((steps, before, after))
            changes = ", ".join(f"{k} {s} {before[k, s]:.3f} -> {after[k, s]:.3f}" for k, s in before)
            print(f"{name} seed {seed}: {steps} steps in {args.minutes} min; {changes}", flush=True)
        steps = statistics.median(steps for steps, _, _ in results)
        for key in dict.fromkeys(key for key, _ in results[0][1]):
            label = name if key == "reward" else f"{name}: {key}"
            medians = [  # training prompts before, after; held-out prompts before, after
                statistics.median(result[when][key, side] for result in results)
                for side in ("train", "held-out")
                for when in (1, 2)  # a result is (steps, before, after)
            ]
            table.append((label, steps if key == "reward" else "", *medians))
    print(f"\n{args.model}, medians of seeds {args.seeds}")
    print(f"| task | steps in {args.minutes:g} min | training prompts: before | after | held-out: before | after |")
    print("|---|---|---|---|---|---|")
    for label, steps, *medians in table:
        print(f"| {label} | {steps} | " + " | ".join(f"{m:.3f}" for m in medians) + " |")


if __name__ == "__main__":
    main()
