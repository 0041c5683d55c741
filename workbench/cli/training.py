"""The commands that train: `train` (one run, headless), `sweep` (a grid of runs), `build-tiny` (the tiny model).

Each imports the engine inside the function, so that importing the CLI loads no torch.
"""

from __future__ import annotations

import argparse
import functools
import sys
import threading
from pathlib import Path

from workbench.cli.flags import config_from_args, task_from_args
from workbench.rewards.scoring import validate_rewards
from workbench.rewards.tasks import TaskError
from workbench.store.database import Store


def run_train(args: argparse.Namespace) -> int:
    from workbench.cli.progress import follow, follow_quietly, follow_to_the_end, stop_on_first_ctrl_c
    from workbench.engine import distributed
    from workbench.engine.trainer import train

    distributed.setup()  # under torchrun or accelerate launch: join the other processes
    store = Store(args.workspace)
    if args.resume:
        run = store.run(args.resume)
        if run is None:
            raise TaskError(f"no run {args.resume!r} in workspace {args.workspace}")
        config = config_from_args(args, run["config"])
        task = task_from_args(args, args.task or run["task_path"])
    else:
        if not args.task:
            raise TaskError("--task is required: a sample task name, a task folder, or hf:DATASET[:CONFIG]")
        config = config_from_args(args)
        task = task_from_args(args, args.task)
    stop = threading.Event()
    stop_on_first_ctrl_c(stop)
    sweep = dict(sweep_id=args.sweep_id, grid=args.sweep_grid)
    events = train(config, task, args.workspace, resume=args.resume, stop=stop, **sweep)
    if distributed.is_main():
        from workbench.rewards.sandbox import sandbox_status

        print(f"rewards: {sandbox_status()}", file=sys.stderr)
        follow_run = functools.partial(follow, config=config, workspace=args.workspace)
    else:
        follow_run = follow_quietly  # under torchrun rank 0 reports the run; the others, their own failure
    code = 1
    try:
        code = follow_to_the_end(events, follow_run)
        return code
    finally:
        events.close()  # the run's own `finally` (its status, its checkpoint) ends here, while the processes
        # can still talk; then this one leaves the process group, with the others unless the run failed
        distributed.teardown(together=code in (0, 3))  # finished, stopped or paused: every rank is alive


def run_sweep(args: argparse.Namespace) -> int:
    from workbench.engine.sweep import parse_grid, parse_seeds, run_sweep  # pandas loads only for a sweep

    grid, seeds, config = parse_grid(args.grid), parse_seeds(args.seeds), config_from_args(args)
    task = task_from_args(args, args.task)  # a bad task or reward fails here, not once per run
    validate_rewards(task.rewards, task.rows, config)
    failed = run_sweep(config, args.task, grid, seeds, args.workspace, args.parallel, args.reward, args.sweep_id)
    return 1 if failed else 0


def run_build_tiny(args: argparse.Namespace) -> int:
    from workbench.engine.tiny import SHIPPED, build_tiny_model

    out = Path(args.out) if args.out else SHIPPED
    build_tiny_model(out, seed=args.seed)
    print(f"tiny model written to {out}", file=sys.stderr)
    return 0
