"""The commands on a stored run: `query` (SQL), `buckets` (completions by reward values), `tokens` (one
completion token by token), `doctor` (the health checks), `export` (the run as a TRL project).

They read the store (DuckDB, pandas) and load no torch, but for `export`: the TRL export imports the engine.
"""

from __future__ import annotations

import argparse
import sys

from workbench.formatting import cut
from workbench.store.database import Store, StoreError
from workbench.store.health import CHECKS, examine
from workbench.store.queries import NAMED_QUERIES, named_sql, run_sql


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
        examples=buckets.examples.map(lambda texts: " | ".join(cut(repr(text), 40) for text in texts)),
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
        f"reward {reward}, advantage {shown.advantage:+.3f}\nprompt: {cut(repr(shown.prompt), 100)}\n"
        f"completion: {cut(repr(shown.completion), 100)}"
    )
    table = shown.tokens.assign(
        token=shown.tokens.token.map(repr), clipped=shown.tokens.clipped.map({True: "*", False: ""})
    )
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print("contribution = advantage x ratio where the clip left the gradient (0 where it cut it, marked *)")
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


def run_export(args: argparse.Namespace) -> int:
    from workbench.integrations.export import export_trl  # torch and transformers load only here

    exported = export_trl(args.workspace, args.run_id, args.out, force=args.force)
    for warning in exported.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"run {args.run_id} exported to {exported.folder} (PARITY.md: how each setting maps); "
        f"train it with TRL: bash {exported.folder / 'launch.sh'}",
        file=sys.stderr,
    )
    return 0
