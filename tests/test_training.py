"""The GRPO loop run for real on the built-in tiny model (built once, then cached)."""

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from workbench import Config, ConfigError, Store, load_task, train
from workbench.engine import batches, grpo
from workbench.engine import run as engine_run
from workbench.engine.advantages import estimate_advantages
from workbench.engine.checkpoint import checkpoint_folder
from workbench.engine.policy import ModelLoadError, Policy, load_policy, positions
from workbench.engine.tiny import tiny_model_path
from workbench.events import GroupsScored, RunFinished, RunStarted, StepFinished
from workbench.rewards.scoring import RewardSource
from workbench.rewards.tasks import Task

SMALL = dict(group_size=4, prompts_per_step=3, max_new_tokens=8, checkpoint_every=100)


def run(config, workspace, task=None, **kwargs):
    return list(train(config, task or load_task("arithmetic"), workspace, **kwargs))


def steps(events):
    return [e for e in events if isinstance(e, StepFinished)]


def test_two_steps_move_the_adapter_and_not_the_base(tmp_path, monkeypatch):
    config = Config(steps=2, **SMALL)
    policies = []  # the policy the trainer trains, in memory: its base weights after two steps
    monkeypatch.setattr(engine_run, "load_policy", lambda config: policies.append(load_policy(config)) or policies[-1])
    reference = load_policy(config)
    lora_before = {n: p.clone() for n, p in reference.model.named_parameters() if "lora_B" in n}
    base_before = {n: p.clone() for n, p in reference.model.named_parameters() if "lora_" not in n}
    events = run(config, tmp_path)
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
    first, second = (e.metrics for e in steps(events))
    assert first["kl"] == 0.0  # adapter B starts at zero: pi_theta == pi_ref exactly
    assert first["ratio_mean"] == 1.0 and first["clip_frac"] == 0.0
    assert second["kl"] > 0

    (trained,) = policies
    named = dict(trained.model.named_parameters())
    assert all(not torch.equal(named[n], p) for n, p in lora_before.items())
    # sampling folds the adapter into the base weights and out again, every step: they come back exact
    assert len(base_before) > 10 and all(torch.equal(named[n], p) for n, p in base_before.items())
    saved = load_policy(config)  # the checkpoint holds the adapter the trainer had
    saved.load_adapter(checkpoint_folder(tmp_path, events[-1].run_id))
    assert all(torch.equal(p, named[n]) for n, p in saved.model.named_parameters() if "lora_B" in n)


def test_every_step_is_stored_whole(tmp_path):
    events = run(Config(steps=2, **SMALL), tmp_path)
    run_id = events[0].run_id
    store = Store(tmp_path)
    counts = store.query("SELECT step, count(*) AS n FROM rollouts GROUP BY step ORDER BY step")
    assert counts["n"].tolist() == [12, 12]  # P x G
    values = store.query("SELECT count(*) AS n FROM reward_values WHERE name = 'correct'")
    assert values["n"].item() == 24
    assert store.run(run_id)["status"] == "finished"
    stored = store.query("SELECT reward_mean FROM steps ORDER BY step")["reward_mean"].tolist()
    assert stored == pytest.approx([e.metrics["reward_mean"] for e in steps(events)])
    scored = [e for e in events if isinstance(e, GroupsScored)][0]
    group = scored.groups[0]
    mean = sum(group.rewards) / len(group.rewards)
    std = torch.tensor(group.rewards).std().item()
    expected = [(r - mean) / (std + 1e-4) for r in group.rewards]
    assert group.advantages == pytest.approx(expected, abs=1e-5)


def test_the_same_seed_gives_the_same_rollouts(tmp_path):
    sql = "SELECT step, group_id, sample_idx, completion, reward FROM rollouts ORDER BY ALL"
    run(Config(steps=2, seed=5, threads=1, **SMALL), tmp_path / "a")  # one thread whatever the load
    run(Config(steps=2, seed=5, threads=1, **SMALL), tmp_path / "b")
    run(Config(steps=2, seed=6, threads=1, **SMALL), tmp_path / "c")
    a, b, c = (Store(tmp_path / x).query(sql) for x in "abc")
    assert a.equals(b)
    assert not a["completion"].equals(c["completion"])


