"""GSPO's sequence-level ratio, CISPO and GDPO's normalize_then_sum against TRL 1.16's own code, and their mapping.

The losses run through TRL's `GRPOTrainer._compute_loss` itself, on a stand-in trainer that hands it the same
log-probs the workbench's loss gets (one process, a batch of 6 completions split into 3 micro-batches of 2, as
TRL's gradient accumulation splits it; padded masks; pi_old apart from pi_theta, so ratios are clipped): the summed
loss and its gradient are compared with the workbench's. normalize_then_sum lives inside TRL's
`_generate_and_score_completions`, so its lines are copied here (grpo_trainer.py, lines 2790-2798 of TRL 1.16) and
run on the same rewards as the workbench's advantages.
"""

import types
from collections import defaultdict

import pytest
import torch

from workbench import Config
from workbench.engine import grpo
from workbench.engine.advantages import estimate_advantages
from workbench.engine.batches import Round, ScoredBatch
from workbench.integrations.trl_settings import NOT_MAPPED, trl_settings, unsupported, workbench_values
from workbench.rewards.scoring import Scores

trainer = pytest.importorskip("trl.trainer.grpo_trainer")
trl_utils = pytest.importorskip("trl.trainer.utils")

B, T, MICRO = 6, 5, 2  # completions, tokens, completions per micro-batch
MAX_COMPLETION_LENGTH = 8


class Accelerator:
    """One process: TRL's reductions are the identity."""

    num_processes = 1

    def reduce(self, tensor, reduction="sum"):
        return tensor

    def gather(self, tensor):
        return tensor


def trl_trainer(log_probs: torch.Tensor, **settings) -> types.SimpleNamespace:
    """What `_compute_loss` reads of a GRPOTrainer, set as the workbench runs it (use_bias_correction_kl off),
    its model's log-probs the rows of `log_probs` each micro-batch asks for."""
    steps = B // MICRO
    args = types.SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=steps)
    stub = types.SimpleNamespace(
        args=args,
        model=types.SimpleNamespace(training=True),
        accelerator=Accelerator(),
        current_gradient_accumulation_steps=steps,
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        use_vllm=False,
        aux_loss_enabled=False,
        _entropy_bonus_enabled=False,
        _metrics={"train": defaultdict(list)},
        max_completion_length=MAX_COMPLETION_LENGTH,
        **settings,
    )
    stub.rows = slice(0, B)
    stub._get_per_token_logps_and_entropies = lambda *args, **kwargs: (
        log_probs[stub.rows],
        torch.zeros_like(log_probs[stub.rows]),
        None,
    )
    return stub


def batch(seed: int = 3):
    """Log-probs (a leaf), pi_old's, the reference's, advantages and a right-padded mask."""
    generator = torch.Generator().manual_seed(seed)
    log_probs = (torch.randn(B, T, generator=generator) * 0.3 - 1.5).requires_grad_()
    old = log_probs.detach() + torch.randn(B, T, generator=generator) * 0.6  # ratios from ~0.3 to ~3
    ref = log_probs.detach() + torch.randn(B, T, generator=generator) * 0.2
    advantages = torch.randn(B, generator=generator)
    lengths = torch.tensor([5, 3, 1, 4, 5, 2])
    mask = (torch.arange(T) < lengths.unsqueeze(1)).float()
    return log_probs, old, ref, advantages, mask


def trl_loss_and_gradient(log_probs, old, ref, advantages, mask, **settings):
    """TRL's loss over the micro-batches, summed as gradient accumulation sums it, and its gradient."""
    stub = trl_trainer(log_probs, **settings)
    total = 0.0
    for start in range(0, B, MICRO):
        rows = slice(start, start + MICRO)
        stub.rows = rows
        inputs = {
            "prompt_ids": torch.zeros(MICRO, 1, dtype=torch.long),
            "prompt_mask": torch.ones(MICRO, 1),
            "completion_ids": torch.zeros(MICRO, T, dtype=torch.long),
            "completion_mask": mask[rows],
            "advantages": advantages[rows],
            "old_per_token_logps": old[rows],
            "ref_per_token_logps": ref[rows],
            "num_items_in_batch": mask.sum(),  # the generation batch's tokens
        }
        total = total + trainer.GRPOTrainer._compute_loss(stub, None, inputs)
    (gradient,) = torch.autograd.grad(total, log_probs)
    return total.detach(), gradient


