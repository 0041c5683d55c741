"""`python -m workbench train | sweep | validate | dry-run | rescore | query | buckets | tokens | export | doctor`:
the engine headless.

Every config field is a flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import signal
import sys
import threading
import typing

from tqdm.auto import tqdm

from workbench.config import Config, ConfigError, field_docs
from workbench.engine import distributed
from workbench.engine.dryrun import dry_run
from workbench.engine.hub import ModelLoadError
from workbench.engine.rescoring import rescore
from workbench.engine.trainer import train
from workbench.events import (
    Evaluated,
    GroupsScored,
    HealthWarning,
    RunFailed,
    RunFinished,
    RunPaused,
    RunStarted,
    StepFinished,
)
from workbench.integrations.export import ExportError, export_trl
from workbench.rewards.scoring import RewardError, RewardSource, probes, validate_rewards
from workbench.rewards.tasks import TaskError, load_task, sample_task_names
from workbench.store.database import Store, StoreError
from workbench.store.health import CHECKS, examine
from workbench.store.queries import MAX_ROWS, NAMED_QUERIES, SQLError, named_sql, run_sql

USER_ERRORS = (ConfigError, TaskError, RewardError, ModelLoadError, StoreError, SQLError, ExportError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m workbench", description="GRPO Workbench: train with GRPO on LoRA, query rollouts."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    train_parser = commands.add_parser("train", help="train headless with a progress bar")
    train_parser.add_argument("--task", help=f"a sample task ({', '.join(sample_task_names())}) or a task folder")
    train_parser.add_argument("--workspace", default="runs", help="folder of the store and checkpoints")
    train_parser.add_argument("--resume", metavar="RUN_ID", help="continue a stopped, paused or failed run")
    train_parser.add_argument("--sweep-id", help=argparse.SUPPRESS)  # set by `sweep` for each of its runs
    train_parser.add_argument("--sweep-grid", type=json.loads, help=argparse.SUPPRESS)  # the run's grid values
    _add_reward_flag(train_parser)
    _add_config_flags(train_parser)
    train_parser.set_defaults(command=run_train)

    sweep_parser = commands.add_parser(
        "sweep", help="train every combination of a grid of config values, for each seed, one process per run"
    )
    sweep_parser.add_argument("--task", required=True, help="a sample task or a task folder")
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
    _add_reward_flag(sweep_parser)
    _add_config_flags(sweep_parser)
    sweep_parser.set_defaults(command=run_sweep)

    validate_parser = commands.add_parser("validate", help="check a task's reward functions before training")
    validate_parser.add_argument("--task", required=True, help="a sample task or a task folder (its prompts)")
    _add_reward_flag(validate_parser)
    _add_config_flags(validate_parser)
    validate_parser.set_defaults(command=run_validate)

    dry_parser = commands.add_parser("dry-run", help="sample groups from the base model and score them")
    dry_parser.add_argument("--task", required=True, help="a sample task or a task folder")
    dry_parser.add_argument("--prompts", type=int, default=8, help="how many prompts to sample a group for")
    _add_reward_flag(dry_parser)
    _add_config_flags(dry_parser)
    dry_parser.set_defaults(command=run_dry_run)

    rescore_parser = commands.add_parser("rescore", help="score a past run's rollouts with an edited reward")
    rescore_parser.add_argument("run_id", help="the run to rescore")
    rescore_parser.add_argument("--reward", required=True, metavar="FILE", help="the edited reward file")
    rescore_parser.add_argument("--step", type=int, help="only this step (default: every stored step)")
    rescore_parser.add_argument("--workspace", default="runs", help="folder of the store")
    rescore_parser.set_defaults(command=run_rescore)

    query_parser = commands.add_parser("query", help="run SQL on a workspace's store")
    query_parser.add_argument(
        "sql", help=f"a SQL query, or a named query on the latest run ({', '.join(NAMED_QUERIES)})"
    )
    query_parser.add_argument("--workspace", default="runs", help="folder of the store")
    query_parser.add_argument("--format", choices=["table", "csv"], default="table")
    query_parser.add_argument("--max-rows", type=int, default=MAX_ROWS, help="print at most this many rows")
    query_parser.set_defaults(command=run_query)

    buckets_parser = commands.add_parser(
        "buckets", help="a run's completions bucketed by their reward functions' values, with examples of each"
    )
    buckets_parser.add_argument("run_id", help="the run to read")
    buckets_parser.add_argument("--workspace", default="runs", help="folder of the store")
    buckets_parser.add_argument("--steps", metavar="A-B", help="only these steps, e.g. 1-10 or 7 (default: every step)")
    buckets_parser.add_argument(
        "--examples", type=int, default=3, metavar="N", help="example completions per bucket [3]"
    )
    buckets_parser.set_defaults(command=run_buckets)

    tokens_parser = commands.add_parser(
        "tokens", help="one completion token by token: log p under the policy and the reference, ratio, clip, KL"
    )
    tokens_parser.add_argument("run_id", help="the run to read")
    tokens_parser.add_argument("--workspace", default="runs", help="folder of the store")
    tokens_parser.add_argument("--step", type=int, help="the step (default: the run's latest)")
    tokens_parser.add_argument("--group", type=int, default=0, help="the group of the step [0]")
    tokens_parser.add_argument("--completion", type=int, default=0, help="the completion of the group [0]")
    tokens_parser.set_defaults(command=run_tokens)

    export_parser = commands.add_parser(
        "export", help="write a stored run as a TRL project (grpo.yaml, rewards, prompts, launch.sh, PARITY.md)"
    )
    export_parser.add_argument("run_id", help="the run to export")
    export_parser.add_argument("--to", choices=["trl"], default="trl", help="the engine to export for [trl]")
    export_parser.add_argument("--out", required=True, metavar="DIR", help="the project's folder (new or empty)")
    export_parser.add_argument("--workspace", default="runs", help="folder of the store")
    export_parser.add_argument("--force", action="store_true", help="write into a folder that holds files")
    export_parser.set_defaults(command=run_export)

    doctor_parser = commands.add_parser("doctor", help="run the health checks on a stored run, with advice")
    doctor_parser.add_argument("run_id", help="the run to check")
    doctor_parser.add_argument("--workspace", default="runs", help="folder of the store")
    doctor_parser.set_defaults(command=run_doctor)

    app_parser = commands.add_parser("app", help="serve the app in a browser (what `python app.py` does)")
    add_app_flags(app_parser)
    app_parser.set_defaults(command=run_app)

    tiny_parser = commands.add_parser("build-tiny", help="rebuild the built-in tiny model from its recipe (~4 min)")
    tiny_parser.add_argument("--out", help="folder to write (default: the package's own tiny_model folder)")
    tiny_parser.add_argument("--seed", type=int, default=0)
    tiny_parser.set_defaults(command=run_build_tiny)
    return parser


def _add_reward_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reward", metavar="FILE", help="score with this reward file instead of the task's reward.py")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
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


def _weight(text: str) -> tuple[str, float]:
    name, _, weight = text.partition("=")
    try:
        return name, float(weight)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=WEIGHT, e.g. correct=1.0") from None


def _task(args: argparse.Namespace, name: str):
    """The task, scored by --reward when given."""
    task = load_task(name)
    return task.with_rewards(RewardSource.from_file(args.reward)) if args.reward else task


def run_train(args: argparse.Namespace) -> int:
    distributed.setup()  # under torchrun or accelerate launch: join the other processes
    store = Store(args.workspace)
    if args.resume:
        run = store.run(args.resume)
        if run is None:
            raise TaskError(f"no run {args.resume!r} in workspace {args.workspace}")
        config = config_from_args(args, run["config"])
        task = _task(args, args.task or run["task_path"])
    else:
        if not args.task:
            raise TaskError("--task is required: a sample task name or a task folder")
        config = config_from_args(args)
        task = _task(args, args.task)
    stop = threading.Event()
    _stop_on_first_ctrl_c(stop)
    sweep = dict(sweep_id=args.sweep_id, grid=args.sweep_grid)
    events = train(config, task, args.workspace, resume=args.resume, stop=stop, **sweep)
    if distributed.is_main():
        follow = functools.partial(_follow, config=config, workspace=args.workspace)
    else:
        follow = _follow_quietly  # under torchrun rank 0 reports the run; the others, their own failure
    code = 1
    try:
        code = _follow_to_the_end(events, follow)
        return code
    finally:
        events.close()  # the run's own `finally` (its status, its checkpoint) ends here, while the processes
        # can still talk; then this one leaves the process group, with the others unless the run failed
        distributed.teardown(together=code in (0, 3))  # finished, stopped or paused: every rank is alive


def _follow_to_the_end(events, follow) -> int:
    """follow(events) -> the exit code. Under torchrun, the SIGTERM that says another process failed raises
    ProcessStopped wherever this process is: when that is in `follow` (drawing the progress bar) rather than
    in the run, it is handed to the run where it waits, so that the run stores and reports it as its own
    failure (status failed, the error, the resume line) instead of being closed as stopped."""
    try:
        return follow(events)
    except distributed.ProcessStopped as stopped:
        return follow(_raised_in(events, stopped))


def _raised_in(events, exception: Exception):
    """The run's events from `exception` raised at the `yield` where the run waits."""
    yield events.throw(exception)
    yield from events