def test_a_resumed_run_continues_exactly_where_it_stopped(tmp_path):
    config = Config(
        steps=4, seed=1, threads=1, **SMALL
    )  # one thread whatever the load (docs/models.md#threads-the-cores-a-run-gets)
    straight = run(config, tmp_path / "straight")

    stop = threading.Event()
    first = []
    for event in train(config, load_task("arithmetic"), tmp_path / "resumed", stop=stop):
        first.append(event)
        if isinstance(event, StepFinished) and event.step == 2:
            stop.set()
    assert first[-1].status == "stopped" and first[-1].step == 2
    run_id = first[0].run_id
    assert Store(tmp_path / "resumed").run(run_id)["status"] == "stopped"

    second = run(config, tmp_path / "resumed", resume=run_id)
    assert second[0].start_step == 3
    assert [e.step for e in steps(second)] == [3, 4]
    sql = "SELECT step, group_id, sample_idx, completion, reward, advantage FROM rollouts ORDER BY ALL"
    resumed, uninterrupted = Store(tmp_path / "resumed").query(sql), Store(tmp_path / "straight").query(sql)
    assert resumed.equals(uninterrupted)
    losses = [e.metrics["loss"] for e in steps(straight)]
    assert [e.metrics["loss"] for e in steps(first) + steps(second)] == pytest.approx(losses, rel=1e-5)


def test_the_checkpoint_is_a_peft_adapter(tmp_path):
    events = run(Config(steps=1, **SMALL), tmp_path)
    folder = checkpoint_folder(tmp_path, events[-1].run_id)
    config = json.loads((folder / "adapter_config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"])
    model = PeftModel.from_pretrained(base, folder)
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_beta_zero_skips_the_reference(tmp_path, monkeypatch):
    calls = []
    reference_log_probs = Policy.reference_log_probs
    monkeypatch.setattr(Policy, "reference_log_probs", lambda *a, **k: calls.append(1) or reference_log_probs(*a, **k))
    (first,) = steps(run(Config(steps=1, beta=0.0, **SMALL), tmp_path))
    assert first.metrics["kl"] is None and calls == []  # no reference forward at all
    run(Config(steps=1, beta=0.04, **SMALL), tmp_path)
    assert calls  # the same wrapper sees the reference when beta > 0


def test_several_iterations_per_batch_use_the_sampling_policy_as_pi_old(tmp_path):
    (first,) = steps(run(Config(steps=1, num_iterations=3, micro_batch_tokens=16, **SMALL), tmp_path))
    # iteration 1 has ratio 1 exactly; later ones move away from it, so the mean is not 1
    assert first.metrics["ratio_mean"] != 1.0
    assert abs(first.metrics["ratio_mean"] - 1.0) < 0.5


def test_a_missing_model_path_says_so(tmp_path):
    with pytest.raises(ModelLoadError, match="does-not-exist does not exist"):
        load_policy(Config(model=str(tmp_path / "does-not-exist")))


def test_a_folder_that_is_not_a_model_says_so(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_policy(Config(model=str(tmp_path)))


def test_unknown_lora_target_module_names_the_field():
    with pytest.raises(ModelLoadError, match="lora_target_modules"):
        load_policy(Config(lora_target_modules=("c_attn",)))


def test_a_model_by_local_path_and_chat_prompts(tmp_path):
    from workbench.engine.tiny import tiny_model_path

    task = load_task("arithmetic")
    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["answer"]} for r in task.rows[:8]]
    source = (
        "def seen(completions, answer, **kw):\n"
        "    return [float(c[0]['content'].strip() == a) for c, a in zip(completions, answer)]\n"
    )
    chat = Task("chat", task.folder, rows, RewardSource(source, "chat_reward.py"))
    events = run(Config(model=str(tiny_model_path()), steps=1, **SMALL), tmp_path, task=chat)
    (scored,) = [e for e in events if isinstance(e, GroupsScored)]
    assert scored.groups[0].prompt[0]["role"] == "user"
    assert Store(tmp_path).query("SELECT prompt FROM rollouts LIMIT 1")["prompt"].item().startswith("[{")


def test_an_unreachable_hub_model_says_which():
    with pytest.raises(ModelLoadError, match="could not load model 'no-such-org/no-such-model'"):
        load_policy(Config(model="no-such-org/no-such-model"))


