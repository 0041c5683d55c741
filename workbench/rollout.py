"""Sampling: one batched generate call per step for all P x G completions, with the KV cache."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from workbench.policy import Policy


@dataclass
class Rollouts:
    """A step's P x G completions, ordered group by group (rows g*G .. g*G+G-1 share a prompt)."""

    prompt_ids: Tensor  # (B, Lp) left-padded
    prompt_mask: Tensor  # (B, Lp)
    completion_ids: Tensor  # (B, T) right-padded after EOS
    completion_mask: Tensor  # (B, T) 1 up to and including the first EOS
    truncated: Tensor  # (B,) bool: hit max_new_tokens without EOS
    completions: list[str]  # decoded, without special tokens

    @property
    def num_tokens(self) -> Tensor:
        return self.completion_mask.sum(dim=1)  # (B,)

    def select(self, rows: slice) -> Rollouts:
        """A micro-batch, trimmed to its own longest completion and prompt."""
        completion_mask = self.completion_mask[rows]
        prompt_mask = self.prompt_mask[rows]
        t = int(completion_mask.sum(dim=1).max())
        p = int(prompt_mask.sum(dim=1).max())
        return Rollouts(
            self.prompt_ids[rows, -p:],
            prompt_mask[:, -p:],
            self.completion_ids[rows, :t],
            completion_mask[:, :t],
            self.truncated[rows],
            self.completions[rows],
        )

    def model_inputs(self) -> tuple[Tensor, Tensor, Tensor]:
        """(input_ids, attention_mask, completion_ids) for `Policy.log_probs`."""
        input_ids = torch.cat([self.prompt_ids, self.completion_ids], dim=1)  # (B, Lp + T)
        attention_mask = torch.cat([self.prompt_mask, self.completion_mask], dim=1)
        return input_ids, attention_mask, self.completion_ids


@torch.no_grad()
def sample_groups(
    policy: Policy,
    prompt_ids: list[list[int]],
    group_size: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
) -> Rollouts:
    """Sample G completions for each of P prompts in one generate call; stop at EOS."""
    tokenizer = policy.tokenizer
    repeated = [ids for ids in prompt_ids for _ in range(group_size)]  # (B,) group by group
    batch = tokenizer.pad({"input_ids": repeated}, padding=True, return_tensors="pt")
    batch = {k: v.to(policy.device) for k, v in batch.items()}
    policy.model.eval()
    with policy.autocast():
        output = policy.model.generate(
            **batch,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=0,  # off: sample from the whole distribution (transformers 5)
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    completion_ids = output[:, batch["input_ids"].shape[1] :]  # (B, T)
    completion_mask, truncated = _completion_mask(completion_ids, tokenizer.eos_token_id)
    completion_ids = completion_ids.masked_fill(completion_mask == 0, tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(
        completion_ids.masked_fill(completion_mask == 0, tokenizer.eos_token_id),
        skip_special_tokens=True,
    )
    return Rollouts(
        batch["input_ids"], batch["attention_mask"], completion_ids, completion_mask, truncated, texts
    )


def _completion_mask(completion_ids: Tensor, eos_token_id: int) -> tuple[Tensor, Tensor]:
    """1 on tokens up to and including the first EOS; truncated where there is no EOS.  (B, T)"""
    is_eos = completion_ids == eos_token_id  # (B, T)
    has_eos = is_eos.any(dim=1)  # (B,)
    length = completion_ids.shape[1]
    first_eos = torch.where(has_eos, is_eos.int().argmax(dim=1), length)  # (B,)
    positions = torch.arange(length, device=completion_ids.device)  # (T,)
    completion_mask = (positions.unsqueeze(0) <= first_eos.unsqueeze(1)).long()  # (B, T)
    return completion_mask, ~has_eos
