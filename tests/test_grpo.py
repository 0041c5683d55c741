"""The GRPO math against numbers worked out by hand (two groups of four)."""

import math

import pytest
import torch

from workbench import variants
from workbench.engine import grpo

REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])  # two groups, G = 4


def test_advantages_subtract_the_group_mean():
    # group 1: mean 0.5; group 2: mean 0.25
    expected = [0.5, -0.5, -0.5, 0.5, -0.25, -0.25, -0.25, 0.75]
    assert grpo.group_advantages(REWARDS, 4, "none").tolist() == pytest.approx(expected)


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
    assert grpo.group_advantages(REWARDS, 4, "group").tolist() == pytest.approx(expected, rel=1e-6)


def test_rloo_compares_each_reward_with_the_mean_of_the_other_three():
    # group 1 sums to 2: a 1 is compared with 1/3, a 0 with 2/3; group 2 sums to 1: a 0 with 1/3, the 1 with 0
    expected = [2 / 3, -2 / 3, -2 / 3, 2 / 3, -1 / 3, -1 / 3, -1 / 3, 1.0]
    assert grpo.group_advantages(REWARDS, 4, "none", "rloo").tolist() == pytest.approx(expected)
    grpo_advantages = grpo.group_advantages(REWARDS, 4, "none", "grpo")
    torch.testing.assert_close(grpo.group_advantages(REWARDS, 4, "none", "rloo"), grpo_advantages * 4 / 3)


def test_reinforce_has_no_baseline_or_the_batch_mean():
    assert grpo.group_advantages(REWARDS, 4, "none", "reinforce").tolist() == REWARDS.tolist()
    # the batch's mean reward is 3/8
    expected = [0.625, -0.375, -0.375, 0.625, -0.375, -0.375, -0.375, 0.625]
    assert grpo.group_advantages(REWARDS, 4, "none", "reinforce_batch_mean").tolist() == pytest.approx(expected)


def test_batch_scaling_divides_by_the_std_of_the_whole_batch():
    # mean 3/8; squares 3 x 0.625^2 + 5 x 0.375^2 = 1.875; Bessel: 1.875 / 7
    std = math.sqrt(1.875 / 7) + 1e-4
    expected = [a / std for a in (0.5, -0.5, -0.5, 0.5, -0.25, -0.25, -0.25, 0.75)]
    assert grpo.group_advantages(REWARDS, 4, "batch").tolist() == pytest.approx(expected, rel=1e-6)


def test_rloo_leaves_unscored_completions_out_and_matches_trl():
    """[1, None, 0, 0]: three scored, summing to 1; the 1 is compared with 0, each 0 with 1/2.
    [None, 2, None, None]: one scored, no other to compare with: 0. TRL 1.16's RLOOTrainer lines, copied."""
    rewards = grpo.reward_tensor([1.0, None, 0.0, 0.0, None, 2.0, None, None])
    assert grpo.group_advantages(rewards, 4, "none", "rloo").tolist() == [1.0, 0.0, -0.5, -0.5, 0, 0, 0, 0]
    grouped_rewards = rewards.view(-1, 4)
    scorable_counts = (~torch.isnan(grouped_rewards)).sum(dim=1, keepdim=True)
    grouped_sum = torch.nansum(grouped_rewards, dim=1, keepdim=True)
    baselines = ((grouped_sum - grouped_rewards) / (scorable_counts - 1)).view(-1)
    trl_advantages = torch.nan_to_num(rewards - baselines, nan=0.0)
    torch.testing.assert_close(grpo.group_advantages(rewards, 4, "none", "rloo"), trl_advantages)


def test_batch_scaling_matches_trl():
    """TRL 1.16's GRPOTrainer with scale_rewards='batch': group mean, the batch's nanstd."""
    trl_utils = pytest.importorskip("trl.trainer.utils")
    rewards = grpo.reward_tensor([1.0, None, 0.0, 0.0, 3.0, 1.0, None, 2.0])
    mean = torch.nanmean(rewards.view(-1, 4), dim=1).repeat_interleave(4)
    std = trl_utils.nanstd(rewards).expand_as(rewards)
    trl_advantages = torch.nan_to_num((rewards - mean) / (std + 1e-4), nan=0.0)
    torch.testing.assert_close(grpo.group_advantages(rewards, 4, "batch"), trl_advantages)


