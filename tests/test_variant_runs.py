"""GSPO, CISPO, GDPO and the KL grid run for real on the tiny model: each moves the adapter and stores its steps;
the KL in the reward is stored per completion and is what the stored advantages were computed from."""

import pytest
import torch
from safetensors.torch import load_file

from workbench import Config, Store, load_task, train
from workbench.engine import grpo
from workbench.engine.policy import Policy
from workbench.events import StepFinished
from workbench.rewards.scoring import RewardSource

SMALL = dict(group_size=4, prompts_per_step=3, max_new_tokens=8, checkpoint_every=100)
TWO_REWARDS = (  # two reward functions that differ within most groups, for GDPO's per-function normalisation
    "def first_character(completions, **kwargs):\n"
    "    return [float(ord(c[0]) % 3) if c else 0.0 for c in completions]\n\n"
    "def length(completions, **kwargs):\n"
    "    return [len(c) / 10 for c in completions]\n"
)


def run(config: Config, workspace, task=None) -> list:
    return list(train(config, task or load_task("arithmetic"), workspace))


def two_reward_task():
    return load_task("arithmetic").with_rewards(RewardSource(TWO_REWARDS, "two.py"))


@pytest.mark.parametrize(
    "settings",
    [
        dict(importance_sampling_level="sequence", num_iterations=2),
        dict(loss_type="cispo", epsilon_high=5.0, num_iterations=2),
        dict(loss_type="cispo", epsilon_high=5.0, importance_sampling_level="sequence"),
        dict(multi_objective_aggregation="normalize_then_sum", scale_rewards="batch"),
        dict(kl_estimator="k1"),
        dict(kl_estimator="k2"),
        dict(kl_estimator="k1", use_kl_in_reward=True),
        dict(kl_estimator="k2", use_kl_in_reward=True),
        dict(kl_estimator="k3", use_kl_in_reward=True),
    ],
    ids=lambda settings: "-".join(f"{k}={v}" for k, v in settings.items()),
)
def test_each_variant_trains_moves_the_adapter_and_stores_its_steps(tmp_path, settings):
    config = Config(steps=2, **SMALL, **settings)
    events = run(config, tmp_path, two_reward_task())
    finished = [e for e in events if isinstance(e, StepFinished)]
    stored = Store(tmp_path).query("SELECT step, loss, kl, clip_frac FROM steps ORDER BY step")
    assert stored.step.tolist() == [1, 2] and len(finished) == 2
    assert stored.loss.notna().all() and (stored.kl >= 0).all()  # kl is k3's mean, whatever the estimator
    adapter = load_file(tmp_path / "runs" / events[0].run_id / "checkpoint" / "adapter_model.safetensors")
    lora_b = [weight for name, weight in adapter.items() if "lora_B" in name]
    assert len(lora_b) >= 8 and all(weight.abs().max() > 0 for weight in lora_b)  # peft starts every lora_B at 0


def test_the_kl_in_the_reward_is_stored_and_is_what_the_advantages_used(tmp_path):
    """Stored per completion as the reward_values row 'kl_penalty' (beta x the completion's summed k1), beside the
    reward functions' values; rollouts.reward stays their weighted sum, and rollouts.advantage is the group
    baseline's of reward - kl_penalty. At step 1 the adapter is the reference's: the penalty is exactly 0."""
    config = Config(steps=3, kl_estimator="k1", use_kl_in_reward=True, beta=0.2, **SMALL)
    run(config, tmp_path, two_reward_task())
    stored = Store(tmp_path).query(
        """SELECT r.step, r.group_id, r.sample_idx, r.reward, r.advantage, k.value AS kl_penalty,
                  f.value + l.value AS summed
           FROM rollouts r
           JOIN reward_values k USING (run_id, step, group_id, sample_idx)
           JOIN reward_values f USING (run_id, step, group_id, sample_idx)
           JOIN reward_values l USING (run_id, step, group_id, sample_idx)
           WHERE k.name = 'kl_penalty' AND f.name = 'first_character' AND l.name = 'length'
           ORDER BY r.step, r.group_id, r.sample_idx"""
    )
    assert len(stored) == 3 * 12
    assert stored.reward.tolist() == pytest.approx(stored.summed.tolist())  # not penalised
    assert (stored[stored.step == 1].kl_penalty == 0).all()
    assert (stored[stored.step > 1].kl_penalty != 0).any()
    for _, step in stored.groupby("step"):
        penalised = torch.tensor((step.reward - step.kl_penalty).tolist())
        expected = grpo.group_advantages(penalised, config.group_size, "group")
        assert step.advantage.tolist() == pytest.approx(expected.tolist(), abs=1e-4)


def test_the_kl_in_the_reward_takes_the_reference_once_a_step(tmp_path, monkeypatch):
    """Moved before the advantages, not doubled: the same number of reference passes in either placement."""
    calls = []
    reference_log_probs = Policy.reference_log_probs

    def counted(self, *args, **kwargs):
        calls.append(1)
        return reference_log_probs(self, *args, **kwargs)

    monkeypatch.setattr(Policy, "reference_log_probs", counted)
    counts = {}
    for placement in (False, True):
        calls.clear()
        run(Config(steps=2, use_kl_in_reward=placement, **SMALL), tmp_path / str(placement))
        counts[placement] = len(calls)
    assert counts[True] == counts[False] > 0
    calls.clear()
    run(Config(steps=2, beta=0.0, use_kl_in_reward=True, **SMALL), tmp_path / "beta0")
    assert calls == []  # beta 0: no reference pass wherever the KL would go


def test_normalize_then_sum_stores_gdpos_advantages(tmp_path):
    """The stored advantages are GDPO's, worked out from the stored values of the two functions."""
    config = Config(steps=1, multi_objective_aggregation="normalize_then_sum", scale_rewards="batch", **SMALL)
    run(config, tmp_path, two_reward_task())
    store = Store(tmp_path)
    values = store.query(
        """SELECT r.advantage, f.value AS first_character, l.value AS length FROM rollouts r
           JOIN reward_values f USING (run_id, step, group_id, sample_idx)
           JOIN reward_values l USING (run_id, step, group_id, sample_idx)
           WHERE f.name = 'first_character' AND l.name = 'length' ORDER BY r.group_id, r.sample_idx"""
    )
    per_function = torch.tensor(values[["first_character", "length"]].values, dtype=torch.float32)
    rewards = grpo.decoupled_rewards(per_function, torch.ones(2), config.group_size)
    expected = (rewards - rewards.mean()) / (rewards.std() + 1e-4)
    assert values.advantage.tolist() == pytest.approx(expected.tolist(), abs=1e-4)
    assert values.advantage.abs().max() > 0.1


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_the_token_view_stores_the_runs_own_kl_estimate(tmp_path, estimator):
    run(Config(steps=2, beta=0.1, kl_estimator=estimator, learning_rate=1e-2, **SMALL), tmp_path)
    tokens = Store(tmp_path).query(
        "SELECT unnest(logprob) AS lp, unnest(ref_logprob) AS ref, unnest(kl) AS kl FROM tokens WHERE step = 2"
    )
    d = torch.tensor(tokens.ref.to_numpy()) - torch.tensor(tokens.lp.to_numpy())  # log pi_ref - log pi_theta
    by_hand = {"k1": -d, "k2": d.pow(2) / 2, "k3": d.exp() - d - 1}[estimator]
    assert len(tokens) > 0 and d.abs().max() > 0  # the adapter moved the policy off the reference
    torch.testing.assert_close(torch.tensor(tokens.kl.to_numpy()), by_hand, rtol=1e-4, atol=1e-6)
