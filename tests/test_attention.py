"""The grouped eager attention gives transformers' eager attention's numbers without copying K and V per head."""

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.models.llama.modeling_llama import eager_attention_forward

from workbench.config import Config
from workbench.engine.attention import ATTENTION, attention_for, grouped_eager_attention
from workbench.engine.policy import load_policy
from workbench.engine.tiny import tiny_model_path


class Module(torch.nn.Module):
    num_key_value_groups = 3


@pytest.mark.parametrize("q", [1, 7])  # a decode step, a training pass
def test_each_query_head_reads_its_own_key_value_head_as_repeat_kv_does(q):
    torch.manual_seed(0)
    b, heads, kv, length, d = 4, 9, 3, 12, 16
    query, key, value = torch.randn(b, heads, q, d), torch.randn(b, kv, length, d), torch.randn(b, kv, length, d)
    mask = torch.zeros(b, 1, q, length)
    mask[0, :, :, :5] = torch.finfo(torch.float32).min  # a left-padded row
    module = Module().eval()
    grouped, grouped_weights = grouped_eager_attention(module, query, key, value, mask, 0.25)
    expected, expected_weights = eager_attention_forward(module, query, key, value, mask, 0.25)
    torch.testing.assert_close(grouped, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grouped_weights, expected_weights, atol=1e-6, rtol=1e-6)
    assert grouped_weights[0, :, :, :5].max() == 0  # the padding gets no weight
    # the other way round, query head 0 reading key/value head 1, is far off: the grouping is the one repeat_kv makes
    wrong, _ = grouped_eager_attention(module, query, key[:, [1, 0, 2]], value[:, [1, 0, 2]], mask, 0.25)
    assert (wrong - expected).abs().max() > 0.1


def test_models_whose_eager_attention_is_the_plain_one_get_it_others_keep_theirs():
    kinds = [attention_for(model_type) for model_type in ("llama", "qwen2", "gemma2", "gpt_oss")]
    assert kinds == [ATTENTION, ATTENTION, "eager", "eager"]
    policy = load_policy(Config(precision="fp32"))
    assert policy.model.get_base_model().config._attn_implementation == ATTENTION
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_path(), dtype=torch.float32, attn_implementation="eager")
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad(), policy.adapter_off():
        grouped = policy.model(input_ids=ids).logits
    torch.testing.assert_close(grouped, plain(input_ids=ids).logits, atol=1e-5, rtol=0)
