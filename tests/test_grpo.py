"""The GRPO math against numbers worked out by hand (two groups of four)."""

import math

import pytest
import torch

from workbench import grpo

REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])  # two groups, G = 4


def test_advantages_subtract_the_group_mean():
    # group 1: mean 0.5; group 2: mean 0.25
    expected = [0.5, -0.5, -0.5, 0.5, -0.25, -0.25, -0.25, 0.75]
    assert grpo.group_advantages(REWARDS, 4, scale=False).tolist() == pytest.approx(expected)


def test_scaled_advantages_divide_by_the_bessel_std():
    # group 1: var = 4 * 0.25 / 3 = 1/3, std = 0.577350; group 2: var = (3 * 0.0625 + 0.5625) / 3 = 0.25
    std1, std2 = math.sqrt(1 / 3) + 1e-4, 0.5 + 1e-4
    expected = [
        0.5 / std1,
        -0.5 / std1,
        -0.5 / std1,
        0.5 / std1,
        -0.25 / std2,
        -0.25 / std2,
        -0.25 / std2,
        0.75 / std2,
    ]
    assert grpo.group_advantages(REWARDS, 4, scale=True).tolist() == pytest.approx(expected, rel=1e-6)


def test_a_group_of_equal_rewards_has_zero_advantage_and_counts_as_no_signal():
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    assert grpo.group_advantages(rewards, 4, scale=True)[:4].tolist() == [0.0] * 4
    assert grpo.zero_std_fraction(rewards, 4) == 0.5


def test_token_log_probs_at_temperature():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # softmax = [0.25, 0.75]
    tokens = torch.tensor([[1]])
    assert grpo.token_log_probs(logits, tokens, 1.0).item() == pytest.approx(math.log(0.75))
    # at T = 2 the logits halve: p = sqrt(3) / (1 + sqrt(3))
    expected = math.log(math.sqrt(3) / (1 + math.sqrt(3)))
    assert grpo.token_log_probs(logits, tokens, 2.0).item() == pytest.approx(expected, rel=1e-6)


def test_k3_kl():
    # pi_theta = 0.5, pi_ref = 0.25: d = -ln 2, exp(d) - d - 1 = 0.5 + ln 2 - 1
    kl = grpo.kl_k3(torch.tensor([[math.log(0.5), math.log(0.5)]]), torch.tensor([[math.log(0.25), math.log(0.5)]]))
    assert kl.tolist()[0] == pytest.approx([0.5 + math.log(2) - 1, 0.0], abs=1e-7)


def test_clipped_surrogate_takes_the_pessimistic_side():
    # ratios 1.5, 1.5, 0.5, 0.5 against advantages +1, -1, +1, -1, eps = 0.2
    log_probs = torch.log(torch.tensor([[1.5], [1.5], [0.5], [0.5]]))
    old = torch.zeros(4, 1)
    advantages = torch.tensor([1.0, -1.0, 1.0, -1.0])
    surrogate, clipped = grpo.clipped_surrogate(log_probs, old, advantages, 0.2)
    # min(1.5, 1.2) = 1.2 clipped; min(-1.5, -1.2) = -1.5; min(0.5, 0.8) = 0.5; min(-0.5, -0.8) = -0.8 clipped
    assert surrogate.squeeze(1).tolist() == pytest.approx([1.2, -1.5, 0.5, -0.8])
    assert clipped.squeeze(1).tolist() == [True, False, False, True]


def test_aggregation_per_completion_and_per_token():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # the 9s are padding
    # grpo: (6 / 3 + 4 / 1) / 2 = 3; dapo: (6 + 4) / 4 = 2.5
    assert grpo.aggregate(per_token, mask, "grpo", 2, 4).item() == pytest.approx(3.0)
    assert grpo.aggregate(per_token, mask, "dapo", 2, 4).item() == pytest.approx(2.5)


