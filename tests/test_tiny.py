"""The built-in model's tokenizer survives a save and a load through AutoTokenizer."""

import pytest
import torch
from transformers import AutoTokenizer

from workbench.engine.tiny import MODEL_SHAPE, build_tokenizer, qwen2_config, tiny_model_path


def test_tokenizer_round_trip_keeps_spaces_and_newlines(tmp_path):
    """Saved beside a qwen2 config, as in a model folder: AutoTokenizer then picks the class by model type."""
    built = build_tokenizer()
    built.save_pretrained(tmp_path)
    qwen2_config(built, **MODEL_SHAPE).save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    text = "# return x doubled\ndef f(x): return x*2 \t~"
    ids = tokenizer.encode(text)
    assert len(ids) == len(text)  # one token per character
    assert ids == built.encode(text)  # the ids the warm start trained on
    assert tokenizer.decode(ids) == text


def test_chat_messages_render_as_their_contents():
    tokenizer = build_tokenizer()
    messages = [{"role": "system", "content": "Add. "}, {"role": "user", "content": "2+2="}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == "Add. 2+2="


def test_the_cached_model_answers_with_eos():
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
    assert tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


@pytest.mark.slow
def test_the_build_is_deterministic_for_a_seed(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from workbench.engine import tiny

    monkeypatch.setitem(tiny.WARM_START, "steps", 3)
    tiny.build_tiny_model(tmp_path / "a", seed=1)
    tiny.build_tiny_model(tmp_path / "b", seed=1)
    tiny.build_tiny_model(tmp_path / "c", seed=2)
    a, b, c = (load_file(tmp_path / x / "model.safetensors") for x in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
