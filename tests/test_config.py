"""Config validation speaks to the user; every field has help and a CLI flag."""

import dataclasses
import math

import pytest

from workbench.cli import build_parser, config_from_args
from workbench.config import Config, ConfigError, field_docs


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"group_size": 1}, ["group_size", "GRPO compares completions"]),
        ({"prompts_per_step": 0}, ["prompts_per_step", "at least 1"]),
        ({"temperature": 0}, ["temperature", "greater than 0"]),
        ({"top_p": 1.5}, ["top_p"]),
        ({"beta": -0.1}, ["beta", "0 or more"]),
        ({"clip_epsilon": 1.0}, ["clip_epsilon"]),
        ({"loss_type": "ppo"}, ["loss_type", "grpo", "bnpo", "dr_grpo", "dapo"]),
        ({"advantage_estimator": "gae"}, ["advantage_estimator", "rloo", "reinforce"]),
        ({"advantage_estimator": "reinforce"}, ["scale_rewards 'group'", "group baseline", "'batch' or 'none'"]),
        ({"epsilon_high": -0.1}, ["epsilon_high", "0 (the same as clip_epsilon)"]),
        ({"precision": "fp8"}, ["precision"]),
        ({"max_new_tokens": 2.5}, ["max_new_tokens", "integer"]),
        ({"model": " "}, ["model"]),
        ({"group_sise": 4}, ["unknown config field", "group_sise"]),
    ],
)
def test_invalid_values_name_the_field(values, words):
    with pytest.raises(ConfigError) as error:
        Config.from_dict(values)
    for word in words:
        assert word in str(error.value)


def test_beta_zero_is_allowed():
    assert Config(beta=0).beta == 0


def test_every_field_is_documented():
    assert set(field_docs()) == {f.name for f in dataclasses.fields(Config)}


def test_every_field_is_a_kebab_case_flag_of_train():
    args = build_parser().parse_args(
        [
            "train",
            "--task",
            "arithmetic",
            "--max-new-tokens",
            "12",
            "--scale-rewards",
            "none",
            "--lora-target-modules",
            "q_proj",
            "v_proj",
            "--learning-rate",
            "1e-4",
        ]
    )
    config = config_from_args(args)
    assert (config.max_new_tokens, config.scale_rewards, config.learning_rate) == (12, "none", 1e-4)
    assert config.lora_target_modules == ("q_proj", "v_proj")
    assert config.group_size == Config().group_size


def test_a_stored_boolean_scale_rewards_loads_as_its_name():
    """Runs stored before 'batch' existed said True or False."""
    assert Config.from_dict({"scale_rewards": True}).scale_rewards == "group"
    assert Config.from_dict({"scale_rewards": False}).scale_rewards == "none"


def test_the_choices_are_the_math_modules():
    from workbench.config import CHOICES
    from workbench.engine import grpo

    assert CHOICES["advantage_estimator"] == grpo.ESTIMATORS and CHOICES["loss_type"] == grpo.LOSS_TYPES


def test_round_trip_through_json():
    config = Config(group_size=4, lora_target_modules=("all-linear",))
    assert Config.from_dict(config.to_dict()) == config


def test_learning_rate_schedules_by_hand():
    # 10 steps, 2 of warmup, lr 1: s = step - 1; warmup s / 2; linear (10 - s) / 8; cosine (1 + cos(pi (s - 2) / 8)) / 2
    linear = Config(steps=10, warmup_steps=2, learning_rate=1.0, lr_scheduler_type="linear")
    assert [linear.learning_rate_at(k) for k in (1, 2, 3, 10)] == pytest.approx([0.0, 0.5, 1.0, 0.125])
    cosine = Config(steps=10, warmup_steps=2, learning_rate=1.0, lr_scheduler_type="cosine")
    assert cosine.learning_rate_at(3) == 1.0
    assert cosine.learning_rate_at(10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert Config(learning_rate=0.3).learning_rate_at(50) == 0.3


@pytest.mark.parametrize("kind", ["constant", "linear", "cosine"])
def test_learning_rate_schedules_match_transformers(kind):
    """The schedule TRL's trainer uses: transformers.get_scheduler, stepped after each optimizer step."""
    import torch
    from transformers import get_scheduler

    config = Config(steps=12, warmup_steps=3, learning_rate=0.5, lr_scheduler_type=kind)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.learning_rate)
    name = "constant_with_warmup" if kind == "constant" else kind
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=3, num_training_steps=12)
    used = []
    for _ in range(12):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert [config.learning_rate_at(k) for k in range(1, 13)] == pytest.approx(used)


def test_bad_schedule_values_name_the_field():
    with pytest.raises(ConfigError, match="lr_scheduler_type must be one of constant, linear, cosine"):
        Config(lr_scheduler_type="step")
    with pytest.raises(ConfigError, match="warmup_steps"):
        Config(warmup_steps=-1)
    with pytest.raises(ConfigError, match="weight_decay"):
        Config(weight_decay=-0.1)
