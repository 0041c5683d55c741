"""Config validation speaks to the user; every field has help and a CLI flag."""

import dataclasses

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
        ({"loss_type": "bnpo"}, ["loss_type", "grpo", "dapo"]),
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
            "--no-scale-rewards",
            "--lora-target-modules",
            "q_proj",
            "v_proj",
            "--learning-rate",
            "1e-4",
        ]
    )
    config = config_from_args(args)
    assert (config.max_new_tokens, config.scale_rewards, config.learning_rate) == (12, False, 1e-4)
    assert config.lora_target_modules == ("q_proj", "v_proj")
    assert config.group_size == Config().group_size


def test_round_trip_through_json():
    config = Config(group_size=4, lora_target_modules=("all-linear",))
    assert Config.from_dict(config.to_dict()) == config
