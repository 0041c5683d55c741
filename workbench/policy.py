"""The policy: any Hugging Face causal LM with a peft LoRA adapter; the reference is the adapter off.

Only the adapter trains. pi_ref is the same weights with the adapter disabled, so the KL penalty
needs no second copy of the model (as TRL does with peft).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file
from torch import Tensor
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from workbench.config import Config
from workbench.grpo import token_log_probs
from workbench.hardware import autocast, resolve_device, uses_bf16
from workbench.tiny import tiny_model_path


class ModelLoadError(RuntimeError):
    """The model named in the config could not be loaded; the message says why."""


@dataclass
class Policy:
    model: PeftModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    bf16: bool

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
        group_prompts = prompt_ids[::group_size]  # (B / G, Lp)
        group_mask = prompt_mask[::group_size]
        with self.autocast():
            prefix = self.model(
                input_ids=group_prompts,
                attention_mask=group_mask,
                position_ids=positions(group_mask),
                use_cache=True,
                logits_to_keep=1,
            )
            logits = prefix.logits.repeat_interleave(group_size, dim=0)  # (B, 1, V): predicts o_0
            if completion_ids.shape[1] > 1:
                cache = prefix.past_key_values
                cache.batch_repeat_interleave(group_size)
                prompt_lengths = prompt_mask.sum(dim=1, keepdim=True)  # (B, 1)
                steps = torch.arange(completion_ids.shape[1] - 1, device=self.device)
                rest = self.model(
                    input_ids=completion_ids[:, :-1],
                    attention_mask=torch.cat([prompt_mask, completion_mask[:, :-1]], dim=1),
                    position_ids=prompt_lengths + steps,  # (B, T - 1)
                    past_key_values=cache,
                    use_cache=True,
                ).logits  # (B, T - 1, V): predicts o_1 .. o_T-1
                logits = torch.cat([logits, rest], dim=1)  # (B, T, V)
        return token_log_probs(logits, completion_ids, temperature)

    @torch.no_grad()
    def reference_log_probs(self, *inputs, group_size: int, temperature: float) -> Tensor:
        """log pi_ref: the same forward with the LoRA adapter disabled.  (B, T)"""
        with self.model.disable_adapter():
            return self.log_probs(*inputs, group_size, temperature)

    @contextmanager
    def merged_adapter(self):
        """Fold the adapter into copies of the base weights, for sampling: W' = W + (alpha/r) B A.

        The base weights themselves are put back untouched afterwards (peft's merge/unmerge
        would add and subtract the delta, which rounds the base weights away over many steps).
        """
        originals = []
        for module in self.model.modules():
            if isinstance(module, LoraLayer):
                weight = module.get_base_layer().weight
                delta = module.get_delta_weight(module.active_adapters[0])
                originals.append((weight, weight.data))
                weight.data = (weight.data.float() + delta).to(weight.dtype)
        try:
            with self.model.disable_adapter():
                yield
        finally:
            for weight, data in originals:
                weight.data = data

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

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
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not load model {config.model!r}: {error}") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
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
    model.to(device)
    return Policy(model, tokenizer, device, bf16)


def positions(attention_mask: Tensor) -> Tensor:
    """Position ids that skip left padding, as generate computes them.  (B, L)"""
    return (attention_mask.cumsum(dim=1) - 1).clamp(min=0)


def resolve_model(name: str) -> str:
    """'tiny' -> the built-in model's folder; an existing folder as is; else a hub id.

    A name that looks like a path (starts with '/', '.', '~') must exist: a typo in a local path
    should say so rather than fail later as an unknown hub id.
    """
    if name == "tiny":
        return str(tiny_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"model folder {path} has no config.json: not a Hugging Face model")
        return str(path)
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise ModelLoadError(f"model path {name} does not exist")
    return name


def _target_modules(modules: tuple[str, ...]) -> str | list[str]:
    return "all-linear" if tuple(modules) == ("all-linear",) else list(modules)
