"""Sweeps: every combination of a grid of config values, for each seed, each run in a process of its own.

`python -m workbench sweep --task arithmetic --grid group_size=2,4 --grid beta=0,0.04 --seeds 0,1,2`
plans 2 x 2 x 3 = 12 runs and trains each with `python -m workbench train`, at most `parallel` at
once. A process per run, so that each run's peak memory (`runs.peak_memory_mib`) is its own. Each
run is stored with the sweep's id (`runs.sweep_id`) and its grid values (`runs.grid`); `Store.sweep`
reads them back, `summary` folds the seeds of each grid point, and `plots.sweep_curves` draws one
band over seeds per grid point.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import typing
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from workbench.commands import train_arguments
from workbench.config import Config, ConfigError
from workbench.engine.threads import RUNS_AT_ONCE
from workbench.store.database import Store, new_run_id

KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "a word"}  # the fields a grid sweeps
BOOLS = {"true": True, "on": True, "1": True, "false": False, "off": False, "0": False}


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its grid point, its seed, and the Config it trains."""

    grid: dict
    seed: int
    config: Config

    @property
    def label(self) -> str:
        return f"{point_label(self.grid)} seed={self.seed}"


def parse_grid(specs: list[str]) -> dict[str, list]:
    """['group_size=2,4', 'beta=0,0.04'] -> {'group_size': [2, 4], 'beta': [0.0, 0.04]}, each value typed
    as its Config field. A name that is no field, a value of the wrong type, or no values raise a
    ConfigError that names them."""
    kinds = typing.get_type_hints(Config)
    grid = {}
    for spec in specs:
        name, equals, values = (part.strip() for part in spec.partition("="))
        name = name.replace("-", "_")  # the flag's spelling works too
        if not equals:
            raise ConfigError(f"grid {spec.strip()!r} is not FIELD=V1,V2,... (e.g. group_size=2,4,8)")
        if name not in kinds:
            close = difflib.get_close_matches(name, list(kinds), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"grid: {name!r} is not a config field{hint}")
        if name == "seed":
            raise ConfigError("grid: seed is swept by the seeds (--seeds 0,1,2), not by the grid")
        if kinds[name] not in KINDS:
            raise ConfigError(f"grid: {name} holds a list or a mapping, which a grid cannot sweep")
        if name in grid:
            raise ConfigError(f"grid: {name} is given twice; list all its values once, e.g. {name}=V1,V2")
        texts = [text.strip() for text in values.split(",") if text.strip()]
        if not texts:
            raise ConfigError(f"grid: {name} lists no values; give them as {name}=V1,V2")
        grid[name] = [_typed(name, kinds[name], text) for text in texts]
        if len(set(grid[name])) < len(grid[name]):
            raise ConfigError(f"grid: {name} lists a value twice ({values.strip()})")
    return grid


def _typed(name: str, kind: type, text: str):
    """One grid value as its field's type: '4' -> 4 for an int field, 'on' -> True for a bool one."""
    try:
        return BOOLS[text.lower()] if kind is bool else kind(text)
    except (KeyError, ValueError):
        raise ConfigError(f"grid: {name}={text!r} is not {KINDS[kind]}, as {name} must be") from None


def grid_from_text(text: str) -> dict[str, list]:
    """The app's grid box: fields separated by ';' or new lines, e.g. 'group_size=2,4; beta=0,0.04'."""
    return parse_grid([spec for spec in re.split(r"[;\n]", text) if spec.strip()])


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' (or '0 1 2') -> [0, 1, 2]."""
    words = [word for word in re.split(r"[,\s]+", str(text)) if word]
    if not words or not all(re.fullmatch(r"\d+", word) for word in words):
        raise ConfigError(f"seeds must be whole numbers separated by commas, e.g. 0,1,2; got {text!r}")
    seeds = [int(word) for word in words]
    if len(set(seeds)) < len(seeds):
        raise ConfigError(f"seeds list a seed twice: {text!r}")
    return seeds


