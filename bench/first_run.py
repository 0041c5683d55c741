"""The app's first run, measured: the default config on a task (arithmetic, as the app starts) for a few seeds.

    python bench/first_run.py [--seeds 0 1 2] [--tasks arithmetic | all] [--set learning_rate=1e-3 steps=80]

Each run is the Train form's first config (`config_form.first_config()`: Config's defaults with the tiny
model's preset) with `seed` and `--set`'s settings, trained to its last step. One line per run:
the mean reward of its first 10 steps and of its last 10, the rise between them, the seconds it took
(model load and every step: what a user waits for), and the health checks that started firing during the
run (with their step) or fire at its end. The goal of a first run (docs/figures.md): a rise of at
least 0.2 within a minute, and no check firing. `--set` tries other settings (values as Python literals).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import statistics
import tempfile
import time

from workbench import Config, load_task, train
from workbench.events import HealthWarning, StepFinished
from workbench.rewards.tasks import sample_task_names
from workbench.store import health
from workbench.store.database import Store
from workbench.ui.config_form import first_config

CHAT_TASKS = ("short_answers", "polite_reply")  # for real instruct models; the tiny model does not know them
EDGE = 10  # steps averaged at each end of the run


def first_run(config: Config, task) -> dict:
    """Train `config` on `task` in a new workspace: the reward means, seconds and checks of the run."""
    workspace = tempfile.mkdtemp(prefix="bench-first-run-")
    started = time.perf_counter()
    rewards, started_firing, run_id = [], [], None
    for event in train(config, task, workspace):
        if isinstance(event, StepFinished):
            run_id = event.run_id
            rewards.append(event.metrics["reward_mean"])
        elif isinstance(event, HealthWarning):
            started_firing.append(f"{event.finding.check}@{event.finding.step}")
    seconds = time.perf_counter() - started
    at_end = [f.check for f in health.examine(Store(workspace), run_id)]
    first, last = statistics.mean(rewards[:EDGE]), statistics.mean(rewards[-EDGE:])
    return dict(first=first, last=last, rise=last - first, seconds=seconds, fired=started_firing, at_end=at_end)


def settings(pairs: list[str]) -> dict:
    """name=value pairs, each value a Python literal (a bare word is a string)."""
    values = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        try:
            values[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            values[name] = text
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", default=["arithmetic"], help="task names, or 'all' sample tasks")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="settings other than defaults")
    args = parser.parse_args()
    names = [t for t in sample_task_names() if t not in CHAT_TASKS] if args.tasks == ["all"] else args.tasks
    changed = settings(args.set)
    base = first_config()
    print(f"settings: {dataclasses.replace(base, **changed).changed() or 'the defaults'}", flush=True)
    for name in names:
        task, results = load_task(name), []
        for seed in args.seeds:
            result = first_run(dataclasses.replace(base, seed=seed, **changed), task)
            results.append(result)
            print(
                f"{name} seed {seed}: first {EDGE} {result['first']:.3f}, last {EDGE} {result['last']:.3f}, "
                f"rise {result['rise']:+.3f}, {result['seconds']:.1f} s; checks started firing: "
                f"{', '.join(result['fired']) or 'none'}; at the end: {', '.join(result['at_end']) or 'none'}",
                flush=True,
            )
        rises = [r["rise"] for r in results]
        print(
            f"{name}: rise min {min(rises):+.3f}, median {statistics.median(rises):+.3f}; seconds median "
            f"{statistics.median(r['seconds'] for r in results):.1f}; runs with a check: "
            f"{sum(bool(r['fired'] or r['at_end']) for r in results)} of {len(results)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
