"""The policy: any Hugging Face causal LM with a peft LoRA adapter; the reference is the adapter off.

Only the adapter trains. pi_ref is the same weights with the adapter disabled, so the KL penalty
needs no second copy of the model (as TRL does with peft).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
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
            self.tokenizer.apply_chat_template(
                prompt, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )

    def log_probs(
        self, input_ids: Tensor, attention_mask: Tensor, completion_ids: Tensor, temperature: float
    ) -> Tensor:
        """log pi(o_t | q, o_<t) for each completion token, at the sampling temperature.

        input_ids (B, L) is prompt + completion, left-padded; completion_ids (B, T) its last T
        tokens. Returns (B, T) float32.
        """
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # as in generate
        completion_length = completion_ids.shape[1]
        with self.autocast():
            logits = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=False,
                logits_to_keep=completion_length + 1,  # skip the prompt's logits
            ).logits  # (B, T + 1, V)
        return token_log_probs(logits[:, :-1], completion_ids, temperature)

    @torch.no_grad()
    def reference_log_probs(
        self, input_ids: Tensor, attention_mask: Tensor, completion_ids: Tensor, temperature: float
    ) -> Tensor:
        """log pi_ref: the same forward with the LoRA adapter disabled.  (B, T)"""
        with self.model.disable_adapter():
            return self.log_probs(input_ids, attention_mask, completion_ids, temperature)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def load_adapter(self, folder: Path) -> None:
        """Load adapter weights saved by `save_pretrained` into this policy's adapter."""
        weights = load_file(folder / "adapter_model.safetensors", device=str(self.device))
        set_peft_model_state_dict(self.model, weights)


def load_policy(config: Config) -> Policy:
    """Base model + tokenizer from `config.model`, wrapped with a fresh LoRA adapter."""
    device = resolve_device(config.device)
    path = resolve_model(config.model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
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
        model = get_peft_model(base, lora)
    except ValueError as error:
        modules = list(config.lora_target_modules)
        raise ModelLoadError(f"lora_target_modules {modules}: {error}") from None
    model.to(device)
    return Policy(model, tokenizer, device, uses_bf16(config.precision, device))


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
