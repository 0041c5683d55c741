"""What isolating reward code costs, and how long a dry-run takes.

1. Scoring one step of 64 completions (8 prompts x 8) with the arithmetic task's reward: in the
   reward worker (`Scorer.score`: pickling both ways, the call, output capture, the result check)
   against calling the same function in this process with the same arguments. Goal: the worker adds
   under 20 ms per step.
2. What the reward sandbox costs (`workbench.rewards.sandbox`): starting a worker and loading the task's
   reward, and scoring that step, in the sandbox (bubblewrap and a cgroup, where they work) and in a plain
   process as before it.
3. A dry-run of 8 prompts x 8 completions on the tiny model: with the model already loaded (what the
   app does between edits) and from nothing (what `python -m workbench dry-run` does).

    python bench/rewards.py [--repeats 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager
from types import SimpleNamespace

from workbench.config import Config
from workbench.engine.dryrun import dry_run
from workbench.engine.policy import load_policy
from workbench.rewards import sandbox
from workbench.rewards.scoring import Scorer, completions_for_trl
from workbench.rewards.tasks import load_task


def step_batch(task, prompts: int = 8, group_size: int = 8):
    """64 completions like a step's: each prompt's right answer for some, near misses for the rest."""
    rows = [row for row in task.rows[:prompts] for _ in range(group_size)]
    completions = [row["answer"] if k % 3 == 0 else str(int(row["answer"]) + k) for k, row in enumerate(rows)]
    completion_ids = [[ord(c) for c in text] + [0] for text in completions]
    return rows, completions, completion_ids


def in_process(task, rows, completions, completion_ids) -> float:
    """Seconds for one call of the task's reward in this process, with the arguments the worker gets."""
    namespace: dict = {}
    exec(compile(task.rewards.text, task.rewards.filename, "exec"), namespace)
    reward = namespace["correct"]
    prompts = [row["prompt"] for row in rows]
    started = time.perf_counter()
    values = reward(
        completions=completions_for_trl(prompts, completions),
        prompts=prompts,
        completion_ids=completion_ids,
        trainer_state=SimpleNamespace(global_step=0, max_steps=1),
        answer=[row["answer"] for row in rows],
    )
    [float(v) for v in values]
    return time.perf_counter() - started


def isolated(scorer, rows, completions, completion_ids) -> float:
    started = time.perf_counter()
    scorer.score(rows, completions, completion_ids)
    return time.perf_counter() - started


def scoring_overhead(repeats: int, rounds: int) -> None:
    task = load_task("arithmetic")
    batch = step_batch(task)
    with Scorer(task.rewards, task.columns) as scorer:
        medians = []
        for _ in range(rounds):  # interleaved, so that both sides see the same machine
            ours = statistics.median(isolated(scorer, *batch) for _ in range(repeats))
            theirs = statistics.median(in_process(task, *batch) for _ in range(repeats))
            medians.append((ours, theirs))
    ours = statistics.median(m[0] for m in medians)
    theirs = statistics.median(m[1] for m in medians)
    print(f"scoring 64 completions: worker {ours * 1e3:.2f} ms, in-process {theirs * 1e3:.3f} ms")
    print(f"  isolation overhead per step: {(ours - theirs) * 1e3:.2f} ms (median of {rounds} rounds x {repeats})")


@contextmanager
def confined(sandboxed: bool):
    """Workers started in this block are sandboxed as this machine allows, or plain processes as before."""
    bubblewrap, cgroup_support = sandbox.bubblewrap, sandbox.cgroup_support
    if not sandboxed:
        sandbox.bubblewrap = lambda: (None, "off for the comparison")
        sandbox.cgroup_support = lambda: (None, "off for the comparison")
    try:
        yield
    finally:
        sandbox.bubblewrap, sandbox.cgroup_support = bubblewrap, cgroup_support


def sandbox_cost(repeats: int, rounds: int) -> None:
    task = load_task("arithmetic")
    batch = step_batch(task)
    starts, scores = {True: [], False: []}, {True: [], False: []}
    for _ in range(rounds):  # interleaved, so that both sides see the same machine
        for sandboxed in (True, False):
            with confined(sandboxed):
                for _ in range(max(1, repeats // 50)):
                    started = time.perf_counter()
                    Scorer(task.rewards, task.columns).close()
                    starts[sandboxed].append(time.perf_counter() - started)
                with Scorer(task.rewards, task.columns) as scorer:
                    scores[sandboxed].extend(isolated(scorer, *batch) for _ in range(repeats // 5))
    print(sandbox.sandbox_status())
    for sandboxed, name in ((True, "sandboxed"), (False, "plain process")):
        start, score = statistics.median(starts[sandboxed]), statistics.median(scores[sandboxed])
        print(f"  {name:>13}: start a worker and load the reward {start * 1e3:.0f} ms, score 64 completions "
              f"{score * 1e3:.2f} ms (medians)")  # fmt: skip


def dry_run_time(rounds: int) -> None:
    config, task = Config(group_size=8), load_task("arithmetic")
    cold, warm = [], []
    for seed in range(rounds):
        started = time.perf_counter()
        policy = load_policy(Config(group_size=8, seed=seed))
        dry_run(Config(group_size=8, seed=seed), task, policy=policy)
        cold.append(time.perf_counter() - started)
        started = time.perf_counter()
        dry_run(config, task, policy=policy)
        warm.append(time.perf_counter() - started)
    print(
        f"dry-run 8 prompts x 8 completions, tiny model: {statistics.median(warm):.3f} s with the model loaded, "
        f"{statistics.median(cold):.3f} s including loading it (median of {rounds})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    scoring_overhead(args.repeats, args.rounds)
    sandbox_cost(args.repeats, args.rounds)
    dry_run_time(args.rounds)