def plan(base: Config, grid: dict[str, list], seeds: list[int]) -> list[SweepRun]:
    """Every combination of the grid's values (their cartesian product) for each seed, over `base`.

    Seed by seed, so a sweep cut short has every grid point at its first seeds. A combination that
    Config refuses raises its ConfigError, with the grid point it came from."""
    runs = []
    for seed in seeds:
        for values in itertools.product(*grid.values()):
            point = dict(zip(grid, values))
            try:
                config = dataclasses.replace(base, **point, seed=seed)
            except ConfigError as error:
                raise ConfigError(f"grid point {point_label(point)}: {error}") from None
            runs.append(SweepRun(point, seed, config))
    return runs


def checked_plan(base: Config, grid: dict[str, list], seeds: list[int], parallel: int) -> list[SweepRun]:
    """`plan`, with `parallel` (runs training at once) checked too: what a sweep checks before it starts."""
    if parallel < 1:
        raise ConfigError(f"parallel must be at least 1 (runs training at once), got {parallel}")
    return plan(base, grid, seeds)


def point_label(grid: dict) -> str:
    """A grid point as one label, 'group_size=2 beta=0.04' (`Store.sweep` names its `point` so)."""
    return " ".join(f"{name}={value}" for name, value in grid.items()) or "(no grid)"


def new_sweep_id(task: str) -> str:
    return new_run_id(f"sweep-{Path(task).name}")


def run_sweep(
    base: Config,
    task: str,
    grid: dict[str, list],
    seeds: list[int],
    workspace: str | Path,
    parallel: int = 1,
    reward_file: str | None = None,
    sweep_id: str | None = None,
) -> list[SweepRun]:
    """Train every run of the sweep, at most `parallel` at once, each as `python -m workbench train` in its
    own process; print a line as each run ends and the summary at the end. A run that fails is reported
    and the others go on.  -> the runs that failed

    Each run's output goes to `<workspace>/sweeps/<sweep_id>/run-<n>.log`."""
    runs = checked_plan(base, grid, seeds, parallel)
    sweep_id = sweep_id or new_sweep_id(task)
    logs = Path(workspace) / "sweeps" / sweep_id
    logs.mkdir(parents=True, exist_ok=True)
    store = Store(workspace)  # made (or migrated) once, before the runs' processes open it
    print(f"sweep {sweep_id}: {len(runs)} runs, {parallel} at once; their output in {logs}", flush=True)
    env = os.environ | {RUNS_AT_ONCE: str(parallel)}  # runs side by side share the cores (engine.threads)
    failed = []
    with ThreadPoolExecutor(parallel) as pool:
        started = {
            pool.submit(_train, run, task, workspace, reward_file, sweep_id, logs / f"run-{n:02d}.log", env): n
            for n, run in enumerate(runs, start=1)
        }
        try:
            for done, future in enumerate(as_completed(started), start=1):
                n = started[future]
                run, log = runs[n - 1], logs / f"run-{n:02d}.log"
                line, ok = _outcome(store, sweep_id, run, future.result(), log)
                print(f"[{done}/{len(runs)}] {run.label}: {line}", flush=True)
                if not ok:
                    failed.append(run)
        except KeyboardInterrupt:  # the runs got the Ctrl-C too: they finish their step and stop
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    table = summary(store.sweep(sweep_id))
    print(f"\nsweep {sweep_id}: {len(runs) - len(failed)} of {len(runs)} runs finished\n", flush=True)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"), flush=True)
    return failed


def _train(run: SweepRun, task, workspace, reward_file, sweep_id: str, log: Path, env: dict) -> int:
    """`python -m workbench train` for one run, its output to `log`.  -> its exit code"""
    words = train_arguments(run.config, task, str(workspace), reward_file)
    words += ["--sweep-id", sweep_id, "--sweep-grid", json.dumps(run.grid)]
    with open(log, "w") as out:
        train = [sys.executable, "-m", "workbench", "train", *words]
        return subprocess.run(train, stdout=out, stderr=subprocess.STDOUT, env=env).returncode