def model_copy(tmp_path, **config_changes):
    """The tiny model's folder copied, with changes to its config.json."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_path(), folder)
    config = json.loads((folder / "config.json").read_text()) | config_changes
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_the_models_own_dropout_is_off_so_it_cannot_fake_a_kl(tmp_path):
    """With attention dropout 0.1, the training forward differs from the reference's at step 1."""
    model = model_copy(tmp_path, attention_dropout=0.1)
    (first,) = steps(run(Config(model=model, steps=1, **SMALL), tmp_path / "off"))
    assert first.metrics["kl"] == 0.0
    (kept,) = steps(run(Config(model=model, steps=1, disable_dropout=False, **SMALL), tmp_path / "kept"))
    assert kept.metrics["kl"] > 1e-4


def test_the_update_runs_in_train_mode_only_where_a_dropout_is_kept(tmp_path):
    """Switching modes visits every module; it is done only where it changes the forward."""
    assert not load_policy(Config(**SMALL)).has_dropout
    assert load_policy(Config(lora_dropout=0.1, **SMALL)).has_dropout
    assert load_policy(Config(model=model_copy(tmp_path, attention_dropout=0.1), disable_dropout=False)).has_dropout
    for lora_dropout in (0.0, 0.1):
        policy = load_policy(Config(lora_dropout=lora_dropout, **SMALL))
        with policy.training():
            assert policy.model.training == (lora_dropout > 0)
        assert not policy.model.training


