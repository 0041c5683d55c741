"""Config validation speaks to the user; every field has help and a CLI flag."""

import dataclasses
import math

import pytest
import torch

from workbench import variants
from workbench.cli import build_parser, config_from_args
from workbench.config import Config, ConfigError, field_docs
from workbench.engine import grpo


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
        ({"importance_sampling_level": "group"}, ["importance_sampling_level", "token", "sequence"]),
        ({"kl_estimator": "k4"}, ["kl_estimator", "k1", "k2", "k3"]),
        ({"multi_objective_aggregation": "sum"}, ["multi_objective_aggregation", "normalize_then_sum"]),
        (
            {"importance_sampling_level": "sequence", "advantage_estimator": "ppo", "scale_rewards": "batch"},
            ["importance_sampling_level 'sequence'", "advantage_estimator 'ppo'", "one per token"],
        ),
        (
            {"multi_objective_aggregation": "normalize_then_sum"},
            ["multi_objective_aggregation 'normalize_then_sum'", "scale_rewards 'batch'", "got 'grpo', 'group'"],
        ),
        (
            {
                "multi_objective_aggregation": "normalize_then_sum",
                "scale_rewards": "batch",
                "advantage_estimator": "rloo",
            },
            ["normalize_then_sum", "advantage_estimator 'grpo'", "got 'rloo'"],
        ),
        (
            {"multi_objective_aggregation": "normalize_then_sum", "scale_rewards": "batch", "use_kl_in_reward": True},
            ["use_kl_in_reward", "normalize_then_sum", "one or the other"],
        ),
    ],
)
def test_invalid_values_name_the_field(values, words):
    with pytest.raises(ConfigError) as error:
        Config.from_dict(values)
    for word in words:
        assert word in str(error.value)


def test_beta_zero_is_the_least_beta_and_leaves_the_reference_out_of_the_loss():
    """beta 0 is allowed and anything below it is refused; with it the loss cannot depend on pi_ref, so skipping the
    reference's forward pass changes no number (test_training's test_beta_zero_skips_the_reference: a run does)."""
    assert Config(beta=0).beta == 0
    with pytest.raises(ConfigError, match="beta must be 0 or more"):
        Config(beta=-1e-9)

    log_probs = torch.log(torch.tensor([[0.5, 0.25], [0.125, 0.5]]))  # (B, T), B = 2 completions of one group
    far_reference = torch.log(torch.tensor([[0.05, 0.9], [0.6, 0.01]]))  # far from pi_theta: k3 KL ~2 a token

    def loss(reference, beta):
        settings = dict(beta=beta, clip_epsilon=0.2, loss_type="grpo", batch_completions=2, batch_tokens=4)
        return grpo.grpo_loss(log_probs, log_probs, reference, torch.tensor([1.0, -1.0]), torch.ones(2, 2), **settings)

    without, stats = loss(None, beta=0.0)
    assert "kl" not in stats
    assert loss(far_reference, beta=0.0)[0].item() == without.item()
    assert loss(far_reference, beta=0.04)[0].item() > without.item() + 0.01  # the same reference counts when beta > 0


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


