"""Sampling: one batched decode per step for all P x G completions, with the KV cache."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from workbench.engine.grpo import at_temperature, entropy, token_log_probs
from workbench.engine.policy import Policy, positions

LEAVE_AT = 1 / 8  # finished rows leave the decode's batch once they are this share of it


@dataclass
class Rollouts:
    """A step's P x G completions, ordered group by group (rows g*G .. g*G+G-1 share a prompt)."""

    prompt_ids: Tensor  # (B, Lp) left-padded
    prompt_mask: Tensor  # (B, Lp)
    completion_ids: Tensor  # (B, T) right-padded after EOS
    completion_mask: Tensor  # (B, T) 1 up to and including the first EOS
    truncated: Tensor  # (B,) bool: hit max_new_tokens without EOS
    completions: list[str]  # decoded, without special tokens
    sampling_log_probs: Tensor  # (B, T) log p of each sampled token under the sampler, 0 after the EOS
    entropies: Tensor  # (B, T) entropy of the sampler's distribution at each token (TRL's `entropy`), 0 after the EOS

    @property
    def num_tokens(self) -> Tensor:
        return self.completion_mask.sum(dim=1)  # (B,)

    @functools.cached_property
    def completion_id_lists(self) -> list[list[int]]:
        """Each completion's token ids up to and including its EOS, as TRL gives reward functions (scoring and
        the store both use them: computed once)."""
        return [ids[mask.bool()].tolist() for ids, mask in zip(self.completion_ids, self.completion_mask)]

    def select(self, rows: slice | Tensor) -> Rollouts:
        """Some of the rows (a slice or indices), trimmed to their own longest completion.

        The prompts keep the whole batch's left padding, as the decode saw them: trimming it shifts
        the keys against the attention kernels' blocks, and in bf16 the sums then round differently
        (SmolLM2: |log p_sampler - log p_train| up to 0.35 with the padding trimmed, 0 kept).
        """
        completion_mask = self.completion_mask[rows]
        t = int(completion_mask.sum(dim=1).max())
        return Rollouts(
            self.prompt_ids[rows],
            self.prompt_mask[rows],
            self.completion_ids[rows, :t],
            completion_mask[:, :t],
            self.truncated[rows],
            self.completions[rows] if isinstance(rows, slice) else [self.completions[i] for i in rows.tolist()],
            self.sampling_log_probs[rows, :t],
            self.entropies[rows, :t],
        )

    def model_inputs(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(prompt_ids, prompt_mask, completion_ids, completion_mask) for `Policy.log_probs`."""
        return self.prompt_ids, self.prompt_mask, self.completion_ids, self.completion_mask


@torch.no_grad()
def sample_groups(
    policy: Policy,
    prompt_ids: list[list[int]],
    group_size: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seeds: list[int] | None = None,
    prompt_width: int | None = None,
) -> Rollouts:
    """Sample G completions for each of P prompts in one batched decode; stop at EOS.

    `seeds`, one per prompt, make each group's completions depend on its seed alone (`group_uniforms`);
    without them the draws come from torch's global RNG. `prompt_width` left-pads the prompts to that
    width rather than to the longest: a process of a data-parallel run pads its share as one process
    pads the whole batch, since the padding width changes how the sums round (SmolLM2 in fp32: 2 of 64
    completions drew another token somewhere with 4 of 8 prompts padded to 45 rather than 46; 0 at 46).

    Each prompt is prefilled once and its KV cache repeated G times (the group shares it).
    The decode runs on `Policy.sampling_weights`: the adapter folded into the weights where that
    is exact (one matmul per layer instead of three), else the very forward the update
    differentiates. Together these made sampling ~25% faster than `model.generate` on the 25M
    bench model (bench/step_time.py). The sampler's own log-prob of each token is kept, so the
    update can measure how far the policy it trains is from the one that sampled.
    """
    tokenizer = policy.tokenizer
    padding = dict(padding="max_length", max_length=prompt_width) if prompt_width else dict(padding=True)
    prompts = tokenizer.pad({"input_ids": prompt_ids}, return_tensors="pt", **padding)
    prompts = {k: v.to(policy.device) for k, v in prompts.items()}
    uniforms = group_uniforms(len(prompt_ids), group_size, max_new_tokens, seeds).to(policy.device)
    with policy.sampling_weights(), policy.autocast():
        completion_ids, sampling_log_probs, entropies = _decode(
            policy,
            prompts["input_ids"],
            prompts["attention_mask"],
            group_size,
            uniforms,
            temperature,
            top_p,
        )  # (B, T) each
    completion_mask, truncated = _completion_mask(completion_ids, policy.eos_token_ids)
    completion_ids = completion_ids.masked_fill(completion_mask == 0, tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(
        [ids[mask.bool()] for ids, mask in zip(completion_ids, completion_mask)], skip_special_tokens=True
    )
    return Rollouts(
        prompts["input_ids"].repeat_interleave(group_size, dim=0),
        prompts["attention_mask"].repeat_interleave(group_size, dim=0),
        completion_ids,
        completion_mask,
        truncated,
        texts,
        sampling_log_probs * completion_mask,
        entropies * completion_mask,
    )


def _decode(
    policy: Policy,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    group_size: int,
    uniforms: Tensor,
    temperature: float,
    top_p: float,
) -> tuple[Tensor, Tensor]:
    """Prefill the P prompts, repeat the cache G times, sample token by token, the t-th by uniforms[:, t].

    Rows that reached EOS leave the batch (their cache rows too) once they are `LEAVE_AT` of it: the later
    tokens of a step whose completions differ in length cost only the rows still writing. A smaller batch
    rounds a row's sums otherwise only in float's last bits (a log-prob moves by ~1e-6), as any batch size does.

    -> token ids (B, T), each token's log-prob under the sampler at `temperature` (B, T), and the
    entropy of the distribution it was drawn from (B, T); after a row's EOS, EOS and values the caller masks."""
    model = policy.model
    eos_ids = torch.tensor(policy.eos_token_ids, device=prompt_ids.device)
    prefill = model(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=positions(prompt_mask),
        use_cache=True,
        logits_to_keep=1,
    )
    cache = prefill.cache
    cache.batch_repeat_interleave(group_size)
    logits = prefill.logits[:, -1].repeat_interleave(group_size, dim=0)  # (b, V), b rows still writing
    attention_mask = prompt_mask.repeat_interleave(group_size, dim=0)  # (b, Lp + t)
    position = attention_mask.sum(dim=1, keepdim=True)  # (b, 1)
    batch, max_new_tokens = uniforms.shape
    rows = torch.arange(batch, device=logits.device)  # (b,) each writing row's place in the batch
    finished = torch.zeros(batch, dtype=torch.bool, device=logits.device)  # (b,)
    tokens = torch.full((batch, max_new_tokens), policy.eos_token_ids[0], device=logits.device)
    log_probs = torch.zeros(batch, max_new_tokens, device=logits.device)
    entropies = torch.zeros(batch, max_new_tokens, device=logits.device)
    for t in range(max_new_tokens):
        token = sample_token(logits, temperature, top_p, uniforms[rows, t])  # (b,)
        token = token.masked_fill(finished, policy.eos_token_ids[0])
        tokens[rows, t] = token
        log_probs[rows, t] = token_log_probs(logits, token, temperature)
        entropies[rows, t] = entropy(logits, temperature)
        finished |= torch.isin(token, eos_ids)
        if finished.all() or t == max_new_tokens - 1:
            break
        if finished.sum() >= LEAVE_AT * len(finished):
            writing = (~finished).nonzero().squeeze(1)
            cache.batch_select_indices(writing)
            rows, token, finished = rows[writing], token[writing], finished[writing]
            attention_mask, position = attention_mask[writing], position[writing]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(token), 1)], dim=1)
        logits = model(
            input_ids=token.unsqueeze(1),
            attention_mask=attention_mask,
            position_ids=position,
            cache=cache,
            use_cache=True,
        ).logits[:, -1]  # (b, V)
        position = position + 1
    return tokens[:, : t + 1], log_probs[:, : t + 1], entropies[:, : t + 1]


