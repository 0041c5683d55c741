"""advantage_estimator='ppo': PPO's learned critic, run for real on the tiny model."""

import threading

import pytest
import torch

from workbench import Config, ConfigError, Store, load_task, train
from workbench.engine import run as engine_run
from workbench.engine.checkpoint import checkpoint_folder
from workbench.engine.dryrun import dry_run
from workbench.engine.policy import load_policy
from workbench.events import StepFinished

PPO = dict(
    advantage_estimator="ppo", scale_rewards="none", group_size=4, prompts_per_step=3, max_new_tokens=8,
    checkpoint_every=100,
)  # fmt: skip


@pytest.fixture
def critics(monkeypatch):
    """The critics the trainer loads, kept for the test to look at."""
    loaded = []

    def load(config):
        loaded.append(trainer_load(config))
        return loaded[-1]

    trainer_load = engine_run.load_critic
    monkeypatch.setattr(engine_run, "load_critic", load)
    return loaded


def run(config, workspace, **kwargs):
    return list(train(config, load_task("arithmetic"), workspace, **kwargs))


def steps(events):
    return [e for e in events if isinstance(e, StepFinished)]


def test_a_ppo_run_trains_its_critic_and_not_the_base_weights(tmp_path, critics):
    config = Config(steps=2, **PPO)
    events = run(config, tmp_path)
    (critic,) = critics
    assert critic.head.weight.abs().sum() > 0  # the head starts at 0 and learned
    adapter = {n: p for n, p in critic.backbone.model.named_parameters() if "lora_B" in n}
    assert adapter and all(p.abs().sum() > 0 for p in adapter.values())  # lora_B starts at 0 too
    fresh = dict(load_policy(config).model.named_parameters())
    for name, weight in critic.backbone.model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(weight, fresh[name]), name  # the critic's copy of the base is frozen
    first, second = (e.metrics for e in steps(events))
    assert first["value_loss"] > 0 and second["value_loss"] > 0
    assert first["explained_variance"] is None or first["explained_variance"] <= 1e-6  # V = 0 at step 1
    stored = Store(tmp_path).query("SELECT value_loss FROM steps ORDER BY step").value_loss.tolist()
    assert stored == pytest.approx([first["value_loss"], second["value_loss"]])
    assert (checkpoint_folder(tmp_path, events[-1].run_id) / "critic" / "critic_state.pt").exists()


def test_the_critic_is_a_second_model_in_memory(tmp_path, critics):
    run(Config(steps=1, **PPO), tmp_path)
    (critic,) = critics
    policy = load_policy(Config(**PPO))
    base = [p for n, p in critic.backbone.model.named_parameters() if "lora_" not in n]
    policy_base = [p for n, p in policy.model.named_parameters() if "lora_" not in n]
    assert sum(p.numel() for p in base) == sum(p.numel() for p in policy_base) > 1_000_000
    assert {p.data_ptr() for p in base}.isdisjoint(p.data_ptr() for p in policy_base)
    hidden = critic.backbone.model.get_base_model().config.hidden_size
    assert critic.head.weight.shape == (1, hidden)


def test_at_the_first_step_the_critic_values_every_prefix_zero(tmp_path):
    """V = 0: GAE gives A_t = lambda^(L - 1 - t) r, whose mean over a completion's L tokens, the stored
    advantage, is r (1 - lambda^L) / ((1 - lambda) L)."""
    lam = 0.9
    run(Config(steps=1, gae_lambda=lam, **PPO), tmp_path)
    stored = Store(tmp_path).query("SELECT reward, num_tokens, advantage FROM rollouts")
    expected = [r * (1 - lam**n) / ((1 - lam) * n) for r, n in zip(stored.reward, stored.num_tokens)]
    assert stored.advantage.tolist() == pytest.approx(expected, abs=1e-6)
    assert stored.reward.nunique() > 1
    report = dry_run(Config(gae_lambda=lam, **PPO), load_task("arithmetic"), num_prompts=2)
    for group in report.groups:  # a dry run shows what the first step computes
        expected = [r * (1 - lam**n) / ((1 - lam) * n) for r, n in zip(group.rewards, group.num_tokens)]
        assert group.advantages == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow
def test_a_resumed_ppo_run_restores_its_critic(tmp_path):
    config = Config(
        steps=4, seed=2, threads=1, **PPO
    )  # one thread whatever the load (docs/models.md#threads-the-cores-a-run-gets)
    straight = run(config, tmp_path / "straight")
    stop, first = threading.Event(), []
    for event in train(config, load_task("arithmetic"), tmp_path / "resumed", stop=stop):
        first.append(event)
        if isinstance(event, StepFinished) and event.step == 2:
            stop.set()
    second = run(config, tmp_path / "resumed", resume=first[0].run_id)
    sql = "SELECT step, group_id, sample_idx, completion, reward, advantage FROM rollouts ORDER BY ALL"
    assert Store(tmp_path / "resumed").query(sql).equals(Store(tmp_path / "straight").query(sql))
    value_losses = [e.metrics["value_loss"] for e in steps(straight)]
    assert [e.metrics["value_loss"] for e in steps(first) + steps(second)] == pytest.approx(value_losses, rel=1e-5)


def test_ppo_refuses_group_scaling_by_name():
    with pytest.raises(ConfigError, match="scale_rewards 'group'.*'ppo'"):
        Config(advantage_estimator="ppo")