def test_every_variant_the_config_offers_has_its_own_formula():
    """Each name in workbench.variants (the config's choices) is implemented by workbench.engine.grpo, and gives the
    number worked out by hand here. Two groups of G = 3: rewards (0, 0, 3) and (1, 2, 3)."""
    rewards = torch.tensor([0.0, 0.0, 3.0, 1.0, 2.0, 3.0])
    # r - b, by estimator: grpo b = group mean (1, 2); rloo b = mean of the other two (3/2, 3/2, 0 | 5/2, 2, 3/2);
    # reinforce b = 0; reinforce_batch_mean b = 9/6 = 1.5
    centred = {
        "grpo": [-1.0, -1.0, 2.0, -1.0, 0.0, 1.0],
        "rloo": [-1.5, -1.5, 3.0, -1.5, 0.0, 1.5],
        "reinforce": [0.0, 0.0, 3.0, 1.0, 2.0, 3.0],
        "reinforce_batch_mean": [-1.5, -1.5, 1.5, -0.5, 0.5, 1.5],
    }
    # s, by scaling (Bessel's std): the groups' variances (1 + 1 + 4) / 2 = 3 and (1 + 0 + 1) / 2 = 1; the batch's
    # squared deviations from 1.5 sum to 4 x 2.25 + 2 x 0.25 = 9.5, over 5
    scale = {
        "group": [3**0.5 + 1e-4] * 3 + [1 + 1e-4] * 3,
        "batch": [1.9**0.5 + 1e-4] * 6,
        "none": [1.0] * 6,
    }
    assert set(centred) == set(variants.ESTIMATORS) - {"ppo"} and set(scale) == set(variants.SCALINGS)
    for estimator, a in centred.items():
        for scaling, s in scale.items():
            if scaling == "group" and estimator not in variants.GROUP_BASELINES:
                continue  # the config refuses it: a group's std fits a group's baseline only
            expected = torch.tensor([x / y for x, y in zip(a, s)])
            torch.testing.assert_close(grpo.group_advantages(rewards, 3, scaling, estimator), expected)
    # ppo: GAE on a critic's values; with lambda = 1 each token's advantage is r - V_t
    values = torch.tensor([[0.5, 1.0, 0.0]])  # (B, T), one completion of two tokens
    advantages, returns = grpo.gae(torch.tensor([2.0]), values, torch.tensor([[1, 1, 0]]), lam=1.0)
    torch.testing.assert_close(advantages, torch.tensor([[1.5, 1.0, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[2.0, 2.0, 0.0]]))

    # per-token losses 1, 2, 3 | 4 (B = 2 completions of 3 and 1 tokens, 4 tokens, max_new_tokens 3)
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    aggregated = {
        "grpo": (6 / 3 + 4 / 1) / 2,  # each completion's token mean, then their mean
        "bnpo": 10 / 4,  # the batch's token mean (a batch is one optimizer step here: the same as dapo)
        "dapo": 10 / 4,
        "dr_grpo": 10 / (2 * 3),  # a constant: completions x max_new_tokens
        "cispo": 10 / 4,  # dapo's aggregation of CISPO's per-token loss
    }
    assert set(aggregated) == set(variants.LOSS_TYPES)
    for loss_type, expected in aggregated.items():
        assert grpo.aggregate(per_token, mask, loss_type, 2, 4, max_new_tokens=3).item() == pytest.approx(expected)

    # the ratio of a completion whose tokens' ratios are 4 and 1: per token, or exp(mean log ratio) = 2 (GSPO)
    log_probs, old, one = torch.log(torch.tensor([[4.0, 1.0]])), torch.zeros(1, 2), torch.ones(1, 2)
    ratios = {"token": [4.0, 1.0], "sequence": [2.0]}
    assert set(ratios) == set(variants.IMPORTANCE_SAMPLING_LEVELS)
    for level, expected in ratios.items():
        assert grpo.importance_ratio(log_probs, old, one, level)[0].tolist() == pytest.approx(expected)

    # reward functions (1, 0) and (0, 1) over a group of two: summed, 1 and 1 (no signal); normalised within the
    # group first (GDPO), each +-0.5 / (std sqrt(1/2) + 1e-4), which cancel: 0 and 0 too; weights 2 and 1 break it
    values = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    s = 0.5**0.5 + 1e-4
    decoupled = grpo.decoupled_rewards(values, torch.tensor([2.0, 1.0]), 2)
    assert decoupled.tolist() == pytest.approx([(2 * 0.5 - 0.5) / s, (-2 * 0.5 + 0.5) / s])
    assert set(variants.AGGREGATIONS) == {"sum_then_normalize", "normalize_then_sum"}

    # the KL estimators at pi_theta / pi_ref = e (d = -1): k1 = 1, k2 = 1/2, k3 = exp(-1) + 1 - 1
    log_probs, ref = torch.tensor([[0.0]]), torch.tensor([[-1.0]])
    estimates = {"k1": 1.0, "k2": 0.5, "k3": math.exp(-1)}
    assert set(estimates) == set(variants.KL_ESTIMATORS)
    for estimator, expected in estimates.items():
        assert grpo.KL[estimator](log_probs, ref).item() == pytest.approx(expected)


def test_round_trip_through_json():
    config = Config(group_size=4, lora_target_modules=("all-linear",))
    assert Config.from_dict(config.to_dict()) == config


def test_one_module_name_as_peft_takes_it():
    # a bare string is one name, not its letters; a JSON list becomes the tuple the config holds
    assert Config(lora_target_modules="all-linear").lora_target_modules == ("all-linear",)
    assert Config(lora_target_modules=["q_proj", "v_proj"]).lora_target_modules == ("q_proj", "v_proj")
    assert Config(reward_models="./rm").reward_models == ("./rm",)


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