def group_uniforms(num_prompts: int, group_size: int, max_new_tokens: int, seeds: list[int] | None) -> Tensor:
    """The U[0, 1) draws that pick the completions' tokens.  -> (B, max_new_tokens), on the CPU

    With `seeds` (one per prompt) each group's draws come from its own generator, so a group's
    completions depend on its seed and its prompt only, not on which groups are decoded beside it: the
    same on one process or split over several (workbench.engine.distributed), on a CPU or a GPU."""
    if seeds is None:
        return torch.rand(num_prompts * group_size, max_new_tokens)
    assert len(seeds) == num_prompts
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    return torch.cat([torch.rand(group_size, max_new_tokens, generator=g) for g in generators])


def sample_token(logits: Tensor, temperature: float, top_p: float, uniform: Tensor) -> Tensor:
    """One token per row from softmax(logits / T), restricted to the top-p nucleus, by inverting the
    CDF at a U[0, 1) draw per row: the first token whose cumulative probability reaches (1 - u) x the
    total (never a token of probability 0, since 1 - u > 0).  (B, V), (B,) -> (B,)"""
    probs = torch.softmax(at_temperature(logits, temperature), dim=-1)  # (B, V)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p  # the top token always stays
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    cdf = probs.cumsum(dim=-1)  # (B, V)
    target = (1 - uniform.float()).unsqueeze(1) * cdf[:, -1:]  # (B, 1) in (0, total]
    return torch.searchsorted(cdf, target).squeeze(1)