def _follow_quietly(events) -> int:
    """A rank other than 0: print only why it failed (its traceback is nowhere else); the exit code as _follow's."""
    for event in events:
        if isinstance(event, RunFailed):
            print(f"rank {distributed.rank()} failed at step {event.step}:\n{event.traceback}", file=sys.stderr)
            return 1
        if isinstance(event, RunPaused):
            return 3
    return 0


def run_doctor(args: argparse.Namespace) -> int:
    """Print the checks that fire on the run now, and those that fired earlier; exit 1 when any fires now."""
    Store(args.workspace, create=False)  # a workspace without a store is named, not made
    store = Store(args.workspace)  # a store of an older schema gets its `health` table
    run = store.run(args.run_id)
    if run is None:
        raise StoreError(f"no run {args.run_id!r} in workspace {args.workspace}")
    steps = store.steps(args.run_id)
    print(f"run {args.run_id}: {run['status']}, {len(steps)} steps, task {run['task']}, model {run['model']}")
    findings = examine(store, args.run_id)
    for finding in findings:
        print(finding.explain())
    if not findings:
        print(f"no health check fires (checked: {', '.join(CHECKS)})")
    earlier = store.health(args.run_id)
    earlier = earlier[~earlier.name.isin([f.check for f in findings])].drop_duplicates("name")
    for row in earlier.itertuples():
        print(f"earlier: {row.name} fired at step {row.step}: {row.saw}")
    return 1 if findings else 0


