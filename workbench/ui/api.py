"""The app's API for scripts and teachers (gradio_client), behind the app's login: train, status, runs.

    from gradio_client import Client
    client = Client("http://127.0.0.1:7860/")                      # auth=(name, password) when the app has one
    run_id = client.predict("arithmetic", {"steps": 20, "group_size": 4}, api_name="/train")
    client.predict(run_id, api_name="/status")  # {'run_id': ..., 'status': 'running', 'step': 3, 'steps': 20, ...}
    client.predict(api_name="/runs")            # every run of the workspace, newest first

Each answer is plain JSON keyed by the store's column names; a refusal is an error that says why.
"""

from __future__ import annotations

import gradio as gr

from workbench.config import Config, ConfigError
from workbench.engine.classroom import Classroom
from workbench.engine.runner import Runner, run_summaries
from workbench.rewards.scoring import RewardError, validate_rewards
from workbench.rewards.tasks import TaskError, workspace_task

REFUSED = (ConfigError, TaskError, RewardError, RuntimeError)


def build(runner: Runner, classroom: Classroom | None = None) -> None:
    """The endpoints, each one function of the runner's (the user's, in classroom mode)."""

    def train(task: str, config: dict) -> str:
        """Start a run of `task` (a sample task's, an upload's or a published task's name) with the given Config
        fields (a published task's settings first).  -> its id"""
        try:
            if classroom is not None and task in classroom.published_tasks():
                chosen, published = classroom.published_task(task)
            else:
                chosen, published = workspace_task(runner.workspace, task), {}
            settings = Config.from_dict(published | (config or {}))
            validate_rewards(chosen.rewards, chosen.rows, settings)
            return runner.start(settings, chosen)
        except REFUSED as error:
            raise gr.Error(str(error), print_exception=False) from None

    def status(run_id: str) -> dict:
        """A run's run_id, status, step, steps, reward_mean (its latest step's), error and queue_place."""
        try:
            return runner.status(run_id)
        except TaskError as error:
            raise gr.Error(str(error), print_exception=False) from None

    def runs() -> list[dict]:
        """Every run, newest first: run_id, created_at, task, model, status, step, steps, reward_mean, error."""
        return run_summaries(runner.store)

    gr.api(train, api_name="train")
    # status reads the runner's memory: every client's call at once, not each waiting for the one before
    gr.api(status, api_name="status", concurrency_limit=None)
    gr.api(runs, api_name="runs")