@pytest.mark.slow
def test_a_training_process_never_imports_pandas(tmp_path):
    """pandas and pyarrow cost ~50 MiB of a trainer's memory; only readers of the store need them."""
    script = (
        "import sys\n"
        "from workbench import Config, load_task, train\n"
        "config = Config(steps=2, group_size=4, prompts_per_step=3, max_new_tokens=8)\n"
        f"list(train(config, load_task('arithmetic'), {str(tmp_path)!r}))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'pyarrow')))\n"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert output.strip().splitlines()[-1] == "[]"


def advantages_by_hand(rewards: list[float], group_size: int, estimator: str, scale: str) -> list[float]:
    """A_i = (r_i - b_i) / s, each baseline and scale written out (no unscored rewards here)."""
    advantages = []
    for start in range(0, len(rewards), group_size):
        group = rewards[start : start + group_size]
        for r in group:
            baseline = {
                "grpo": sum(group) / group_size,
                "rloo": (sum(group) - r) / (group_size - 1),  # the mean of the other G - 1
                "reinforce": 0.0,
                "reinforce_batch_mean": sum(rewards) / len(rewards),
            }[estimator]
            spread = {"group": statistics.stdev(group), "batch": statistics.stdev(rewards)}  # Bessel's, as torch
            advantages.append((r - baseline) / (spread[scale] + 1e-4 if scale in spread else 1.0))
    return advantages


@pytest.mark.parametrize(
    "estimator, scale", [("grpo", "group"), ("rloo", "none"), ("reinforce", "batch"), ("reinforce_batch_mean", "none")]
)
def test_each_estimator_trains_and_stores_its_own_advantages(tmp_path, estimator, scale):
    """The stored advantages are the formula's, worked out here from the stored rewards, and the step moved the
    adapter: peft starts every lora_B at 0, and the saved checkpoint's are not."""
    config = Config(steps=1, advantage_estimator=estimator, scale_rewards=scale, **SMALL)
    run_id = run(config, tmp_path)[0].run_id
    stored = Store(tmp_path).query("SELECT reward, advantage FROM rollouts ORDER BY group_id, sample_idx")
    expected = advantages_by_hand(stored.reward.tolist(), SMALL["group_size"], estimator, scale)
    assert stored.advantage.tolist() == pytest.approx(expected, abs=1e-5)
    assert stored.advantage.abs().max() > 0.1  # a learning signal, so the step has something to move

    adapter = load_file(tmp_path / "runs" / run_id / "checkpoint" / "adapter_model.safetensors")
    lora_b = [weight for name, weight in adapter.items() if "lora_B" in name]
    assert len(lora_b) >= 8 and all(weight.abs().max() > 0 for weight in lora_b)


def test_truncated_completions_can_be_left_out_of_the_loss(tmp_path):
    """One new token: every completion is cut before its EOS. Masked, nothing is left to learn from."""
    cut = dict(SMALL, max_new_tokens=1)
    source = (
        "def first_character(completions, **kwargs):\n"
        "    return [float(ord(c[0]) % 3) if c else 0.0 for c in completions]\n"
    )
    task = load_task("arithmetic").with_rewards(RewardSource(source, "varied.py"))
    (masked,) = steps(run(Config(steps=1, mask_truncated_completions=True, **cut), tmp_path / "masked", task))
    assert masked.metrics["truncated_frac"] == 1.0 and masked.metrics["loss"] is None
    (kept,) = steps(run(Config(steps=1, **cut), tmp_path / "kept", task))
    assert kept.metrics["loss"] is not None and kept.metrics["grad_norm"] > 0


def test_the_entropy_is_the_sampling_distributions(tmp_path):
    """steps.entropy is the mean over completion tokens of H(softmax(logits / T)) where each token was
    drawn; recomputed here from one forward pass over prompt and completion."""
    config = Config(precision="fp32", temperature=0.7, **SMALL)
    policy = load_policy(config)
    torch.manual_seed(0)
    rollouts = batches.sample(policy, load_task("arithmetic").batch(1, 3, 0), config)
    ids = torch.cat([rollouts.prompt_ids, rollouts.completion_ids], dim=1)
    mask = torch.cat([rollouts.prompt_mask, rollouts.completion_mask], dim=1)
    with torch.no_grad():
        logits = policy.model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
    width = rollouts.prompt_ids.shape[1]
    predicting = logits[:, width - 1 : -1]  # the positions that predict each completion token
    on = rollouts.completion_mask.bool()
    torch.testing.assert_close(rollouts.entropies[on], grpo.entropy(predicting, 0.7)[on], atol=1e-4, rtol=1e-4)
    assert 0 < rollouts.entropies[on].mean() < math.log(len(policy.tokenizer))
    (step,) = steps(run(Config(steps=1, **SMALL), tmp_path))
    stored = Store(tmp_path).query("SELECT entropy FROM steps").entropy.item()
    assert stored == pytest.approx(step.metrics["entropy"]) and stored > 0


def test_dynamic_sampling_trains_only_on_groups_whose_rewards_differ(tmp_path):
    """Prompts starting with 0-4 get a constant reward (no signal); the others a varied one. Dynamic
    sampling samples more rounds until P groups differ, trains on those and stores the rest, marked."""
    source = (
        "def half_constant(prompts, completions, **kwargs):\n"
        "    return [1.0 if p[0] in '01234' else float(sum(map(ord, c)) % 7) for p, c in zip(prompts, completions)]\n"
    )
    task = load_task("arithmetic").with_rewards(RewardSource(source, "half_constant.py"))
    config = Config(steps=3, dynamic_sampling=True, dynamic_sampling_max_rounds=6, **SMALL)
    events = run(config, tmp_path, task)
    scored = [e for e in events if isinstance(e, GroupsScored)]
    store = Store(tmp_path)
    groups = store.query(
        "SELECT step, group_id, bool_and(dropped) AS dropped, count(DISTINCT reward) AS rewards, "
        "any_value(prompt) AS prompt FROM rollouts GROUP BY step, group_id ORDER BY step, group_id"
    )
    trained = groups[~groups.dropped]
    assert (trained.groupby("step").size() == 3).all()  # P groups with signal each step
    assert (trained.rewards > 1).all() and not trained.prompt.str[0].isin(list("01234")).any()
    assert groups.dropped.any()  # the constant groups were sampled, stored and left out
    rounds = store.query("SELECT step, sampling_rounds FROM steps ORDER BY step")
    assert rounds.sampling_rounds.tolist() == (groups.groupby("step").group_id.max() // 3 + 1).tolist()
    assert [sum(not g.dropped for g in e.groups) for e in scored] == [3, 3, 3]
    assert all(a == 0 for e in scored for g in e.groups if g.dropped for a in g.advantages)
    run_id = store.runs().run_id[0]
    read_back = [g.dropped for step in (1, 2, 3) for g in store.groups(run_id, step)]
    assert read_back == groups.dropped.tolist()  # the group view of a stored step says which were left out


def test_dynamic_sampling_picks_the_first_p_groups_with_signal():
    def one_round(rewards):
        rewards = torch.tensor(rewards)
        return batches.Round([{}] * (len(rewards) // 2), None, None, rewards, 0.0, 0.0)

    def trained(rounds, config):
        batches.mark_trained(rounds, config)
        return [one.trained.tolist() for one in rounds]

    config = Config(group_size=2, prompts_per_step=2, dynamic_sampling=True)
    rounds = [one_round([1.0, 1.0, 0.0, 1.0]), one_round([0.0, 0.0, 1.0, 0.0])]  # signal: (no, yes), (no, yes)
    assert trained(rounds, config) == [[False, True], [False, True]]
    rounds = [one_round([1.0, 0.0, 0.0, 1.0]), one_round([0.0, 1.0, 1.0, 0.0])]  # P found in the first round
    assert trained(rounds[:1], config) == [[True, True]]
    rounds[0].trained = torch.tensor([True, False])
    advantages = estimate_advantages(batches.ScoredBatch(1, rounds[:1], 0.0), Config(group_size=2))
    assert advantages[0].tolist() == pytest.approx([0.7070, -0.7070, 0.0, 0.0], abs=1e-3)  # (1 - 0.5) / (0.7071 + 1e-4)


def constant_reward_task(value):
    source = f"def constant(completions, **kwargs):\n    return [{value!r}] * len(completions)\n"
    task = load_task("arithmetic")
    return task.with_rewards(RewardSource(source, "constant.py"))


def lora_weights(tmp_path, run_id):
    policy = load_policy(Config(**SMALL))
    policy.load_adapter(checkpoint_folder(tmp_path, run_id))
    return {n: p.detach().clone() for n, p in policy.model.named_parameters() if "lora_" in n}


def test_a_step_where_no_completion_is_scored_trains_nothing_and_says_so(tmp_path):
    events = run(Config(steps=2, **SMALL), tmp_path, task=constant_reward_task(None))
    assert isinstance(events[-1], RunFinished) and events[-1].status == "finished"
    for step in steps(events):
        assert step.metrics["unscored_frac"] == 1.0 and step.metrics["loss"] is None
        assert step.metrics["reward_mean"] is None
    initial = {n: p.detach() for n, p in load_policy(Config(**SMALL)).model.named_parameters() if "lora_" in n}
    trained = lora_weights(tmp_path, events[0].run_id)
    assert all(torch.equal(trained[n], p) for n, p in initial.items())
    stored = Store(tmp_path).query("SELECT count(*) AS n, count(reward) AS scored FROM rollouts")
    assert stored.n.item() == 24 and stored.scored.item() == 0


def test_without_signal_the_adapter_does_not_decay(tmp_path):
    """Every reward equal: every advantage is 0 and the KL gradient is 0 at step 1, so with TRL's weight
    decay of 0 the adapter stays exactly as initialised (torch's AdamW default of 0.01 would shrink it)."""
    events = run(Config(steps=1, **SMALL), tmp_path / "none", task=constant_reward_task(1.0))
    initial = {n: p.detach() for n, p in load_policy(Config(**SMALL)).model.named_parameters() if "lora_" in n}
    trained = lora_weights(tmp_path / "none", events[0].run_id)
    assert all(torch.equal(trained[n], p) for n, p in initial.items())
    events = run(Config(steps=1, weight_decay=0.1, **SMALL), tmp_path / "decay", task=constant_reward_task(1.0))
    decayed = lora_weights(tmp_path / "decay", events[0].run_id)
    lora_a = [n for n in initial if "lora_A" in n]
    assert all(torch.allclose(decayed[n], initial[n] * (1 - 5e-4 * 0.1)) for n in lora_a)


def test_resume_refuses_changed_settings_and_stores_a_new_last_step(tmp_path):
    events = run(Config(steps=2, **SMALL), tmp_path)
    run_id = events[0].run_id
    with pytest.raises(ConfigError, match=r"beta=0.04 \(given 0.1\)"):
        run(Config(steps=2, beta=0.1, **SMALL), tmp_path, resume=run_id)
    assert Store(tmp_path).run(run_id)["config"]["beta"] == 0.04

    more = run(Config(steps=3, eval_steps=3, **SMALL), tmp_path, resume=run_id)  # evaluating changes no step
    assert [e.step for e in steps(more)] == [3]
    assert Store(tmp_path).run(run_id)["config"]["steps"] == 3
    assert Store(tmp_path).evals(run_id).step.tolist() == [3]
    with pytest.raises(ConfigError, match=r"eval_split=0.0 \(given 0.1\)"):  # it would change the training prompts
        run(Config(steps=4, eval_split=0.1, **SMALL), tmp_path, resume=run_id)

    linear = run(Config(steps=2, lr_scheduler_type="linear", **SMALL), tmp_path / "linear")
    with pytest.raises(ConfigError, match=r"steps=2 \(given 3\)"):  # the schedule would change under it
        run(Config(steps=3, lr_scheduler_type="linear", **SMALL), tmp_path / "linear", resume=linear[0].run_id)


def test_the_cli_refuses_a_resume_with_changed_settings(tmp_path, capsys):
    from workbench.cli import main

    run_id = run(Config(steps=1, **SMALL), tmp_path)[0].run_id
    assert main(["train", "--workspace", str(tmp_path), "--resume", run_id, "--beta", "0.1"]) == 2
    assert "beta=0.04 (given 0.1)" in capsys.readouterr().err


def test_micro_batches_are_whole_groups_within_the_token_budget():
    from workbench.engine.rollout import Rollouts, micro_batches

    # three groups of 2, prompts padded to 5 tokens; longest completions 4, 1, 6 tokens
    prompt_lengths, completion_lengths = [3, 3, 5, 4, 2, 2], [4, 2, 1, 1, 6, 3]
    prompt_mask = torch.tensor([[0] * (5 - n) + [1] * n for n in prompt_lengths])
    completion_mask = torch.tensor([[1] * n + [0] * (6 - n) for n in completion_lengths])
    rollouts = Rollouts(prompt_mask, prompt_mask, completion_mask, completion_mask, None, [""] * 6, None, None)
    # tokens of a pass, groups x prompt width + their completions' tokens:
    # group 0 5 + 4 + 2 = 11; group 1 5 + 1 + 1 = 7; group 2 5 + 6 + 3 = 14; all three 32
    assert micro_batches(rollouts, 2, 32) == [slice(0, 6)]
    assert micro_batches(rollouts, 2, 31) == [slice(0, 4), slice(4, 6)]
    assert micro_batches(rollouts, 2, 18) == [slice(0, 4), slice(4, 6)]
    assert micro_batches(rollouts, 2, 17) == [slice(0, 2), slice(2, 4), slice(4, 6)]
    assert micro_batches(rollouts, 2, 1) == [slice(0, 2), slice(2, 4), slice(4, 6)]  # a group always fits alone


def test_length_buckets_pad_fewest_tokens_counting_each_pass():
    from workbench.engine.policy import length_buckets

    # rows 1 and 3 are 32 tokens long, the rest 5: one pass pads to 6 x 32 = 192 tokens; two passes
    # 2 x 32 + 4 x 5 = 84, plus a pass of 16 = 100; a pass costing 200, one pass is cheaper
    assert length_buckets([5, 32, 5, 32, 5, 5], 16) == [[1, 3], [0, 2, 4, 5]]
    assert length_buckets([5, 32, 5, 32, 5, 5], 200) == [[1, 3, 0, 2, 4, 5]]
    # lengths 9, 8, 2: one pass 27; {9, 8} {2} 18 + 2 + 4 = 24; {9} {8, 2} 9 + 16 + 4 = 29; each alone 19 + 8 = 27
    assert length_buckets([2, 8, 9], 4) == [[2, 1], [0]]
    assert length_buckets([3, 3, 3], 0) == [[0, 1, 2]]  # rows of one length are never split


def test_micro_batching_gives_the_full_batch_gradient(tmp_path):
    """The loss is normalised by the whole batch, so one pass or many give the same update."""
    one = steps(run(Config(steps=2, seed=3, precision="fp32", **SMALL), tmp_path / "one"))
    many = steps(run(Config(steps=2, seed=3, precision="fp32", micro_batch_tokens=1, **SMALL), tmp_path / "many"))
    assert [s.metrics["loss"] for s in many] == pytest.approx([s.metrics["loss"] for s in one], rel=1e-4, abs=1e-7)
    assert many[1].metrics["kl"] == pytest.approx(one[1].metrics["kl"], rel=1e-3)


def test_a_run_is_trained_by_one_process_at_a_time(tmp_path):
    """A second resume of a run another process trains is refused, naming that process; after it, it goes on."""
    config = Config(steps=2, checkpoint_every=1, **{k: v for k, v in SMALL.items() if k != "checkpoint_every"})
    stop = threading.Event()
    events = train(config, load_task("arithmetic"), tmp_path, stop=stop)
    run_id = next(e for e in events if isinstance(e, StepFinished)).run_id  # step 1 stored, the run still open
    resume = Config.from_dict({**config.to_dict(), "steps": 3})
    with pytest.raises(RuntimeError, match=rf"run {run_id} is being trained by process {os.getpid()} on "):
        list(train(resume, load_task("arithmetic"), tmp_path, resume=run_id))
    stop.set()
    assert isinstance(list(events)[-1], RunFinished)  # the first process ends its run, and lets go of it
    assert isinstance(list(train(resume, load_task("arithmetic"), tmp_path, resume=run_id))[-1], RunFinished)
