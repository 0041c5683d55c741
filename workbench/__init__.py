"""GRPO Workbench: GRPO on LoRA, every rollout in DuckDB.

from workbench import Config, load_task, train
for event in train(Config(steps=20), load_task("arithmetic"), workspace="runs"):
    print(event)
"""

from workbench.config import Config, ConfigError
from workbench.events import Group, GroupsScored, RunFailed, RunFinished, RunStarted, StepFinished
from workbench.store import Store
from workbench.tasks import Task, TaskError, load_prompts, load_task
from workbench.trainer import train

__all__ = [
    "Config",
    "ConfigError",
    "Group",
    "GroupsScored",
    "RunFailed",
    "RunFinished",
    "RunStarted",
    "StepFinished",
    "Store",
    "Task",
    "TaskError",
    "load_prompts",
    "load_task",
    "train",
]