def _outcome(store: Store, sweep_id: str, run: SweepRun, code: int, log: Path) -> tuple[str, bool]:
    """A run's progress line, from its row in the store, and whether it finished (or stopped)."""
    runs = store.sweep(sweep_id)
    row = runs[(runs.seed == run.seed) & (runs.grid.map(lambda grid: grid == run.grid))]
    if row.empty or code != 0:  # the stored error, or the last line it printed (it failed before its run began)
        lines = log.read_text(errors="replace").strip().splitlines() or ["(no output)"]
        why = lines[-1] if row.empty or not row.error.iloc[-1] else row.error.iloc[-1]
        return f"{'failed' if row.empty else row.status.iloc[-1]} (exit {code}): {why} (log: {log})", False
    row = row.iloc[-1]
    reward = "-" if pd.isna(row.final_reward) else f"{row.final_reward:.3f}"
    pace = f"{1 / row.steps_per_second:.2f} s/step" if row.steps_per_second > 0 else "no step"
    return f"{row.status}, final reward {reward}, {pace}, peak {row.peak_memory_mib:.0f} MiB", True


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per grid point of a sweep's runs (`Store.sweep`): its grid values, seeds, runs finished,
    final_reward (mean over seeds) and final_reward_std (over seeds), steps_per_second (mean over
    seeds) and peak_memory_mib (the largest)."""
    rows = []
    for _, point in runs.groupby("point", sort=False):
        rows.append(
            {
                **point.grid.iloc[0],
                "seeds": ",".join(str(seed) for seed in sorted(point.seed)),
                "finished": f"{(point.status == 'finished').sum()}/{len(point)}",
                "final_reward": point.final_reward.mean(),
                "final_reward_std": point.final_reward.std(),
                "steps_per_second": point.steps_per_second.mean(),
                "peak_memory_mib": point.peak_memory_mib.max(),
            }
        )
    table = pd.DataFrame(rows)
    names = list(runs.grid.iloc[0]) if len(runs) else []
    return table.sort_values(names, ignore_index=True) if names else table


def sweep_arguments(
    base: Config,
    task: str,
    grid: dict[str, list],
    seeds: list[int],
    workspace: str,
    parallel: int = 1,
    reward_file: str | None = None,
    sweep_id: str | None = None,
) -> list[str]:
    """The arguments of `python -m workbench sweep` that runs this sweep."""
    words = train_arguments(base, task, workspace, reward_file)
    for name, values in grid.items():
        words += ["--grid", f"{name}={','.join(str(value) for value in values)}"]
    words += ["--seeds", ",".join(str(seed) for seed in seeds), "--parallel", str(parallel)]
    return words + (["--sweep-id", sweep_id] if sweep_id else [])


def start_sweep(
    base: Config,
    task: str,
    grid: dict[str, list],
    seeds: list[int],
    workspace: str,
    parallel: int = 1,
    reward_file: str | None = None,
) -> tuple[str, int, str, Path]:
    """Start `python -m workbench sweep` in the background (the app does); a grid point that Config
    refuses raises here, before anything starts.  -> (the sweep's id, its runs, its command line, its log)"""
    runs = checked_plan(base, grid, seeds, parallel)
    sweep_id = new_sweep_id(task)
    arguments = sweep_arguments(base, task, grid, seeds, workspace, parallel, reward_file, sweep_id)
    log = Path(workspace) / "sweeps" / f"{sweep_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        subprocess.Popen([sys.executable, "-m", "workbench", "sweep", *arguments], stdout=out, stderr=subprocess.STDOUT)
    return sweep_id, len(runs), shlex.join(["python", "-m", "workbench", "sweep", *arguments]), log
