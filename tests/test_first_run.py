"""The app's first run teaches: the settings the Train form starts with, on the arithmetic task the
first tab starts with, visibly raise the reward and fire no health check.

bench/first_run.py measures the same run over seeds 0 1 2 (docs/figures.md#the-first-run): the mean reward of the
last 10 steps rises by 0.21 to 0.28 over the first 10 (median 0.25). The goal, held here at the default seed, is 0.2.
The run here takes one thread: a thread count sums floats in another order, and over 200 steps of sampling that is
another run (seed 0 rises by 0.252 on two threads, 0.230 on one); one thread
is the same run whatever the machine's cores and load.
"""

import dataclasses
import statistics

import pytest

from workbench import load_task, train
from workbench.events import HealthWarning, StepFinished
from workbench.store import health
from workbench.store.database import Store
from workbench.ui.config_form import first_config

EDGE = 10  # steps averaged at each end, as bench/first_run.py
RISE = 0.2  # measured at seed 0 on one thread: 0.386 -> 0.616, +0.230


@pytest.mark.slow
def test_the_first_run_rises_with_no_health_check_firing(tmp_path):
    config = first_config()
    assert (config.model, config.learning_rate, config.steps) == ("tiny", 1e-3, 200)
    assert config.lora_target_modules == ("all-linear",)
    config = dataclasses.replace(config, threads=1)
    rewards, warnings, run_id = [], [], None
    for event in train(config, load_task("arithmetic"), tmp_path):
        if isinstance(event, StepFinished):
            rewards.append(event.metrics["reward_mean"])
            run_id = event.run_id
        elif isinstance(event, HealthWarning):
            warnings.append(event.finding)
    first, last = statistics.mean(rewards[:EDGE]), statistics.mean(rewards[-EDGE:])
    assert last - first >= RISE, f"the first run rose from {first:.3f} to {last:.3f}"
    assert warnings == []
    assert health.examine(Store(tmp_path), run_id) == []