def run_sweep(args: argparse.Namespace) -> int:
    from workbench.engine.sweep import parse_grid, parse_seeds, run_sweep  # pandas loads only for a sweep

    grid, seeds, config = parse_grid(args.grid), parse_seeds(args.seeds), config_from_args(args)
    task = _task(args, args.task)  # a bad task or reward fails here, not once per run
    validate_rewards(task.rewards, task.rows, config)
    failed = run_sweep(config, args.task, grid, seeds, args.workspace, args.parallel, args.reward, args.sweep_id)
    return 1 if failed else 0


def _evaluated_line(event: Evaluated) -> str:
    m = event.metrics
    reward = "-" if m["reward_mean"] is None else f"{m['reward_mean']:.3f}"
    return (
        f"step {event.step} held-out ({m['num_prompts']} prompts): reward {reward}, "
        f"greedy accuracy {m['greedy_accuracy']:.0%}, pass@1 {m['pass_at_1']:.0%}, "
        f"pass@{m['num_generations']} {m['pass_at_k']:.0%}"
    )


def _follow(events, config: Config, workspace: str) -> int:
    """Print a progress bar from the events; the exit code says how the run ended."""
    bar = None
    for event in events:
        if isinstance(event, RunStarted):
            print(f"run {event.run_id}: task {event.task}, model {event.model}", file=sys.stderr)
            bar = tqdm(total=config.steps, initial=event.start_step - 1, unit="step")
        elif isinstance(event, StepFinished):
            m = event.metrics
            kl = "-" if m["kl"] is None else f"{m['kl']:.4f}"
            reward = "-" if m["reward_mean"] is None else f"{m['reward_mean']:.3f}"
            bar.set_postfix(reward=reward, kl=kl, tokens=f"{m['completion_tokens_mean']:.1f}")
            if m["reward_mean"] is None:
                bar.write(
                    f"step {event.step}: no reward function scored any completion (all None), so nothing trained",
                    file=sys.stderr,
                )
            bar.update(1)
        elif isinstance(event, Evaluated):
            bar.write(_evaluated_line(event), file=sys.stderr)
        elif isinstance(event, HealthWarning):
            bar.write(f"health: {event.finding.explain()}", file=sys.stderr)
        elif isinstance(event, RunFinished):
            bar.close()
            print(
                f"run {event.run_id} {event.status} at step {event.step}; adapter in {event.checkpoint}",
                file=sys.stderr,
            )
        elif isinstance(event, RunPaused):
            if bar:
                bar.close()
            print(
                f"run {event.run_id} paused at step {event.step}: {event.failure.explain()}\n\n"
                f"fix the reward, then resume from step {event.step} with: "
                f"{distributed.launcher()} train --workspace {workspace} --resume {event.run_id} [--reward FILE]",
                file=sys.stderr,
            )
            return 3
        elif isinstance(event, RunFailed):
            if bar:
                bar.close()
            print(event.traceback, file=sys.stderr)
            print(
                f"run {event.run_id} failed at step {event.step}: {event.error}\n"
                f"resume with: {distributed.launcher()} train --workspace {workspace} --resume {event.run_id}",
                file=sys.stderr,
            )
            return 1
        elif isinstance(event, GroupsScored):
            pass
    return 0


