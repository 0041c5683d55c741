"""The policy: any Hugging Face causal LM with a peft LoRA adapter; the reference is the adapter off.

Only the adapter trains. pi_ref is the same weights with the adapter disabled, so the KL penalty
needs no second copy of the model (as TRL does with peft).
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file
from torch import Tensor
from torch.utils.checkpoint import checkpoint
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from workbench.config import Config
from workbench.engine.attention import attention_for
from workbench.engine.grpo import token_log_probs
from workbench.engine.hardware import autocast, resolve_device, uses_bf16
from workbench.engine.hub import ModelLoadError, resolve_model

# Logits held at once by the log-prob pass: tokens x vocabulary x 4 bytes stays under this (64 MiB).
LOGITS_CHUNK_BYTES = 64 * 2**20
# A forward pass's own cost, in tokens (`length_buckets`): a pass is split only where that saves more padding.
PASS_TOKENS = 64


@dataclass
class Policy:
    model: PeftModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    bf16: bool
    eos_token_ids: tuple[int, ...]  # every id that ends a completion: the tokenizer's and generation_config's
    fold_adapter: bool  # sampling folds the adapter into the weights: only where that is exact (`can_fold`)
    adapted: list[LoraLayer]  # the layers the adapter changes
    has_dropout: bool  # train mode changes the forward (a dropout kept): the update switches to it

    def __post_init__(self):
        self._trainable = [p for p in self.model.parameters() if p.requires_grad]  # the adapter's weights

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return self._trainable

    def autocast(self):
        return autocast(self.device, self.bf16)

    def encode_prompt(self, prompt: str | list[dict]) -> list[int]:
        """Token ids of a prompt; chat messages go through the tokenizer's chat template."""
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt, add_special_tokens=True)
        if not self.tokenizer.chat_template:
            raise ValueError("this model has no chat template, so prompts must be plain strings")
        return list(
            self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
        )

    def log_probs(
        self,
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        completion_ids: Tensor,
        completion_mask: Tensor,
        group_size: int,
        temperature: float,
    ) -> Tensor:
        """log pi(o_t | q, o_<t) for each completion token, at the sampling temperature.  (B, T)

        The G completions of a group share their prompt, so the prompt goes through the model
        once per group and its KV cache is repeated G times: the completions attend to it, and
        the gradient of all G flows back into it. Same numbers as a forward over each
        prompt + completion, with (G - 1) / G fewer prompt tokens computed.
        prompt_ids, prompt_mask (B, Lp) left-padded; completion_ids, completion_mask (B, T).
        """
        with self.autocast():
            hidden = self.completion_hidden(prompt_ids, prompt_mask, completion_ids, completion_mask, group_size)
            return self._token_log_probs(hidden, completion_ids, completion_mask, temperature)

    def completion_hidden(self, prompt_ids, prompt_mask, completion_ids, completion_mask, group_size) -> Tensor:
        """The decoder's last hidden state at the positions that predict o_0 .. o_T-1.  (B, T, H)

        The completions after o_0 go through the decoder in `length_buckets`: rows of similar length
        together, each bucket cut to its own longest, so a completion that ended early is not padded to the
        batch's longest (SmolLM2 on short_answers: half the tokens of a pass were padding). A row's padding
        comes after it, where causal attention never looks, so its numbers are those of one padded pass: bit for
        bit in bf16, in fp32 up to the last bits a matmul rounds by the batch's shape.
        """
        decoder = self.model.get_base_model().get_decoder()
        group_mask = prompt_mask[::group_size]  # (B / G, Lp)
        prefix = decoder(
            input_ids=prompt_ids[::group_size],
            attention_mask=group_mask,
            position_ids=positions(group_mask),
            use_cache=True,
        )
        hidden = prefix.last_hidden_state[:, -1:].repeat_interleave(group_size, dim=0)  # (B, 1, H): predicts o_0
        width = completion_ids.shape[1]
        if width == 1:
            return hidden
        lengths = completion_mask.sum(dim=1).tolist()  # (B,)
        prompt_lengths = prompt_mask.sum(dim=1, keepdim=True)  # (B, 1)
        pieces, order = [], []
        for rows in length_buckets(lengths, PASS_TOKENS):
            w = max(lengths[rows[0]], 2)  # its longest; o_0 came from the prefix: this pass predicts o_1 .. o_w-1
            rows = torch.tensor(rows, device=self.device)
            piece = decoder(
                input_ids=completion_ids[rows, : w - 1],
                attention_mask=torch.cat([prompt_mask[rows], completion_mask[rows, : w - 1]], dim=1),
                position_ids=prompt_lengths[rows] + torch.arange(w - 1, device=self.device),  # (b, w - 1)
                cache=cache_rows(prefix.cache, rows // group_size),
                use_cache=True,
            ).last_hidden_state  # (b, w - 1, H)
            pieces.append(torch.nn.functional.pad(piece, (0, 0, 0, width - w)))  # (b, T - 1, H)
            order.append(rows)
        rest = torch.cat(pieces)[torch.cat(order).argsort()]  # (B, T - 1, H) in the rows' own order
        return torch.cat([hidden, rest], dim=1)  # (B, T, H)

    def _token_log_probs(self, hidden: Tensor, completion_ids: Tensor, completion_mask: Tensor, temperature: float):
        """log softmax(lm_head(h) / T) at each completion token, chunk by chunk.  (B, T, H) -> (B, T)

        Only the completions' real tokens are projected (padding is skipped), at most
        LOGITS_CHUNK_BYTES of fp32 logits at a time; with a gradient, each chunk's logits are
        recomputed in the backward pass instead of kept (SmolLM2's 49k vocabulary: 64 completions
        x 32 tokens would hold 400 MB; Qwen's 152k, 1.2 GB).
        """
        head = self.model.get_base_model().get_output_embeddings()
        chunk = max(1, LOGITS_CHUNK_BYTES // (4 * head.weight.shape[0]))
        where = completion_mask.bool()  # (B, T)
        states, tokens = hidden[where], completion_ids[where]  # (N, H), (N,)
        needs_grad = torch.is_grad_enabled() and states.requires_grad and len(tokens) > chunk
        transform = self.logit_transform
        pieces = []
        for i in range(0, len(tokens), chunk):
            args = (head, states[i : i + chunk], tokens[i : i + chunk], temperature, transform)
            pieces.append(
                checkpoint(_chunk_log_probs, *args, use_reentrant=False) if needs_grad else _chunk_log_probs(*args)
            )
        log_probs = hidden.new_zeros(completion_ids.shape, dtype=torch.float32)  # (B, T), 0 on padding
        return log_probs.masked_scatter(where, torch.cat(pieces))

    @property
    def logit_transform(self):
        """What the model's own forward does to lm_head's output (Gemma's soft cap, Granite's scaling), or None."""
        config = self.model.get_base_model().config
        cap = getattr(config, "final_logit_softcapping", None)
        scale = getattr(config, "logits_scaling", None)
        if cap:
            return lambda logits: torch.tanh(logits / cap) * cap
        if scale:
            return lambda logits: logits / scale
        return None

    @torch.no_grad()
    def reference_log_probs(self, *inputs, group_size: int, temperature: float) -> Tensor:
        """log pi_ref: the same forward with the LoRA adapter disabled.  (B, T)"""
        with self.adapter_off():
            return self.log_probs(*inputs, group_size, temperature)

    @contextmanager
    def adapter_off(self):
        """The base model's forward: every adapted layer skips its adapter.

        What peft's `disable_adapter()` does to the forward, without its bookkeeping (a model status
        report and requires_grad set on every adapter weight, twice), which took ~6 ms a call: a
        tenth of a tiny-model step.
        """
        for layer in self.adapted:
            layer._disable_adapters = True
        try:
            yield
        finally:
            for layer in self.adapted:
                layer._disable_adapters = False

    @contextmanager
    def training(self):
        """Train mode for the update, where it changes the forward (a dropout kept on); else nothing.

        Switching a model's mode visits every module: ~1.5 ms each way on the tiny model, for
        nothing when no dropout is left (`disable_dropout`, lora_dropout 0).
        """
        if not self.has_dropout:
            yield
            return
        self.model.train()
        try:
            yield
        finally:
            self.model.eval()

    @contextmanager
    def sampling_weights(self):
        """The weights sampling runs on: the adapter folded into them where that is exact, else as in training.

        Folding, W' = W + (alpha/r) B A, makes a decode step one matmul per layer instead of three,
        but it is exact only for fp32 weights that no other module shares. A bf16 weight rounds
        W + delta back to bf16, losing much of a small update (measured: max |log p_sampler - log
        p_train| 0.15 on the tiny model, 0.28 on SmolLM2), and a tied embedding would carry the delta into lm_head
        too. Then sampling runs the adapter unfolded, the same computation the update differentiates.
        The base weights are put back untouched afterwards (peft's merge/unmerge would add and
        subtract the delta, which rounds the base weights away over many steps).
        """
        if not self.fold_adapter:
            yield
            return
        originals = []
        for module in self.adapted:
            weight = module.get_base_layer().weight
            delta = module.get_delta_weight(module.active_adapters[0])
            originals.append((weight, weight.data))
            weight.data = weight.data + delta
        try:
            with self.adapter_off():
                yield
        finally:
            for weight, data in originals:
                weight.data = data

    def load_adapter(self, folder: Path) -> None:
        """Load adapter weights saved by `save_pretrained` into this policy's adapter."""
        weights = load_file(folder / "adapter_model.safetensors", device=str(self.device))
        set_peft_model_state_dict(self.model, weights)


def load_policy(config: Config) -> Policy:
    """Base model + tokenizer from `config.model`, wrapped with a fresh LoRA adapter."""
    device = resolve_device(config.device)
    bf16 = uses_bf16(config.precision, device)
    path = resolve_model(config.model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        # in bf16 the frozen base weights are stored in bf16 (half the memory, no cast per
        # matmul); the adapter stays in fp32 (peft upcasts it)
        base = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=torch.bfloat16 if bf16 else torch.float32,
            # CPU SDPA kernels are slow on short sequences: eager attention made a GRPO step
            # of the 25M bench model 15% faster on 2 cores (bench/step_time.py)
            attn_implementation="eager" if device.type == "cpu" else None,
        )
        if device.type == "cpu":
            base.set_attn_implementation(attention_for(base.config.model_type))  # no copy of K and V per head
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not load model {config.model!r}: {error}") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if config.disable_dropout:
        disable_dropout(base)
    torch.manual_seed(config.seed)  # the adapter's init (A random, B zero)
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=_target_modules(config.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    try:
        with warnings.catch_warnings():  # peft 0.21 reads a property transformers 5 deprecates; not ours to fix
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            model = get_peft_model(base, lora)
    except ValueError as error:
        modules = list(config.lora_target_modules)
        raise ModelLoadError(f"lora_target_modules {modules}: {error}") from None
    adapted = lora_layers(model)
    if bf16:
        keep_input_dtype(adapted)
    model.to(device)
    model.eval()
    return Policy(
        model,
        tokenizer,
        device,
        bf16,
        eos_token_ids(base, tokenizer),
        can_fold(model, bf16),
        adapted,
        has_dropout(model),
    )


def can_fold(model: PeftModel, bf16: bool) -> bool:
    """True when folding the adapter into the weights gives the same policy: fp32 weights, none tied."""
    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    weights = [module.get_base_layer().weight for module in lora_layers(model)]
    return not bf16 and all(w.dtype == torch.float32 and uses[id(w)] == 1 for w in weights)


def keep_input_dtype(adapted: list[LoraLayer]) -> None:
    """Let the adapter's matmuls take their bf16 input as it comes, under autocast.

    peft casts each adapted layer's input to the adapter's fp32 and autocast casts it straight
    back to bf16: the same numbers, but a copy per adapted layer, and each kept for the backward
    pass (q, k and v share one input, so three copies of it). Without the round trip, the update
    of the 25M bench model keeps 7% less for its backward pass, and runs a little faster."""
    for module in adapted:
        module.cast_input_dtype_enabled = False


def lora_layers(model: PeftModel) -> list[LoraLayer]:
    return [module for module in model.modules() if isinstance(module, LoraLayer)]


def eos_token_ids(model, tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    """Every id that ends a completion: the tokenizer's EOS and each of generation_config.eos_token_id
    (Qwen2.5-Instruct declares two: <|im_end|> and <|endoftext|>), as TRL and generate stop."""
    declared = getattr(model.generation_config, "eos_token_id", None)
    declared = [declared] if isinstance(declared, int) else list(declared or [])
    ids = [tokenizer.eos_token_id, *declared]
    return tuple(dict.fromkeys(i for i in ids if i is not None))


def has_dropout(model: torch.nn.Module) -> bool:
    """True when some dropout is on: an nn.Dropout or a float `attention_dropout` above 0."""
    return any(
        (isinstance(m, torch.nn.Dropout) and m.p > 0)
        or (isinstance(getattr(m, "attention_dropout", None), float) and m.attention_dropout > 0)
        for m in model.modules()
    )


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout of the model to 0: nn.Dropout modules (TRL's `disable_dropout`) and the
    attention dropout that transformers' attention layers apply as a float (`attention_dropout`),
    which TRL's leaves on. With either, the training forward differs from the sampling one."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def _chunk_log_probs(head, states: Tensor, tokens: Tensor, temperature: float, transform) -> Tensor:
    logits = head(states)  # (n, V)
    if transform is not None:
        logits = transform(logits)
    return token_log_probs(logits, tokens, temperature)


def length_buckets(lengths: list[int], pass_tokens: int) -> list[list[int]]:
    """The rows, longest first, in runs that each pad to their own longest: the cut that pads fewest tokens,
    counting each pass beyond the first as `pass_tokens` more.  -> row indices per run

    Exact over the cuts between distinct lengths (a run never splits rows of one length), by dynamic programming:
    cost[j], the cheapest cover of the j longest rows, is min over i < j of cost[i] + (j - i) x length of row i
    + pass_tokens. E.g. lengths 32, 32, 5, 5, 5, 5 with pass_tokens 16: one run pads to 6 x 32 = 192 tokens;
    two runs, 2 x 32 + 4 x 5 + 16 = 100."""
    order = sorted(range(len(lengths)), key=lambda row: -lengths[row])
    longest = [lengths[row] for row in order]
    cuts = [0] + [j for j in range(1, len(order)) if longest[j] < longest[j - 1]]  # where a run may start
    cost, start = {0: -pass_tokens}, {}
    for j in cuts[1:] + [len(order)]:
        cost[j], start[j] = min((cost[i] + (j - i) * longest[i] + pass_tokens, i) for i in cuts if i < j)
    runs, j = [], len(order)
    while j:
        runs.append(order[start[j] : j])
        j = start[j]
    return runs[::-1]


def cache_rows(cache, rows: Tensor):
    """A KV cache holding `rows` of `cache`'s batch, leaving `cache` as it was (a pass appends to the one it gets)."""
    selected = copy.copy(cache)
    selected.layers = [copy.copy(layer) for layer in cache.layers]
    selected.batch_select_indices(rows)
    return selected


def positions(attention_mask: Tensor) -> Tensor:
    """Position ids that skip left padding, as generate computes them.  (B, L)"""
    return (attention_mask.cumsum(dim=1) - 1).clamp(min=0)


def _target_modules(modules: tuple[str, ...]) -> str | list[str]:
    return "all-linear" if tuple(modules) == ("all-linear",) else list(modules)