def test_a_group_of_equal_rewards_has_zero_advantage_and_counts_as_no_signal():
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    assert grpo.group_advantages(rewards, 4, "group")[:4].tolist() == [0.0] * 4
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


@pytest.mark.parametrize("loss_type", variants.LOSS_TYPES)
def test_micro_batches_give_the_full_batch_gradient(loss_type):
    torch.manual_seed(0)
    logits = torch.randn(6, 5, 7, requires_grad=True)
    tokens = torch.randint(0, 7, (6, 5))
    mask = (torch.rand(6, 5) > 0.3).float()
    mask[:, 0] = 1
    old = torch.randn(6, 5) * 0.1 - 2
    ref = torch.randn(6, 5) * 0.1 - 2
    advantages = torch.randn(6)
    kwargs = dict(
        beta=0.04,
        clip_epsilon=0.2,
        loss_type=loss_type,
        batch_completions=6,
        batch_tokens=int(mask.sum()),
        max_new_tokens=5,
        epsilon_high=0.28,
    )

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
    assert grpo.group_advantages(rewards, 4, "group").tolist() == pytest.approx(expected, rel=1e-6)
    assert grpo.group_advantages(rewards, 4, "none").tolist() == pytest.approx([2 / 3, 0, -1 / 3, -1 / 3] + [0] * 8)
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
    torch.testing.assert_close(grpo.group_advantages(rewards, 4, "group"), trl_advantages)


def test_each_loss_type_is_trls_formula():
    """TRL 1.16's GRPOTrainer.compute_loss aggregation lines, copied, on one batch (one process, no
    gradient accumulation, where TRL's micro-batch is the whole batch)."""
    torch.manual_seed(0)
    per_token_loss = torch.randn(6, 5)
    mask = (torch.rand(6, 5) > 0.3).float()
    max_completion_length = 8
    trl = {
        "grpo": ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean(),
        "bnpo": (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0),
        "dr_grpo": (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length),
        "dapo": (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0),  # num_items_in_batch: the batch's tokens
    }
    for loss_type, expected in trl.items():
        ours = grpo.aggregate(per_token_loss, mask, loss_type, 6, int(mask.sum()), max_completion_length)
        torch.testing.assert_close(ours, expected, msg=loss_type)


