"""`python -m workbench train | sweep | validate | dry-run | rescore | query | buckets | tokens | export | doctor`:
the engine headless.

Every config field is a flag. This module holds the commands' parser and `main`; the commands live by what
they do: training (train, sweep, build-tiny) and progress (a run's progress bar, Ctrl-C), reward_checks
(validate, dry-run, rescore), inspection (query, buckets, tokens, doctor, export), app (the browser app),
flags (the config flags made from `Config`). A command imports torch, transformers, peft or gradio inside the
function that runs it, so that `--help`, `query` and the other reads answer at once (tests/test_cli.py).
"""

from __future__ import annotations

import argparse
import json
import sys

from workbench.cli import app, generation, inspection, reward_checks, training
from workbench.cli.flags import add_config_flags, add_reward_flag, config_from_args
from workbench.rewards.tasks import sample_task_names
from workbench.store.queries import MAX_ROWS, NAMED_QUERIES

__all__ = ["build_parser", "config_from_args", "main"]

# The errors a user fixes (a flag, a task, a reward file, a model, a store, SQL, an export folder): one line,
# exit 2. Named by module, so that main imports none of them: an error whose module no command loaded was
# never raised, and the engine's errors stay unloaded until a command needs the engine.
USER_ERRORS = {
    "workbench.config": "ConfigError",
    "workbench.rewards.tasks": "TaskError",
    "workbench.rewards.scoring": "RewardError",
    "workbench.engine.hub": "ModelLoadError",
    "workbench.engine.checkpoint": "RunHeld",
    "workbench.store.schema": "StoreError",
    "workbench.store.queries": "SQLError",
    "workbench.integrations.export": "ExportError",
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except Exception as error:
        if not is_user_error(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2


def is_user_error(error: Exception) -> bool:
    loaded = tuple(getattr(sys.modules[module], name) for module, name in USER_ERRORS.items() if module in sys.modules)
    return isinstance(error, loaded)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m workbench", description="GRPO Workbench: train with GRPO on LoRA, query rollouts."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    train_parser = commands.add_parser("train", help="train headless with a progress bar")
    train_parser.add_argument(
        "--task",
        help=f"a sample task ({', '.join(sample_task_names())}), a task folder, or hf:DATASET[:CONFIG] (with --reward)",
    )
    train_parser.add_argument("--workspace", default="runs", help="folder of the store and checkpoints")
    train_parser.add_argument("--resume", metavar="RUN_ID", help="continue a stopped, paused or failed run")
    train_parser.add_argument("--sweep-id", help=argparse.SUPPRESS)  # set by `sweep` for each of its runs
    train_parser.add_argument("--sweep-grid", type=json.loads, help=argparse.SUPPRESS)  # the run's grid values
    add_reward_flag(train_parser)
    add_config_flags(train_parser)
    train_parser.set_defaults(command=training.run_train)

    sweep_parser = commands.add_parser(
        "sweep", help="train every combination of a grid of config values, for each seed, one process per run"
    )
    sweep_parser.add_argument("--task", required=True, help="a sample task, a task folder, or hf:DATASET[:CONFIG]")
    sweep_parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="FIELD=V1,V2",
        help="config values to sweep, e.g. --grid group_size=2,4,8 --grid beta=0,0.04 (repeat for more fields)",
    )
    sweep_parser.add_argument("--seeds", default="0", help="seeds of every grid point, e.g. 0,1,2 [0]")
    sweep_parser.add_argument("--parallel", type=int, default=1, metavar="K", help="runs training at once [1]")
    sweep_parser.add_argument("--workspace", default="runs", help="folder of the store and checkpoints")
    sweep_parser.add_argument("--sweep-id", help="name of the sweep (default: made from the task and the time)")
    add_reward_flag(sweep_parser)
    add_config_flags(sweep_parser)
    sweep_parser.set_defaults(command=training.run_sweep)

    validate_parser = commands.add_parser("validate", help="check a task's reward functions before training")
    validate_parser.add_argument(
        "--task", required=True, help="a sample task, a task folder, or hf:DATASET[:CONFIG] (its prompts)"
    )
    add_reward_flag(validate_parser)
    add_config_flags(validate_parser)
    validate_parser.set_defaults(command=reward_checks.run_validate)

    dry_parser = commands.add_parser("dry-run", help="sample groups from the base model and score them")
    dry_parser.add_argument("--task", required=True, help="a sample task, a task folder, or hf:DATASET[:CONFIG]")
    dry_parser.add_argument("--prompts", type=int, default=8, help="how many prompts to sample a group for")
    add_reward_flag(dry_parser)
    add_config_flags(dry_parser)
    dry_parser.set_defaults(command=reward_checks.run_dry_run)

    rescore_parser = commands.add_parser("rescore", help="score a past run's rollouts with an edited reward")
    rescore_parser.add_argument("run_id", help="the run to rescore")
    rescore_parser.add_argument("--reward", required=True, metavar="FILE", help="the edited reward file")
    rescore_parser.add_argument("--step", type=int, help="only this step (default: every stored step)")
    rescore_parser.add_argument("--workspace", default="runs", help="folder of the store")
    rescore_parser.set_defaults(command=reward_checks.run_rescore)

    query_parser = commands.add_parser("query", help="run SQL on a workspace's store")
    query_parser.add_argument(
        "sql", help=f"a SQL query, or a named query on the latest run ({', '.join(NAMED_QUERIES)})"
    )
    query_parser.add_argument("--workspace", default="runs", help="folder of the store")
    query_parser.add_argument("--format", choices=["table", "csv"], default="table")
    query_parser.add_argument("--max-rows", type=int, default=MAX_ROWS, help="print at most this many rows")
    query_parser.set_defaults(command=inspection.run_query)

    buckets_parser = commands.add_parser(
        "buckets", help="a run's completions bucketed by their reward functions' values, with examples of each"
    )
    buckets_parser.add_argument("run_id", help="the run to read")
    buckets_parser.add_argument("--workspace", default="runs", help="folder of the store")
    buckets_parser.add_argument("--steps", metavar="A-B", help="only these steps, e.g. 1-10 or 7 (default: every step)")
    buckets_parser.add_argument(
        "--examples", type=int, default=3, metavar="N", help="example completions per bucket [3]"
    )
    buckets_parser.set_defaults(command=inspection.run_buckets)

    tokens_parser = commands.add_parser(
        "tokens", help="one completion token by token: log p under the policy and the reference, ratio, clip, KL"
    )
    tokens_parser.add_argument("run_id", help="the run to read")
    tokens_parser.add_argument("--workspace", default="runs", help="folder of the store")
    tokens_parser.add_argument("--step", type=int, help="the step (default: the run's latest)")
    tokens_parser.add_argument("--group", type=int, default=0, help="the group of the step [0]")
    tokens_parser.add_argument("--completion", type=int, default=0, help="the completion of the group [0]")
    tokens_parser.set_defaults(command=inspection.run_tokens)

    export_parser = commands.add_parser(
        "export", help="write a stored run as a TRL project (grpo.yaml, rewards, prompts, launch.sh, PARITY.md)"
    )
    export_parser.add_argument("run_id", help="the run to export")
    export_parser.add_argument("--to", choices=["trl"], default="trl", help="the engine to export for [trl]")
    export_parser.add_argument("--out", required=True, metavar="DIR", help="the project's folder (new or empty)")
    export_parser.add_argument("--workspace", default="runs", help="folder of the store")
    export_parser.add_argument("--force", action="store_true", help="write into a folder that holds files")
    export_parser.set_defaults(command=inspection.run_export)

    doctor_parser = commands.add_parser("doctor", help="run the health checks on a stored run, with advice")
    doctor_parser.add_argument("run_id", help="the run to check")
    doctor_parser.add_argument("--workspace", default="runs", help="folder of the store")
    doctor_parser.set_defaults(command=inspection.run_doctor)

    generation.add_parser(commands)  # generate: base model and adapter side by side

    app_parser = commands.add_parser("app", help="serve the app in a browser (what `python app.py` does)")
    app.add_app_flags(app_parser)
    app_parser.set_defaults(command=app.run_app)
    hashing = commands.add_parser("hash-password", help="a password (on stdin) as a classroom users file may hold it")
    hashing.set_defaults(command=app.run_hash_password)

    tiny_parser = commands.add_parser("build-tiny", help="rebuild the built-in tiny model from its recipe (~4 min)")
    tiny_parser.add_argument("--out", help="folder to write (default: the package's own tiny_model folder)")
    tiny_parser.add_argument("--seed", type=int, default=0)
    tiny_parser.set_defaults(command=training.run_build_tiny)
    return parser