def test_loss_at_the_first_step_is_minus_the_mean_advantage_plus_kl():
    # ratio 1 (old = current), advantages +1 and -0.5, pi_ref = pi_theta / 2 on the first token only
    log_probs = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    ref = torch.log(torch.tensor([[0.25, 0.5], [0.5, 0.5]]))
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, stats = grpo.grpo_loss(
        log_probs,
        log_probs,
        ref,
        torch.tensor([1.0, -0.5]),
        mask,
        beta=0.1,
        clip_epsilon=0.2,
        loss_type="grpo",
        batch_completions=2,
        batch_tokens=3,
    )
    kl = 0.5 + math.log(2) - 1  # first token of completion 0
    # completion 0: mean(-1 + 0.1 kl, -1) = -1 + 0.05 kl; completion 1: +0.5
    assert loss.item() == pytest.approx(((-1 + 0.05 * kl) + 0.5) / 2, rel=1e-6)
    assert stats["kl"].item() == pytest.approx(kl, rel=1e-6)
    assert stats["ratio"].item() == pytest.approx(3.0)  # three tokens at ratio 1
    assert stats["clipped"].item() == 0


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_micro_batches_give_the_full_batch_gradient(loss_type):
    torch.manual_seed(0)
    logits = torch.randn(6, 5, 7, requires_grad=True)
    tokens = torch.randint(0, 7, (6, 5))
    mask = (torch.rand(6, 5) > 0.3).float()
    mask[:, 0] = 1
    old = torch.randn(6, 5) * 0.1 - 2
    ref = torch.randn(6, 5) * 0.1 - 2
    advantages = torch.randn(6)
    kwargs = dict(beta=0.04, clip_epsilon=0.2, loss_type=loss_type, batch_completions=6, batch_tokens=int(mask.sum()))

    def loss_of(rows):
        log_probs = grpo.token_log_probs(logits[rows], tokens[rows], 1.0)
        return grpo.grpo_loss(log_probs, old[rows], ref[rows], advantages[rows], mask[rows], **kwargs)[0]

    (full,) = torch.autograd.grad(loss_of(slice(0, 6)), logits)
    (first,) = torch.autograd.grad(loss_of(slice(0, 4)), logits)
    (second,) = torch.autograd.grad(loss_of(slice(4, 6)), logits)
    torch.testing.assert_close(first + second, full)


def test_unscored_completions_are_left_out_of_the_group_and_get_zero_advantage():
    """Group 1: [1, None, 0, 0] -> mean of the scored 1/3, Bessel std over 3: sqrt((4/9 + 1/9 + 1/9) / 2) = sqrt(1/3).
    Group 2 has one scored reward (std undefined: advantage 0) and group 3 none."""
    rewards = grpo.reward_tensor([1.0, None, 0.0, 0.0, None, 2.0, None, None, None, None, None, None])
    std = math.sqrt(1 / 3) + 1e-4
    expected = [(2 / 3) / std, 0.0, (-1 / 3) / std, (-1 / 3) / std] + [0.0] * 8
    assert grpo.group_advantages(rewards, 4, scale=True).tolist() == pytest.approx(expected, rel=1e-6)
    assert grpo.group_advantages(rewards, 4, scale=False).tolist() == pytest.approx(
        [2 / 3, 0, -1 / 3, -1 / 3] + [0] * 8
    )
    assert math.isnan(rewards[1].item())
    assert grpo.zero_std_fraction(rewards, 4) == 0.0  # no group has scored rewards that all agree


def test_unscored_advantages_match_trl():
    """TRL 1.16's own nan-aware baseline and std (trl.trainer.utils.nanstd) on the same rewards."""
    trl_utils = pytest.importorskip("trl.trainer.utils")
    rewards = grpo.reward_tensor([1.0, None, 0.0, 0.0, 3.0, 1.0, None, 2.0])
    grouped = rewards.view(-1, 4)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(4)
    std = trl_utils.nanstd(grouped, dim=1).repeat_interleave(4)
    trl_advantages = torch.nan_to_num((rewards - mean) / (std + 1e-4), nan=0.0)
    torch.testing.assert_close(grpo.group_advantages(rewards, 4, scale=True), trl_advantages)