def test_dr_grpo_divides_by_a_constant_by_hand():
    # 2 completions, losses 1 on 3 tokens and 2 on 1 token, max_new_tokens 4: (3 + 2) / (2 * 4)
    per_token = torch.tensor([[1.0, 1.0, 1.0, 0.0], [2.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert grpo.aggregate(per_token, mask, "dr_grpo", 2, 4, 4).item() == pytest.approx(5 / 8)
    assert grpo.aggregate(per_token, mask, "grpo", 2, 4).item() == pytest.approx((1 + 2) / 2)
    assert grpo.aggregate(per_token, mask, "bnpo", 2, 4).item() == pytest.approx(5 / 4)


def test_clip_higher_lets_a_positive_advantage_rise_further():
    """eps_low 0.2, eps_high 0.28: a ratio of 1.25 with A = +1 is inside [0.8, 1.28] (kept, 1.25); with
    eps_high = eps it is clipped to 1.2. A ratio of 0.75 with A = -1 is clipped at 0.8 either way: -0.8."""
    log_probs = torch.log(torch.tensor([[1.25], [0.75]]))
    advantages = torch.tensor([1.0, -1.0])
    higher, clipped = grpo.clipped_surrogate(log_probs, torch.zeros(2, 1), advantages, 0.2, epsilon_high=0.28)
    assert higher.squeeze(1).tolist() == pytest.approx([1.25, -0.8])
    assert clipped.squeeze(1).tolist() == [False, True]
    symmetric, _ = grpo.clipped_surrogate(log_probs, torch.zeros(2, 1), advantages, 0.2)
    assert symmetric.squeeze(1).tolist() == pytest.approx([1.2, -0.8])


def test_entropy_by_hand():
    # p = (0.25, 0.75): H = -(0.25 ln 0.25 + 0.75 ln 0.75); uniform over 4: ln 4
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    assert grpo.entropy(logits, 1.0)[0].item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    assert grpo.entropy(torch.zeros(4), 1.0).item() == pytest.approx(math.log(4))
    assert grpo.entropy(logits, 1e6)[0].item() == pytest.approx(math.log(2), abs=1e-5)  # a high temperature flattens


def test_gae_on_a_three_token_sequence_by_hand():
    """gamma 1, lambda 0.9, reward 1 on the last token, V = (0.5, 0.2, 0.6):
    delta = (0.2 - 0.5, 0.6 - 0.2, 1 - 0.6) = (-0.3, 0.4, 0.4); A_2 = 0.4, A_1 = 0.4 + 0.9 x 0.4 = 0.76,
    A_0 = -0.3 + 0.9 x 0.76 = 0.384; R = A + V = (0.884, 0.96, 1.0).
    Row 2: two tokens then padding (its value 9 is ignored), reward 0, V = (0.3, -0.1):
    A_1 = 0 - (-0.1) = 0.1, A_0 = -0.1 - 0.3 + 0.9 x 0.1 = -0.31. Row 3: unscored (NaN): all 0."""
    rewards = torch.tensor([1.0, 0.0, float("nan")])
    values = torch.tensor([[0.5, 0.2, 0.6], [0.3, -0.1, 9.0], [0.4, 0.4, 0.4]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]])
    advantages, returns = grpo.gae(rewards, values, mask, lam=0.9)
    torch.testing.assert_close(advantages, torch.tensor([[0.384, 0.76, 0.4], [-0.31, 0.1, 0.0], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[0.884, 0.96, 1.0], [-0.01, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    one, _ = grpo.gae(rewards[:1], values[:1], mask[:1], lam=1.0)  # lambda 1: A_t = r - V_t
    torch.testing.assert_close(one, torch.tensor([[0.5, 0.8, 0.4]]))


def test_gae_matches_trls_ppo_loop():
    """TRL's PPOTrainer.train GAE lines (trl.experimental.ppo, no longer in TRL 1.16): values zeroed on
    padding, the score on the last token."""
    torch.manual_seed(0)
    B, T, gamma, lam = 5, 7, 1.0, 0.95
    lengths = torch.tensor([7, 3, 1, 5, 6])
    mask = (torch.arange(T) < lengths.unsqueeze(1)).long()
    values, scores = torch.randn(B, T), torch.randn(B)
    rewards = torch.zeros(B, T)
    rewards[torch.arange(B), lengths - 1] = scores
    values = torch.masked_fill(values, mask == 0, 0)
    lastgaelam, advantages_reversed = 0, []
    for t in reversed(range(T)):
        nextvalues = values[:, t + 1] if t < T - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages_reversed.append(lastgaelam)
    trl_advantages = torch.stack(advantages_reversed[::-1], axis=1)
    trl_returns = trl_advantages + values
    ours, returns = grpo.gae(scores, values, mask, lam)
    torch.testing.assert_close(ours, trl_advantages * mask)  # TRL masks them later, in its losses
    torch.testing.assert_close(returns, trl_returns * mask)


def test_clipped_value_loss_by_hand_and_as_trl():
    """Token 1: V 1.0, V_old 0.5, R 2.0, clip 0.2: clipped V 0.7, max((1 - 2)^2, (0.7 - 2)^2) = 1.69.
    Token 2: V 0.55 inside the clip: (0.55 - 0.6)^2 = 0.0025. Token 3 masked. 0.5 x (1.69 + 0.0025) / 2."""
    values, old = torch.tensor([[1.0, 0.55, 5.0]]), torch.tensor([[0.5, 0.5, 0.0]])
    returns, mask = torch.tensor([[2.0, 0.6, 0.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    loss = grpo.value_loss(values, old, returns, mask, cliprange_value=0.2, batch_tokens=2)
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.0025) / 2)
    # TRL's PPOTrainer.train (trl.experimental.ppo; TRL 1.16 no longer ships it), its masked_mean written out
    vpredclipped = torch.clamp(values, old - 0.2, old + 0.2)
    vf_loss_max = torch.max(torch.square(values - returns), torch.square(vpredclipped - returns))
    assert loss.item() == pytest.approx(0.5 * ((vf_loss_max * mask).sum() / mask.sum()).item())


def test_per_token_advantages_enter_the_surrogate_token_by_token():
    advantages = torch.tensor([[1.0, -2.0]])
    surrogate, _ = grpo.clipped_surrogate(torch.zeros(1, 2), torch.zeros(1, 2), advantages, 0.2)
    assert surrogate.tolist() == [[1.0, -2.0]]  # ratio 1: the surrogate is each token's own advantage
    assert grpo.explained_variance(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert grpo.explained_variance(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 3.0])) == 0.0
