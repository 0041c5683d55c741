"""Reward models as reward functions: scored as TRL 1.16 scores one, stored under their names, exported to TRL.

The reward model is a 2-layer Qwen2ForSequenceClassification with random weights and one label, built here with
the tiny model's tokenizer and saved to a folder: as TRL loads any AutoModelForSequenceClassification.
"""

import argparse
import shutil

import pytest
import torch
import yaml
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForSequenceClassification

from workbench import Config, Store, load_task, train
from workbench.cli.flags import add_config_flags, config_from_args
from workbench.engine.tiny import tiny_model_path
from workbench.integrations.export import export_trl
from workbench.rewards.models import (
    RewardModel,
    declared,
    reward_model_name,
    source_reward_models,
    with_reward_models,
)
from workbench.rewards.scoring import RewardError, RewardSource, Scorer

SMALL = dict(group_size=2, prompts_per_step=2, max_new_tokens=8, checkpoint_every=100)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A random 2-layer sequence classifier with one label, and the tiny model's tokenizer: a reward model folder."""
    folder = tmp_path_factory.mktemp("models") / "tiny-rm"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    Qwen2ForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def by_hand(folder, texts: list[str]) -> list[float]:
    """TRL's reward for each text alone (no padding): the one-label head on the last token's hidden state."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = Qwen2ForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
    values = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer(text, add_special_tokens=False).input_ids])
            hidden = model.model(input_ids=ids).last_hidden_state[0, -1]  # (H,)
            values.append(model.score(hidden)[0].item())  # logits[:, 0]
    return values


def test_a_reward_model_scores_prompt_plus_completion_as_trl_does(classifier):
    """TRL: prompt + completion, one right-padded batch, no special tokens, logits[:, 0]."""
    model = RewardModel(str(classifier), torch.device("cpu"))
    prompts = ["What is 2+3? ", "Say hi: ", "A much longer prompt than the others, to pad the rest: "]
    completions = ["5", "hello there, how are you?", "ok"]
    assert model.texts(prompts, completions) == [p + c for p, c in zip(prompts, completions)]
    expected = by_hand(classifier, [p + c for p, c in zip(prompts, completions)])
    assert model(prompts, completions) == pytest.approx(expected, abs=1e-5)
    assert len(set(expected)) == 3  # the head tells the texts apart


def test_chat_prompts_go_through_the_reward_models_chat_template(classifier):
    model = RewardModel(str(classifier), torch.device("cpu"))
    prompts = [[{"role": "user", "content": "Say hi."}], [{"role": "user", "content": "What is 1+1?"}]]
    completions = ["hi!", "2"]
    texts = [
        model.tokenizer.apply_chat_template(p + [{"role": "assistant", "content": c}], tokenize=False)
        for p, c in zip(prompts, completions)
    ]
    assert model.texts(prompts, completions) == texts == ["Say hi.hi!", "What is 1+1?2"]  # the tiny template
    assert model(prompts, completions) == pytest.approx(by_hand(classifier, texts), abs=1e-5)


def test_a_run_stores_the_reward_models_values_under_its_name_with_its_weight_and_exports_it(classifier, tmp_path):
    name = reward_model_name(str(classifier))
    config = Config(steps=1, reward_models=(str(classifier),), reward_weights={name: 0.5}, **SMALL)
    events = list(train(config, load_task("arithmetic"), tmp_path))
    assert type(events[-1]).__name__ == "RunFinished", events[-1]
    store = Store(tmp_path)
    values = store.query(
        """SELECT r.reward, c.value AS correct, m.value AS model, r.prompt, r.completion
           FROM rollouts r JOIN reward_values c USING (run_id, step, group_id, sample_idx)
           JOIN reward_values m USING (run_id, step, group_id, sample_idx)
           WHERE c.name = 'correct' AND m.name = $1""",
        [name],
    )
    assert len(values) == 4 and name == "tiny-rm"
    assert values.reward.tolist() == pytest.approx((values.correct + 0.5 * values.model).tolist())
    assert values.model.tolist() == pytest.approx(by_hand(classifier, (values.prompt + values.completion).tolist()))
    run_id = events[-1].run_id
    exported = export_trl(tmp_path, run_id, tmp_path / "trl")
    grpo = yaml.safe_load((tmp_path / "trl" / "grpo.yaml").read_text())
    assert grpo["reward_funcs"][-1] == str(classifier.resolve()) and grpo["reward_weights"][-1] == 0.5
    assert any("tiny-rm is a folder of this machine" in warning for warning in exported.warnings)


def test_a_reward_source_declares_reward_models_read_without_running_it(classifier):
    function = "def short(completions, **kwargs):\n    return [1.0] * len(completions)\n"
    text = f"REWARD_MODELS = [{str(classifier)!r}]\n\n{function}"
    with Scorer(RewardSource(text), [], Config(reward_models=("org/other-rm",))) as scorer:
        assert scorer.names == ["short", "tiny-rm", "other-rm"]
        assert scorer.models.declared.reward_models == (str(classifier), "org/other-rm")
    assert declared("JUDGE_RUBRIC = 'Is it kind?'\n").judge_rubric == "Is it kind?"
    with pytest.raises(RewardError, match=r"reward.py, line 2: REWARD_MODELS must be written out as a literal"):
        declared("import os\nREWARD_MODELS = [os.environ['RM']]\n")
    with pytest.raises(RewardError, match="REWARD_MODELS must be a list of hub ids or folders"):
        declared("REWARD_MODELS = 'org/rm'\n")
    clash = f"REWARD_MODELS = ['org/short']\n\n{function}"
    with pytest.raises(RewardError, match="stored under short, a name another reward function has"):
        Scorer(RewardSource(clash), [])


def test_a_missing_reward_model_folder_is_named():
    with pytest.raises(RewardError, match="reward model folder ./no/such-rm does not exist"):
        RewardModel("./no/such-rm", torch.device("cpu"))


def test_the_apps_field_reads_and_writes_the_sources_reward_models():
    text = '"""Doc."""\nimport re\n\n\ndef f(completions, **kwargs):\n    return [0.0] * len(completions)\n'
    written = with_reward_models(text, ["org/rm", "./local-rm"])
    assert source_reward_models(written) == ["org/rm", "./local-rm"]
    assert written.index("REWARD_MODELS") < written.index("def f")
    rewritten = with_reward_models(written, ["org/other"])
    assert source_reward_models(rewritten) == ["org/other"] and rewritten.count("REWARD_MODELS") == 1
    assert with_reward_models(rewritten, []).replace("\n\n", "\n") == text.replace("\n\n", "\n")
    assert source_reward_models("def broken(:\n") == []


def test_reward_model_is_a_repeatable_cli_flag():
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    args = parser.parse_args(["--reward-model", "org/a", "--reward-model", "./b", "--reward-models", "c"])
    assert config_from_args(args).reward_models == ("org/a", "./b", "c")
    stored = Config.from_dict(config_from_args(args).to_dict())  # stored as a JSON list, read back as a tuple
    assert stored.reward_models == ("org/a", "./b", "c")


def test_a_task_folder_declares_its_reward_models_in_its_reward_file(classifier, tmp_path):
    task = tmp_path / "rated"
    shutil.copytree(load_task("arithmetic").folder, task)
    reward = task / "reward.py"
    reward.write_text(with_reward_models(reward.read_text(), [str(classifier)]))
    loaded = load_task(task)
    with Scorer(loaded.rewards, loaded.columns, Config(), loaded.folder) as scorer:
        scores = scorer.score(loaded.rows[:1], ["4"])
    assert scores.values["tiny-rm"] == pytest.approx(by_hand(classifier, [loaded.rows[0]["prompt"] + "4"]), abs=1e-5)
