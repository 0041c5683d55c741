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


@pytest.mark.parametrize("level", variants.IMPORTANCE_SAMPLING_LEVELS)
@pytest.mark.parametrize("loss_type", variants.LOSS_TYPES)
def test_micro_batches_give_the_full_batch_gradient(loss_type, level):
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
        importance_sampling_level=level,
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


LN2 = math.log(2)


def test_k1_k2_k3_by_hand():
    """Token 1: pi_theta 0.5, pi_ref 0.25, d = log pi_ref - log pi_theta = -ln 2. Token 2: the other way, d = ln 2.
    k1 = -d (negative where pi_ref is likelier), k2 = d^2 / 2, k3 = exp(d) - d - 1."""
    log_probs, ref = torch.log(torch.tensor([[0.5, 0.25]])), torch.log(torch.tensor([[0.25, 0.5]]))
    assert grpo.kl_k1(log_probs, ref).tolist()[0] == pytest.approx([LN2, -LN2])
    assert grpo.kl_k2(log_probs, ref).tolist()[0] == pytest.approx([LN2**2 / 2, LN2**2 / 2])
    assert grpo.kl_k3(log_probs, ref).tolist()[0] == pytest.approx([0.5 + LN2 - 1, 2 - LN2 - 1])
    assert set(grpo.KL) == set(variants.KL_ESTIMATORS)


@pytest.mark.parametrize(
    ("estimator", "k", "slope"),
    [
        # per token (pi_theta / pi_ref = 2, then 1): k and dk/dlog pi_theta
        ("k1", [LN2, 0.0], [1.0, 1.0]),  # dk1/dlog pi = 1: a constant push down, 0 in expectation on-policy
        ("k2", [LN2**2 / 2, 0.0], [LN2, 0.0]),  # dk2/dlog pi = log pi - log pi_ref = k1
        ("k3", [0.5 + LN2 - 1, 0.0], [0.5, 0.0]),  # dk3/dlog pi = 1 - pi_ref / pi
    ],
)
def test_each_kl_estimator_in_the_loss_by_hand(estimator, k, slope):
    """One completion of two tokens, ratio 1, A = +1, beta 0.1, loss_type grpo (the token mean):
    loss = mean_t(-1 + 0.1 k_t); d loss / d log pi_t = (-1 + 0.1 dk_t/dlog pi_t) / 2."""
    log_probs = torch.log(torch.tensor([[0.5, 0.5]])).requires_grad_()
    ref = torch.log(torch.tensor([[0.25, 0.5]]))
    settings = dict(beta=0.1, clip_epsilon=0.2, loss_type="grpo", batch_completions=1, batch_tokens=2)
    loss, stats = grpo.grpo_loss(
        log_probs, log_probs.detach(), ref, torch.tensor([1.0]), torch.ones(1, 2), kl_estimator=estimator, **settings
    )
    assert loss.item() == pytest.approx(sum(-1 + 0.1 * x for x in k) / 2)
    (gradient,) = torch.autograd.grad(loss, log_probs)
    assert gradient.tolist()[0] == pytest.approx([(-1 + 0.1 * s) / 2 for s in slope])
    assert stats["kl"].item() == pytest.approx(0.5 + LN2 - 1)  # the logged kl is k3's, whatever the estimator


def test_the_kl_in_the_reward_by_hand():
    """Two completions of one group, both rewarded 1. Completion 0: pi_theta / pi_ref = 2 on its first token, 1 on
    its second; completion 1: 1/2 on its only token (the second is padding, whose numbers count nothing).
    beta 0.1: penalty = 0.1 x sum_t k_t; the penalised rewards 1 - penalty; A = r - mean (scale 'none'): the
    completion further from the reference by the estimator loses."""
    log_probs = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.9]]))
    ref = torch.log(torch.tensor([[0.25, 0.5], [0.5, 0.1]]))
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    penalties = {
        "k1": [0.1 * LN2, 0.1 * -LN2],
        "k2": [0.1 * LN2**2 / 2, 0.1 * LN2**2 / 2],
        "k3": [0.1 * (0.5 + LN2 - 1), 0.1 * (2 - LN2 - 1)],
    }
    for estimator, expected in penalties.items():
        penalty = grpo.kl_penalty(log_probs, ref, mask, 0.1, estimator)
        assert penalty.tolist() == pytest.approx(expected), estimator
        advantages = grpo.group_advantages(torch.ones(2) - penalty, 2, "none")
        gap = (expected[1] - expected[0]) / 2
        assert advantages.tolist() == pytest.approx([gap, -gap], abs=1e-6), estimator
    # With the KL in the reward the loss has none: the reference only measures kl (k3's)
    settings = dict(beta=0.1, clip_epsilon=0.2, loss_type="grpo", batch_completions=2, batch_tokens=3)
    without, _ = grpo.grpo_loss(log_probs, log_probs, None, torch.tensor([1.0, -1.0]), mask, **settings)
    placed, stats = grpo.grpo_loss(
        log_probs, log_probs, ref, torch.tensor([1.0, -1.0]), mask, kl_in_loss=False, **settings
    )
    assert placed.item() == without.item()
    assert stats["kl"].item() == pytest.approx(0.5 + LN2 - 1 + 2 - LN2 - 1)