def workbench_loss_and_gradient(log_probs, old, ref, advantages, mask, **settings):
    total = 0.0
    for start in range(0, B, MICRO):
        rows = slice(start, start + MICRO)
        loss, _ = grpo.grpo_loss(
            log_probs[rows],
            old[rows],
            ref[rows],
            advantages[rows],
            mask[rows],
            batch_completions=B,
            batch_tokens=int(mask.sum()),
            max_new_tokens=MAX_COMPLETION_LENGTH,
            **settings,
        )
        total = total + loss
    (gradient,) = torch.autograd.grad(total, log_probs)
    return total.detach(), gradient


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_the_clipped_surrogate_at_token_and_sequence_level_is_trls(level, loss_type):
    """GSPO (importance_sampling_level 'sequence') and GRPO's per-token ratio, with clip-higher and the k3 KL."""
    tensors = batch()
    beta, epsilon, epsilon_high = 0.04, 0.2, 0.28
    trl_settings_ = dict(
        beta=beta,
        epsilon_low=epsilon,
        epsilon_high=epsilon_high,
        loss_type=loss_type,
        importance_sampling_level=level,
    )
    expected, expected_gradient = trl_loss_and_gradient(*tensors, **trl_settings_)
    ours, gradient = workbench_loss_and_gradient(
        *tensors,
        beta=beta,
        clip_epsilon=epsilon,
        epsilon_high=epsilon_high,
        loss_type=loss_type,
        importance_sampling_level=level,
    )
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(gradient, expected_gradient)
    log_probs, old, _, advantages, mask = tensors
    _, clipped = grpo.clipped_surrogate(log_probs.detach(), old, advantages, epsilon, epsilon_high, mask, level)
    assert 0 < clipped.expand_as(mask)[mask.bool()].float().mean() < 1  # the clip binds on some, not all


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_cispo_is_trls(level, beta):
    """CISPO: the weight min(rho, epsilon_high) detached, times A log pi; TRL's dapo normaliser. A cap of 1.1
    binds on part of the tokens."""
    tensors = batch(seed=1)
    settings = dict(beta=beta, loss_type="cispo", importance_sampling_level=level)
    expected, expected_gradient = trl_loss_and_gradient(*tensors, epsilon_low=0.2, epsilon_high=1.1, **settings)
    ours, gradient = workbench_loss_and_gradient(*tensors, clip_epsilon=0.2, epsilon_high=1.1, **settings)
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(gradient, expected_gradient)
    log_probs, old, _, advantages, mask = tensors
    ratio = grpo.importance_ratio(log_probs.detach(), old, mask, level)
    assert 0 < (ratio > 1.1).float().mean() < 1  # the cap binds on some, not all


def test_cispos_default_cap_is_clip_epsilon_as_trls():
    """epsilon_high 0 (TRL's None) caps CISPO's weight at clip_epsilon, as TRL's default does."""
    tensors = batch(seed=2)
    settings = dict(beta=0.0, loss_type="cispo", importance_sampling_level="token")
    expected, _ = trl_loss_and_gradient(*tensors, epsilon_low=0.2, epsilon_high=0.2, **settings)
    ours, _ = workbench_loss_and_gradient(*tensors, clip_epsilon=0.2, epsilon_high=0.0, **settings)
    torch.testing.assert_close(ours, expected)


