"""The tiny model's arithmetic accuracy before GRPO and after a fixed wall-clock budget of training.

    python bench/learning.py [--minutes 5] [--seeds 0 1 2]

Accuracy is greedy exact match on 300 two-digit additions that are not in the task's prompts.
Prints one line per seed and the medians; figures go in docs/figures.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time

import torch

from workbench import Config, load_task, train
from workbench.engine.checkpoint import checkpoint_folder
from workbench.engine.policy import Policy, load_policy
from workbench.events import StepFinished


def held_out_problems(task, count: int = 300) -> list[tuple[str, str]]:
    seen = {row["prompt"] for row in task.rows}
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100) if f"{a}+{b}=" not in seen]
    random.Random(0).shuffle(pairs)
    return [(f"{a}+{b}=", str(a + b)) for a, b in pairs[:count]]


@torch.no_grad()
def accuracy(policy: Policy, problems: list[tuple[str, str]]) -> float:
    tokenizer = policy.tokenizer
    batch = tokenizer([p for p, _ in problems], return_tensors="pt", padding=True).to(policy.device)
    policy.model.eval()
    with policy.autocast():
        output = policy.model.generate(**batch, do_sample=False, max_new_tokens=8, pad_token_id=tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return sum(text.strip() == answer for text, (_, answer) in zip(texts, problems)) / len(problems)


def train_for(config: Config, task, minutes: float, workspace: str):
    """Train until the time budget runs out; returns the run id and the steps done."""
    stop, deadline, steps, run_id = threading.Event(), time.monotonic() + 60 * minutes, 0, None
    for event in train(config, task, workspace, stop=stop):
        if isinstance(event, StepFinished):
            run_id, steps = event.run_id, event.step
            if time.monotonic() > deadline:
                stop.set()
    return run_id, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    task = load_task("arithmetic")
    problems = held_out_problems(task)
    results = []
    for seed in args.seeds:
        config = Config(seed=seed, steps=100_000, checkpoint_every=100_000)
        before = accuracy(load_policy(config), problems)
        workspace = tempfile.mkdtemp(prefix="bench-learning-")
        run_id, steps = train_for(config, task, args.minutes, workspace)
        trained = load_policy(config)
        trained.load_adapter(checkpoint_folder(workspace, run_id))
        after = accuracy(trained, problems)
        results.append((before, after))
        print(
            f"seed {seed}: {steps} steps in {args.minutes} min, accuracy {before:.1%} -> {after:.1%}",
            flush=True,
        )
    before = statistics.median(b for b, _ in results)
    after = statistics.median(a for _, a in results)
    print(f"median of {len(results)} seeds: {before:.1%} -> {after:.1%} ({after - before:+.1%})")


if __name__ == "__main__":
    main()