def test_the_sequence_ratio_is_the_exp_of_the_mean_log_ratio_by_hand():
    """Token ratios 2 and 1 (a third, padding, 8): GSPO's s = exp((ln 2 + 0) / 2) = sqrt 2, clipped as one to 1.2
    with A = +1 on both tokens; with A = -1 the pessimistic side is -sqrt 2, unclipped. Per token, only the
    first token's ratio is clipped."""
    log_probs = torch.log(torch.tensor([[2.0, 1.0, 8.0], [2.0, 1.0, 8.0]]))
    old, mask = torch.zeros(2, 3), torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    ratio = grpo.importance_ratio(log_probs, old, mask, "sequence")
    assert ratio.squeeze(1).tolist() == pytest.approx([math.sqrt(2)] * 2)
    advantages = torch.tensor([1.0, -1.0])
    surrogate, clipped = grpo.clipped_surrogate(log_probs, old, advantages, 0.2, completion_mask=mask, level="sequence")
    assert surrogate.squeeze(1).tolist() == pytest.approx([1.2, -math.sqrt(2)])
    assert clipped.squeeze(1).tolist() == [True, False]
    per_token, clipped = grpo.clipped_surrogate(log_probs, old, advantages, 0.2)
    torch.testing.assert_close(per_token[:, :2], torch.tensor([[1.2, 1.0], [-2.0, -1.0]]))
    assert clipped[:, :2].tolist() == [[True, False], [False, False]]


@pytest.mark.parametrize("loss_type", variants.LOSS_TYPES)
def test_on_policy_the_sequence_ratio_gives_the_token_ratios_gradient(loss_type):
    """With pi_old = pi_theta (one update per batch) every ratio is 1 and nothing is clipped: each of a completion's
    |o| tokens carries s_i, whose gradient is the mean of its tokens' log-prob gradients, so the sum over tokens is
    the token level's. GSPO and GRPO part only off-policy (num_iterations > 1)."""
    torch.manual_seed(0)
    log_probs = (torch.randn(4, 6) - 2).requires_grad_()
    mask = (torch.rand(4, 6) > 0.3).float()
    mask[:, 0] = 1
    ref, advantages = torch.randn(4, 6) - 2, torch.randn(4)
    settings = dict(beta=0.04, clip_epsilon=0.2, loss_type=loss_type, batch_completions=4, batch_tokens=int(mask.sum()))
    gradients = []
    for level in variants.IMPORTANCE_SAMPLING_LEVELS:
        loss, _ = grpo.grpo_loss(
            log_probs,
            log_probs.detach(),
            ref,
            advantages,
            mask,
            importance_sampling_level=level,
            max_new_tokens=6,
            **settings,
        )
        gradients.append(torch.autograd.grad(loss, log_probs)[0])
    torch.testing.assert_close(*gradients)


def test_cispo_keeps_the_gradient_the_clip_would_cut_by_hand():
    """Ratio 2 with A = +1: PPO's clip makes the surrogate 1.2, a constant (gradient 0). CISPO's weight is
    min(2, eps_max 1.5) = 1.5, detached: objective 1.5 x 1 x log pi, gradient 1.5 on log pi. Ratio 0.5 with A = -1:
    no lower cap, weight 0.5: objective -0.5 log pi, gradient -0.5."""
    log_probs = torch.log(torch.tensor([[0.5], [0.25]])).requires_grad_()
    old = torch.log(torch.tensor([[0.25], [0.5]]))
    advantages = torch.tensor([1.0, -1.0])
    objective, capped = grpo.cispo_objective(log_probs, old, advantages, 1.5)
    assert objective.squeeze(1).tolist() == pytest.approx([1.5 * math.log(0.5), -0.5 * math.log(0.25)])
    assert capped.squeeze(1).tolist() == [True, False]
    (gradient,) = torch.autograd.grad(objective.sum(), log_probs)
    assert gradient.squeeze(1).tolist() == pytest.approx([1.5, -0.5])
    surrogate, _ = grpo.clipped_surrogate(log_probs, old, advantages, 0.2)
    (clipped_gradient,) = torch.autograd.grad(surrogate.sum(), log_probs)
    assert clipped_gradient.squeeze(1).tolist()[0] == 0.0


def test_decoupled_rewards_by_hand():
    """GDPO: one group of 3, two functions. correct (1, 0, 0): mean 1/3, Bessel std sqrt(1/3); length
    (0.2, 0.2, 0.8) weighted 0.5: mean 0.4, std sqrt(0.12). Each normalised, then 1 x correct + 0.5 x length."""
    values = torch.tensor([[1.0, 0.2], [0.0, 0.2], [0.0, 0.8]])
    s1, s2 = math.sqrt(1 / 3) + 1e-4, math.sqrt(0.12) + 1e-4
    expected = [(2 / 3) / s1 - 0.5 * 0.2 / s2, (-1 / 3) / s1 - 0.5 * 0.2 / s2, (-1 / 3) / s1 + 0.5 * 0.4 / s2]
    assert grpo.decoupled_rewards(values, torch.tensor([1.0, 0.5]), 3).tolist() == pytest.approx(expected, abs=1e-6)
    # an unscored value counts 0 (its function's std over the other two); a completion no function scored is NaN
    values = torch.tensor([[1.0, float("nan")], [0.0, 0.2], [float("nan"), float("nan")]])
    rewards = grpo.decoupled_rewards(values, torch.tensor([1.0, 0.5]), 3)
    s1 = math.sqrt(0.5) + 1e-4
    assert rewards[:2].tolist() == pytest.approx([0.5 / s1, -0.5 / s1], rel=1e-6)  # length: one value, no std: 0
    assert math.isnan(rewards[2].item())


def test_logits_at_temperature_one_are_the_logits_themselves_and_elsewhere_divided():
    logits = torch.tensor([[1.5, -0.25, 3.0]], dtype=torch.bfloat16)
    assert torch.equal(grpo.at_temperature(logits, 1.0), logits.float())
    assert grpo.at_temperature(logits, 1.0).dtype == torch.float32
    assert torch.equal(grpo.at_temperature(logits, 0.5), torch.tensor([[3.0, -0.5, 6.0]]))
