"""GRPO Workbench: GRPO on LoRA, every rollout in DuckDB.

from workbench import Config, load_task, train
for event in train(Config(steps=20), load_task("arithmetic"), workspace="runs"):
    print(event)

Names are imported on first use, so `import workbench.rewards` (the reward worker does) stays
free of torch. No exported name is also a submodule's name: importing `workbench.X` binds
`workbench.X` to the module, which would hide a function of that name.
"""

import importlib

_EXPORTS = {
    "workbench.config": ["Config", "ConfigError"],
    "workbench.events": [
        "Group",
        "GroupsScored",
        "RunFailed",
        "RunFinished",
        "RunPaused",
        "RunStarted",
        "StepFinished",
    ],
    "workbench.store.database": ["Store"],
    "workbench.rewards.tasks": ["Task", "TaskError", "load_prompts", "load_task"],
    "workbench.rewards.hf_datasets": ["hub_task"],
    "workbench.engine.trainer": ["train"],
    "workbench.rewards.scoring": ["RewardError", "RewardSource", "validate_rewards", "try_rewards"],
    "workbench.engine.dryrun": ["dry_run"],
    "workbench.engine.rescoring": ["rescore"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
