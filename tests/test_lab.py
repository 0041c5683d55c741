"""workbench.engine.lab: the seed's claims measured; the numbers checked by hand where they can be."""

import pytest
import torch

from workbench import Config, load_task
from workbench.engine import lab
from workbench.engine.policy import load_policy
from workbench.engine.ppo import load_critic
from workbench.rewards.scoring import RewardSource

SMALL = dict(prompts_per_step=2, max_new_tokens=8, advantage_estimator="ppo", scale_rewards="none")


def test_signal_fraction_by_hand():
    """2 prompts x 4 completions, one resample: (1, 1, 1, 1) and (0, 1, 0, 0). K=2 looks at (1, 1) and
    (0, 1): one of two equal. K=4: (1, 1, 1, 1) only. p = 5/8, so p^2 + (1 - p)^2 = 34/64; per prompt
    p_j = 1 and 1/4: (1 + (1/16 + 9/16)) / 2 = 13/16."""
    groups = lab.Groups([{}, {}], [None], [torch.tensor([1.0, 1, 1, 1, 0, 1, 0, 0])], group_size=4)
    k2, k4 = lab.signal_fraction(groups, ks=(2, 4))
    assert k2["measured"] == 0.5 and k4["measured"] == 0.5
    assert k2["p"] == 5 / 8 and k2["predicted"] == pytest.approx(34 / 64)
    assert k2["predicted_per_prompt"] == pytest.approx(13 / 16)
    assert lab.first_of_each_group(groups, 2).tolist() == [0, 1, 4, 5]


def test_with_equal_rewards_a_group_baseline_gives_no_gradient_and_none_does():
    config = Config(**SMALL)
    always = RewardSource("def always(completions, **kwargs):\n    return [1.0] * len(completions)\n")
    policy = load_policy(config)
    groups = lab.sample_groups_again(policy, load_task("arithmetic").with_rewards(always), config, 2, group_size=4)
    assert [r.tolist() for r in groups.rewards] == [[1.0] * 8] * 2
    assert not torch.equal(groups.rollouts[0].completion_ids, groups.rollouts[1].completion_ids)  # resampled
    baselines = (("none", "reinforce", 4), ("mean", "grpo", 4), ("others", "rloo", 4), ("critic", "ppo", 4))
    rows = {
        row["baseline"]: row for row in lab.baseline_variance(policy, groups, config, load_critic(config), baselines)
    }
    for label in ("mean", "others"):  # A = 0 everywhere: no gradient at all
        assert rows[label]["advantage_mean_square"] == 0 and rows[label]["gradient_variance"] == 0
    assert rows["none"]["advantage_mean_square"] == 1 and rows["none"]["advantage_var"] == 0  # A = r = 1
    assert rows["none"]["gradient_variance"] > 0  # pushed by the reward alone, the gradient varies
    assert 0 < rows["critic"]["advantage_mean_square"] <= 1  # V = 0 at the start: A_t = lambda^(L-1-t)
    assert len(lab.baseline_variance(policy, groups, config)) == 2  # K=8 rows need 8 samples; ppo a critic


def test_kl_to_reference_is_zero_for_the_base_model_and_grows_as_the_adapter_moves():
    config = Config(prompts_per_step=2, max_new_tokens=8)
    policy = load_policy(config)
    rows = load_task("arithmetic").eval_rows[:4]
    assert lab.kl_to_reference(policy, rows, config) == 0.0  # lora_B starts at 0: pi_theta is pi_ref
    with torch.no_grad():
        for name, weight in policy.model.named_parameters():
            if "lora_B" in name:
                weight.normal_(std=0.05)
    assert lab.kl_to_reference(policy, rows, config) > 0