def _stop_on_first_ctrl_c(stop: threading.Event) -> None:
    """First Ctrl-C: finish the step, checkpoint and stop. Second: interrupt at once."""

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this step (Ctrl-C again to abort)", file=sys.stderr)

    signal.signal(signal.SIGINT, handler)


def run_validate(args: argparse.Namespace) -> int:
    task = _task(args, args.task)
    scores = validate_rewards(task.rewards, task.rows, config_from_args(args))
    print(f"{task.rewards.filename}: reward functions {', '.join(scores.values)}")
    for i, (row, completion) in enumerate(probes(task.rows)):
        values = ", ".join(f"{name}={v[i]}" for name, v in scores.values.items())
        print(f"  {completion!r} for {row['prompt']!r}: reward {scores.rewards[i]:g} ({values})")
    return 0


def run_dry_run(args: argparse.Namespace) -> int:
    task = _task(args, args.task)
    print(dry_run(config_from_args(args), task, num_prompts=args.prompts).report())
    return 0


def run_rescore(args: argparse.Namespace) -> int:
    print(rescore(args.workspace, args.run_id, RewardSource.from_file(args.reward), step=args.step).report())
    return 0


def run_query(args: argparse.Namespace) -> int:
    sql = named_sql(args.sql) if args.sql in NAMED_QUERIES else args.sql
    result = run_sql(Store(args.workspace, create=False), sql, max_rows=args.max_rows)
    if args.format == "csv":
        result.frame.to_csv(sys.stdout, index=False)
    else:
        print(result.frame.to_string(index=False) if not result.frame.empty else "(no rows)")
    if result.truncated:
        print(result.message, file=sys.stderr)
    return 0


