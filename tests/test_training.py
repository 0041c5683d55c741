"""The GRPO loop run for real on the built-in tiny model (built once, then cached)."""

import json
import threading

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from workbench import Config, Store, load_task, train
from workbench.checkpoint import checkpoint_folder
from workbench.events import GroupsScored, RunFinished, RunStarted, StepFinished
from workbench.policy import ModelLoadError, load_policy
from workbench.scoring import RewardSource
from workbench.tasks import Task

SMALL = dict(group_size=4, prompts_per_step=3, max_new_tokens=8, checkpoint_every=100)


def run(config, workspace, task=None, **kwargs):
    return list(train(config, task or load_task("arithmetic"), workspace, **kwargs))


def steps(events):
    return [e for e in events if isinstance(e, StepFinished)]


def test_two_steps_move_the_adapter_and_not_the_base(tmp_path):
    config = Config(steps=2, **SMALL)
    policy = load_policy(config)
    lora_before = {n: p.clone() for n, p in policy.model.named_parameters() if "lora_B" in n}
    base_before = {n: p.clone() for n, p in policy.model.named_parameters() if "lora_" not in n}
    events = run(config, tmp_path)
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
    first, second = (e.metrics for e in steps(events))
    assert first["kl"] == 0.0  # adapter B starts at zero: pi_theta == pi_ref exactly
    assert first["ratio_mean"] == 1.0 and first["clip_frac"] == 0.0
    assert second["kl"] > 0

    trained = load_policy(config)
    trained.load_adapter(checkpoint_folder(tmp_path, events[-1].run_id))
    named = dict(trained.model.named_parameters())
    assert all(not torch.equal(named[n], p) for n, p in lora_before.items())
    assert all(torch.equal(named[n], p) for n, p in base_before.items())


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
    run(Config(steps=2, seed=5, **SMALL), tmp_path / "a")
    run(Config(steps=2, seed=5, **SMALL), tmp_path / "b")
    run(Config(steps=2, seed=6, **SMALL), tmp_path / "c")
    a, b, c = (Store(tmp_path / x).query(sql) for x in "abc")
    assert a.equals(b)
    assert not a["completion"].equals(c["completion"])


def test_a_resumed_run_continues_exactly_where_it_stopped(tmp_path):
    config = Config(steps=4, seed=1, **SMALL)
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


def test_beta_zero_skips_the_reference(tmp_path):
    (first,) = steps(run(Config(steps=1, beta=0.0, **SMALL), tmp_path))
    assert first.metrics["kl"] is None


def test_several_iterations_per_batch_use_the_sampling_policy_as_pi_old(tmp_path):
    (first,) = steps(run(Config(steps=1, num_iterations=3, micro_batch_size=5, **SMALL), tmp_path))
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
    from workbench.tiny import tiny_model_path

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
