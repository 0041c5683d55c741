"""Eager attention for grouped-query models without copying the keys and values for each query head.

transformers' eager attention repeats each key/value head once per query head that shares it (`repeat_kv`), a copy
of the whole KV cache in every layer at every decode step. Here the query heads that share a key/value head are
stacked as rows of one matmul against it instead: the same products, no copy. SmolLM2 (9 query heads on 3 key/value
heads, 30 layers) sampling 64 completions spent 6-7% of its CPU time in those copies; with this, 0.4%, and its
sampling is 1.12x faster side by side (docs/models.md#attention-without-copies-of-k-and-v).

Registered under the name `ATTENTION` for the model types whose own eager attention is exactly the plain one
(`PLAIN_EAGER`); other models keep their own (soft caps, sinks, sliding windows).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

ATTENTION = "eager_grouped"
PLAIN_EAGER = {"llama", "mistral", "qwen2", "qwen3"}  # eager_attention_forward as llama's: scores, mask, softmax


def grouped_eager_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[Tensor, Tensor]:
    """softmax(q k^T x scaling + mask) v, query head h reading key/value head h // (H / KV) as `repeat_kv` does.

    query (b, H, q, d); key, value (b, KV, L, d); attention_mask (b, 1, q, L) additive.
    -> the output (b, q, H, d) and the attention weights (b, H, q, L)."""
    b, heads, q, d = query.shape
    groups = key.shape[1]
    rows = heads // groups * q  # the rows of the query heads that read one key/value head
    stacked = query.reshape(b, groups, rows, d)  # (b, KV, H / KV x q, d)
    scores = torch.matmul(stacked, key.transpose(2, 3)).view(b, heads, q, -1) * scaling  # (b, H, q, L)
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights.view(b, groups, rows, -1), value).view(b, heads, q, d)
    return output.transpose(1, 2).contiguous(), weights


def attention_for(model_type: str) -> str:
    """The eager attention a model of this type runs on a CPU: the grouped one where its own is the plain one."""
    return ATTENTION if model_type in PLAIN_EAGER else "eager"


AttentionInterface.register(ATTENTION, grouped_eager_attention)
AttentionMaskInterface.register(ATTENTION, eager_mask)