def _completion_mask(completion_ids: Tensor, eos_token_ids: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """1 on tokens up to and including the first EOS (any of the ids); truncated where there is none.  (B, T)"""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_token_ids, device=completion_ids.device))  # (B, T)
    has_eos = is_eos.any(dim=1)  # (B,)
    length = completion_ids.shape[1]
    first_eos = torch.where(has_eos, is_eos.int().argmax(dim=1), length)  # (B,)
    positions = torch.arange(length, device=completion_ids.device)  # (T,)
    completion_mask = (positions.unsqueeze(0) <= first_eos.unsqueeze(1)).long()  # (B, T)
    return completion_mask, ~has_eos


def micro_batches(rollouts: Rollouts, group_size: int, max_tokens: int) -> list[slice]:
    """Consecutive runs of whole groups whose tokens in a forward pass stay within max_tokens; a group
    larger than that goes alone.

    A pass computes each group's (padded) prompt once and each completion after it, in buckets of similar
    length (`Policy.completion_hidden`), so a run of g groups costs g x prompt width + its completions' tokens
    (and the buckets' little padding). A token budget, not a count of completions: completion lengths vary by
    task and model.
    """
    prompt_width = rollouts.prompt_ids.shape[1]
    group_tokens = (prompt_width + rollouts.num_tokens.view(-1, group_size).sum(dim=1)).tolist()  # (P,)
    slices, first, tokens = [], 0, 0
    for g, group in enumerate(group_tokens):
        if g > first and tokens + group > max_tokens:
            slices.append(slice(first * group_size, g * group_size))
            first, tokens = g, 0
        tokens += group
    slices.append(slice(first * group_size, len(group_tokens) * group_size))
    return slices


def micro_batch_parts(
    rollouts: Rollouts, tensors: tuple[Tensor, ...], group_size: int, max_tokens: int
) -> list[tuple[Rollouts, ...]]:
    """The `micro_batches` of the rollouts, each with the same rows of per-completion tensors: (B,), or
    (B, T) cut to the part's own longest completion as `Rollouts.select` cuts it.  -> (part, *tensors) each"""
    parts = []
    for rows in micro_batches(rollouts, group_size, max_tokens):
        part = rollouts.select(rows)
        width = part.completion_ids.shape[1]
        parts.append((part, *(t[rows] if t.dim() == 1 else t[rows, :width] for t in tensors)))
    return parts
