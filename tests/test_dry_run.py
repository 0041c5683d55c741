"""Dry-runs on real groups from the tiny model, and re-scoring a stored run with an edited reward."""

import pytest
import torch

from workbench import Config, Store, load_task, train
from workbench.engine.dryrun import dry_run
from workbench.engine.rescoring import rescore
from workbench.events import GroupsScored
from workbench.rewards.scoring import RewardSource
from workbench.store.database import StoreError

SMALL = dict(group_size=4, prompts_per_step=3, max_new_tokens=8)
LENGTH = RewardSource("def length(completions, **kwargs):\n    return [float(len(c)) for c in completions]\n")
CONSTANT = RewardSource("def constant(completions, **kwargs):\n    return [1.0] * len(completions)\n")
WRONG = RewardSource(
    "def wrong(completions, answer, **kwargs):\n"
    "    return [0.0 if c.strip() == a else 1.0 for c, a in zip(completions, answer)]\n"
)


def test_a_dry_run_scores_what_the_first_step_of_a_run_would_sample(tmp_path):
    config = Config(steps=1, **SMALL)
    task = load_task("arithmetic").with_rewards(LENGTH)
    report = dry_run(config, task, num_prompts=3)
    (scored,) = [e for e in train(config, task, tmp_path) if isinstance(e, GroupsScored)]
    assert [g.completions for g in report.groups] == [g.completions for g in scored.groups]

    for group in report.groups:
        assert group.rewards == [float(len(c)) for c in group.completions]
        r = torch.tensor(group.rewards)
        assert group.advantages == pytest.approx(((r - r.mean()) / (r.std() + 1e-4)).tolist(), abs=1e-5)
    flat = sum(len(set(g.rewards)) == 1 for g in report.groups)
    assert report.frac_zero_std == flat / 3
    stats = report.function_stats().set_index("function")
    every = [r for g in report.groups for r in g.rewards]
    assert stats.loc["length", "mean"] == pytest.approx(sum(every) / len(every))
    assert stats.loc["length", "max"] == max(every) and stats.loc["length", "scored"] == 1.0
    assert report.group_stats()["reward_mean"].tolist() == pytest.approx([sum(g.rewards) / 4 for g in report.groups])


def test_a_reward_without_signal_gets_a_plain_warning():
    report = dry_run(Config(**SMALL), load_task("arithmetic"), CONSTANT, num_prompts=3)
    assert report.frac_zero_std == 1.0
    assert report.warning.startswith("3 of 3 groups gave all their completions the same reward (1)")
    assert "GRPO learns nothing" in report.report()


def test_rescoring_a_run_with_the_opposite_reward_flips_rewards_and_advantages(tmp_path):
    events = list(train(Config(steps=2, seed=3, **SMALL), load_task("arithmetic"), tmp_path))
    run_id = events[0].run_id
    before = Store(tmp_path).query("SELECT * FROM rollouts ORDER BY ALL")

    rescored = rescore(tmp_path, run_id, WRONG)
    frame = rescored.rollouts
    assert len(frame) == 24 and frame["new_reward"].tolist() == (1 - frame["reward"]).tolist()
    stored = Store(tmp_path).query("SELECT prompt, completion FROM rollouts ORDER BY step, group_id, sample_idx")
    assert frame[["prompt", "completion"]].equals(stored)  # each new reward beside what it scored
    assert frame["new_advantage"].tolist() == pytest.approx((-frame["advantage"]).tolist(), abs=1e-5)
    assert frame["new_wrong"].tolist() == frame["new_reward"].tolist()
    steps = rescored.steps
    assert steps["new_reward_mean"].tolist() == pytest.approx((1 - steps["reward_mean"]).tolist())
    assert steps["frac_zero_std"].tolist() == steps["new_frac_zero_std"].tolist()  # flat groups stay flat
    assert steps["rewards_changed"].tolist() == [12, 12]
    moving = (frame["advantage"] != 0).groupby(frame["step"]).sum().tolist()
    assert steps["advantages_flipped"].tolist() == moving
    assert "24 of 24 rewards change" in rescored.report()
    assert Store(tmp_path).query("SELECT * FROM rollouts ORDER BY ALL").equals(before)  # the store is untouched

    unchanged = rescore(tmp_path, run_id, load_task("arithmetic").rewards, step=2)
    assert unchanged.steps["step"].tolist() == [2] and unchanged.steps["rewards_changed"].tolist() == [0]
    with pytest.raises(StoreError, match="no stored rollouts at step 9"):
        rescore(tmp_path, run_id, WRONG, step=9)
    with pytest.raises(StoreError, match="no run 'nope'"):
        rescore(tmp_path, "nope", WRONG)


def test_every_name_workbench_exports_is_the_object_even_after_its_module_is_imported():
    import types

    import workbench
    import workbench.ui  # noqa: F401  imports every engine module

    assert not [name for name in workbench.__all__ if isinstance(getattr(workbench, name), types.ModuleType)]


def test_rescoring_a_dynamic_sampling_run_with_its_own_reward_gives_back_its_advantages(tmp_path):
    """The dropped groups keep advantage 0 and the trained ones are compared among themselves, as the
    trainer did; a ppo run's new advantages are unknown (NaN): its critic's values are not stored."""
    source = RewardSource(
        "def half_constant(prompts, completions, **kwargs):\n"
        "    return [1.0 if p[0] in '01234' else float(sum(map(ord, c)) % 7) for p, c in zip(prompts, completions)]\n"
    )
    task = load_task("arithmetic").with_rewards(source)
    config = Config(steps=2, dynamic_sampling=True, dynamic_sampling_max_rounds=4, **SMALL)
    run_id = [e for e in train(config, task, tmp_path)][0].run_id
    frame = rescore(tmp_path, run_id, source).rollouts
    assert frame.dropped.any() and (frame[frame.dropped].new_advantage == 0).all()
    assert frame.new_advantage.tolist() == pytest.approx(frame.advantage.tolist(), abs=1e-5)

    ppo = Config(steps=1, advantage_estimator="ppo", scale_rewards="none", **SMALL)
    ppo_run = [e for e in train(ppo, task, tmp_path / "ppo")][0].run_id
    assert rescore(tmp_path / "ppo", ppo_run, source).rollouts.new_advantage.isna().all()
