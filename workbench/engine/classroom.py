"""A classroom on one server (`python app.py --users FILE`): each user's workspace and runner, one fair queue for
the machine, the tasks the teacher publishes, and what the teacher sees of every student's runs.

    <workspace>/users/<name>/    a user's own workspace: store, checkpoints, uploads (no one else's runs in it)
    <workspace>/published/<task>/  a task the teacher published: prompts (and held-out prompts), reward.py and
                                   settings.json (the Config fields to train it with), offered to every student
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from workbench.accounts import NAME, User
from workbench.config import Config
from workbench.engine.runner import Runner
from workbench.engine.scheduler import Scheduler
from workbench.rewards.tasks import EVAL_FILES, PROMPT_FILES, Task, TaskError, load_task, sample_task_names

SETTINGS_FILE = "settings.json"


@dataclass
class Classroom:
    root: Path
    users: dict[str, User]
    scheduler: Scheduler
    runners: dict[str, Runner]

    @classmethod
    def open(cls, root: str | Path, users: dict[str, User], slots: int) -> Classroom:
        root = Path(root)
        scheduler = Scheduler(slots)
        runners = {name: Runner(str(root / "users" / name), scheduler, owner=name) for name in users}
        return cls(root, users, scheduler, runners)

    @property
    def published(self) -> Path:
        return self.root / "published"

    def students(self) -> list[str]:
        return [name for name, user in self.users.items() if not user.teacher]

    def published_tasks(self) -> list[str]:
        folder = self.published
        return sorted(p.name for p in folder.iterdir() if (p / "reward.py").exists()) if folder.is_dir() else []

    def publish(self, name: str, task: Task, reward_text: str, config: Config) -> Path:
        """Offer a task to every student: its prompts (and held-out prompts), the reward, the settings to train it."""
        if not NAME.fullmatch(name) or name in sample_task_names():
            raise TaskError(f"{name!r} cannot name a published task: letters, digits, _ . -, not a sample task's name")
        folder = self.published / name
        staging = folder.with_name(f".{name}.publishing")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        files = [Path(task.folder) / f for f in (*PROMPT_FILES, *EVAL_FILES) if (Path(task.folder) / f).exists()]
        if not files:
            raise TaskError(f"task {task.name} has no prompts file in {task.folder} to publish")
        for file in files:
            shutil.copyfile(file, staging / file.name)
        (staging / "reward.py").write_text(reward_text)
        (staging / SETTINGS_FILE).write_text(json.dumps(config.changed(), indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
        return folder

    def published_task(self, name: str) -> tuple[Task, dict]:
        """A published task and the Config fields it is trained with."""
        folder = self.published / name
        if name not in self.published_tasks():
            raise TaskError(f"no published task {name!r} (published: {', '.join(self.published_tasks()) or 'none'})")
        settings = json.loads((folder / SETTINGS_FILE).read_text()) if (folder / SETTINGS_FILE).exists() else {}
        return load_task(folder), settings

    def class_runs(self) -> pd.DataFrame:
        """Every student's runs, newest first: student, run_id, task, status (live for a run training or queued),
        step, steps, reward_mean, and the latest held-out metrics (eval_reward_mean, greedy_accuracy)."""
        frames = []
        for name, runner in self.runners.items():
            runs = runner.store.runs()
            if runs.empty:
                continue
            evals = runner.store.query(
                "SELECT run_id, arg_max(reward_mean, step) AS eval_reward_mean, "
                "arg_max(greedy_accuracy, step) AS greedy_accuracy FROM evals GROUP BY run_id"
            )
            runs = runs.merge(evals, on="run_id", how="left").assign(student=name)
            frames.append(runs)
        columns = ["student", "run_id", "task", "status", "last_step", "steps", "reward_mean"]
        columns += ["eval_reward_mean", "greedy_accuracy", "created_at"]
        if not frames:
            return pd.DataFrame(columns=columns)
        runs = pd.concat(frames, ignore_index=True)[columns].sort_values("created_at", ascending=False)
        live = {
            (o, r): self.runners[o].status(r)["status"] for o, r in self.scheduler.running() + self.scheduler.waiting()
        }
        runs["status"] = [live.get((s, r), status) for s, r, status in zip(runs.student, runs.run_id, runs.status)]
        return runs.reset_index(drop=True)

    def leaderboard(self) -> pd.DataFrame:
        """Per task, each student's best run on the held-out prompts (greedy accuracy, then held-out reward)."""
        runs = self.class_runs().dropna(subset=["eval_reward_mean"])
        if runs.empty:
            return pd.DataFrame(columns=["task", "rank", "student", "greedy_accuracy", "eval_reward_mean", "run_id"])
        runs = runs.sort_values(["task", "greedy_accuracy", "eval_reward_mean"], ascending=[True, False, False])
        best = runs.drop_duplicates(["task", "student"]).copy()
        best["rank"] = best.groupby("task").cumcount() + 1
        return best[["task", "rank", "student", "greedy_accuracy", "eval_reward_mean", "run_id"]].reset_index(drop=True)

    def queue(self) -> pd.DataFrame:
        """The runs training now and those waiting, in the order they will start."""
        rows = [dict(student=o, run_id=r, state="training", place=None) for o, r in self.scheduler.running()]
        rows += [
            dict(student=o, run_id=r, state="waiting", place=n) for n, (o, r) in enumerate(self.scheduler.waiting(), 1)
        ]
        return pd.DataFrame(rows, columns=["student", "run_id", "state", "place"])

    def stop(self, student: str, run_id: str) -> None:
        if student not in self.runners or run_id not in self.runners[student].runs:
            raise TaskError(f"{student} has no run {run_id!r} training or waiting")
        self.runners[student].stop(run_id)

    def allow(self, student: str, runs: int) -> None:
        """Let a student have `runs` runs training or waiting at once (1 by default)."""
        if student not in self.runners or runs < 1:
            raise TaskError(f"cannot allow {runs} runs to {student!r}: name a student, and at least 1 run")
        self.runners[student].limit = runs