def run_buckets(args: argparse.Namespace) -> int:
    """Print the run's reward buckets as a table: each function's value, count, share, mean reward, examples."""
    from workbench.store.inspection import parse_steps, reward_buckets  # pandas loads only here

    steps = parse_steps(args.steps) if args.steps is not None else None
    buckets = reward_buckets(Store(args.workspace, create=False), args.run_id, steps, args.examples)
    names = list(buckets.columns[: buckets.columns.get_loc("count")])
    where = "every step" if steps is None else f"steps {steps[0]}-{steps[1]}"
    print(
        f"run {args.run_id}, {where}: {buckets['count'].sum()} completions in {len(buckets)} buckets of "
        f"{', '.join(names) or 'no reward function'}"
    )
    table = buckets.assign(
        share=buckets.share.map(lambda share: f"{share:.1%}"),
        examples=buckets.examples.map(lambda texts: " | ".join(_cut(repr(text), 40) for text in texts)),
    )
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}", na_rep="None"))
    return 0


def run_tokens(args: argparse.Namespace) -> int:
    """Print one completion token by token, with the numbers of its update and each token's push."""
    from workbench.store.inspection import completion_tokens  # pandas loads only here

    store = Store(args.workspace, create=False)
    shown = completion_tokens(store, args.run_id, args.step, args.group, args.completion)
    reward = "None" if shown.reward is None else f"{shown.reward:.3f}"
    print(
        f"run {shown.run_id}, step {shown.step}, group {shown.group_id}, completion {shown.sample_idx}: "
        f"reward {reward}, advantage {shown.advantage:+.3f}\nprompt: {_cut(repr(shown.prompt), 100)}\n"
        f"completion: {_cut(repr(shown.completion), 100)}"
    )
    table = shown.tokens.assign(
        token=shown.tokens.token.map(repr), clipped=shown.tokens.clipped.map({True: "*", False: ""})
    )
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print("contribution = advantage x ratio where the clip left the gradient (0 where it cut it, marked *)")
    return 0


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def run_export(args: argparse.Namespace) -> int:
    exported = export_trl(args.workspace, args.run_id, args.out, force=args.force)
    for warning in exported.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"run {args.run_id} exported to {exported.folder} (PARITY.md: how each setting maps); "
        f"train it with TRL: bash {exported.folder / 'launch.sh'}",
        file=sys.stderr,
    )
    return 0


def add_app_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--workspace", default="runs", help="folder of the store and checkpoints")
    parser.add_argument(
        "--password",
        default=os.environ.get("WORKBENCH_PASSWORD"),
        help="required off 127.0.0.1 (or set WORKBENCH_PASSWORD)",
    )


def run_app(args: argparse.Namespace) -> int:
    """Serve the app; off 127.0.0.1 only with a password, because the reward editor runs code."""
    if args.host not in ("127.0.0.1", "localhost") and not args.password:
        print(
            f"error: --host {args.host} serves a reward editor that runs code; give --password "
            "(or WORKBENCH_PASSWORD) to bind anywhere but 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    from workbench.ui import KEEP_ZOOM_JS, build_app  # gradio loads only for the app

    auth = ("workbench", args.password) if args.password else None
    build_app(args.workspace).launch(
        server_name=args.host, server_port=args.port, auth=auth, js=KEEP_ZOOM_JS, show_error=True
    )
    return 0


def run_build_tiny(args: argparse.Namespace) -> int:
    from pathlib import Path

    from workbench.engine.tiny import SHIPPED, build_tiny_model

    out = Path(args.out) if args.out else SHIPPED
    build_tiny_model(out, seed=args.seed)
    print(f"tiny model written to {out}", file=sys.stderr)
    return 0