def trl_normalize_then_sum(rewards_per_func, reward_weights, num_generations):
    """TRL 1.16's grpo_trainer.py, lines 2761 (the unscorable mask) and 2790-2798, copied; then line 2810's NaN."""
    unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)
    grouped = rewards_per_func.view(-1, num_generations, rewards_per_func.shape[1])
    mean_k = torch.nanmean(grouped, dim=1, keepdim=True)
    std_k = trl_utils.nanstd(grouped, dim=1, keepdim=True) if num_generations > 1 else torch.zeros_like(mean_k)
    reward_k = (grouped - mean_k) / (std_k + 1e-4)
    reward_k = reward_k.view(-1, rewards_per_func.shape[1])
    rewards = (reward_k * reward_weights.unsqueeze(0)).nansum(dim=1)
    rewards[unscorable_mask] = torch.nan
    std_rewards = trl_utils.nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    advantages = (rewards - torch.nanmean(rewards)) / (std_rewards + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


def test_normalize_then_sum_is_trls():
    """Three groups of 4, two reward functions weighted 1 and 0.5, with what TRL's NaN handling has to cover:
    an unscored value, a completion no function scored, a function scored once in a group (no std there), and a
    function whose values in a group are all equal. The workbench's path: the round's stored values through
    `estimate_advantages`."""
    correct = [1.0, 0.0, 0.0, 1.0, 1.0, None, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    length = [0.2, 0.9, None, 0.4, 0.3, None, 0.7, 0.1, 0.5, None, None, None]
    weights = {"correct": 1.0, "length": 0.5}
    values = {"correct": correct, "length": length}
    rewards = [
        None
        if all(v[i] is None for v in values.values())
        else sum(weights[n] * v[i] for n, v in values.items() if v[i] is not None)
        for i in range(12)
    ]
    one = Round([{}] * 3, None, Scores(values, rewards), grpo.reward_tensor(rewards), 0.0, 0.0)
    one.trained = torch.ones(3, dtype=torch.bool)
    config = Config(
        group_size=4, multi_objective_aggregation="normalize_then_sum", scale_rewards="batch", reward_weights=weights
    )
    (ours,) = estimate_advantages(ScoredBatch(1, [one], 0.0), config)
    per_func = torch.stack([grpo.reward_tensor(correct), grpo.reward_tensor(length)], dim=1)  # (B, K)
    expected = trl_normalize_then_sum(per_func, torch.tensor([1.0, 0.5]), 4)
    torch.testing.assert_close(ours, expected)
    assert ours[5] == 0  # no function scored it
    (summed,) = estimate_advantages(ScoredBatch(1, [one], 0.0), Config(group_size=4, scale_rewards="batch"))
    assert not torch.allclose(summed, ours)  # sum_then_normalize is another thing


def test_the_new_fields_map_to_trls_names_and_back():
    """Out: grpo.yaml carries importance_sampling_level, multi_objective_aggregation and loss_type 'cispo' with its
    cap, as TRL names them; TRL's own parser takes them. Back: a watched TRL run's values give the same Config."""
    from trl.scripts.grpo import make_parser

    config = Config(
        importance_sampling_level="sequence",
        loss_type="cispo",
        epsilon_high=5.0,
        multi_objective_aggregation="normalize_then_sum",
        scale_rewards="batch",
    )
    settings = {s.name: s for s in trl_settings(config, "m", ["correct", "length"], "run-1")}
    assert settings["importance_sampling_level"].value == "sequence"
    assert settings["multi_objective_aggregation"].value == "normalize_then_sum"
    assert (settings["loss_type"].value, settings["epsilon_high"].value) == ("cispo", 5.0)
    assert {settings[n].parity for n in ("importance_sampling_level", "multi_objective_aggregation")} == {"exact"}
    assert "cap" in settings["epsilon_high"].note and "ignores" in settings["scale_rewards"].note
    values = {name: s.value for name, s in settings.items()}
    back = Config.from_dict(workbench_values(values | {"num_processes": 1}))
    fields = ("importance_sampling_level", "loss_type", "epsilon_high", "multi_objective_aggregation", "scale_rewards")
    assert {f: getattr(back, f) for f in fields} == {f: getattr(config, f) for f in fields}

    trl_args = make_parser().parse_args_and_config(
        ["--output_dir", "out", "--importance_sampling_level", "sequence", "--loss_type", "cispo"]
        + ["--epsilon_high", "5.0", "--multi_objective_aggregation", "normalize_then_sum", "--use_cpu", "true"]
    )[1]
    watched = workbench_values(vars(trl_args) | {"num_processes": 1})  # TRL's own defaults for the rest
    assert watched["scale_rewards"] == "batch"  # TRL's 'group' is ignored with normalize_then_sum
    watched_config = Config.from_dict({k: v for k, v in watched.items() if k in fields})
    assert watched_config.loss_type == "cispo" and watched_config.importance_sampling_level == "sequence"


def test_the_kl_grid_is_named_where_trl_has_no_equivalent():
    assert {"kl_estimator", "use_kl_in_reward"} <= set(NOT_MAPPED)
    assert unsupported(Config()) == []
    assert unsupported(Config(kl_estimator="k1", beta=0.0)) == []  # no KL at all: nothing differs
    (estimator,) = unsupported(Config(kl_estimator="k2"))
    assert estimator.startswith("kl_estimator='k2'") and "k3" in estimator
    (placement,) = unsupported(Config(use_kl_in_reward=True))
    assert placement.startswith("use_kl_in_reward=True") and "loss" in placement
