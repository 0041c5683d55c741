"""The built-in tiny model: a ~3M-parameter Qwen2-style model with a character-level tokenizer.

It is made here, needs no download, and is warm-started by a short supervised run on examples
of every sample task, so it gets some answers right and many wrong: GRPO then has a signal to
sharpen, and the improvement is visible on a CPU within minutes. The build is deterministic for
a seed. The package ships the result (`workbench/tiny_model/`, bf16 safetensors, ~6 MB), an ordinary
Hugging Face model folder that the policy loads like any other; `python -m workbench build-tiny`
rebuilds it from this recipe, and a test fails when the shipped folder and the recipe disagree.
"""

from __future__ import annotations

import json
import random
import shutil
import string
import tempfile
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from workbench.engine import tiny_corpus
from workbench.engine.hardware import autocast, cpu_has_bf16

SPECIAL_TOKENS = ["<|pad|>", "<|endoftext|>", "<|unk|>"]
CHARACTERS = [c for c in string.printable if c not in "\r\x0b\x0c"]
# Chat messages render as their contents, one after another: the tiny model knows no roles.
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"

MODEL_SHAPE = dict(
    hidden_size=256,
    intermediate_size=768,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    tie_word_embeddings=True,
)
# Warm start: short on purpose. Every batch mixes all the sample tasks, in these proportions; it
# stops while the model is still partly right on each (measured per task in docs/figures.md), so a
# group of completions usually holds right and wrong ones: room for GRPO.
WARM_START = dict(steps=600, batch_size=128, learning_rate=1e-3, chunks=4)
MIX = dict(arithmetic=3, format_following=1, reversal=1, length_target=1, countdown=2, word_problems=2, coding=2)
# Shares of examples taught wrong on purpose, so that the task starts partly right: a format example
# answers with the bare sum; a length or coding example with the completion of another example.
WRONG = dict(format_following=0.3, length_target=0.5, coding=0.5)
RECIPE_VERSION = 3  # bump when the corpus or the training recipe changes, then run build-tiny
SHIPPED = Path(__file__).resolve().parents[1] / "tiny_model"  # package data


def tiny_model_path() -> Path:
    """The folder of the tiny model that ships with the package."""
    if not (SHIPPED / "model.safetensors").exists():
        raise FileNotFoundError(f"{SHIPPED} holds no model: rebuild it with `python -m workbench build-tiny`")
    return SHIPPED


def shipped_recipe() -> dict:
    """The recipe the shipped model was built from (its recipe.json)."""
    return json.loads((SHIPPED / "recipe.json").read_text())


def recipe(seed: int = 0) -> dict:
    """The recipe this code builds, for `seed`."""
    return dict(version=RECIPE_VERSION, seed=seed, shape=MODEL_SHAPE, warm_start=WARM_START, mix=MIX, wrong=WRONG)


def build_tokenizer() -> Qwen2Tokenizer:
    """One token per printable ASCII character, plus pad, EOS and unknown.

    A byte-level BPE without merges, of Qwen2's own class: AutoTokenizer loads a qwen2 model's
    tokenizer as a Qwen2Tokenizer whatever tokenizer_config.json names, and that class rebuilds the
    byte-level pipeline, in which a space is the symbol 'Ġ' and a newline 'Ċ'."""
    symbols = bytes_to_unicode()
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + [symbols[ord(c)] for c in CHARACTERS])}
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        pad_token="<|pad|>",
        eos_token="<|endoftext|>",
        unk_token="<|unk|>",
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def qwen2_config(tokenizer: Qwen2Tokenizer, **shape) -> Qwen2Config:
    """A Qwen2 architecture of the given shape around the character tokenizer."""
    return Qwen2Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        **shape,
    )


def build_tiny_model(path: Path = SHIPPED, seed: int = 0) -> None:
    """Initialise, warm-start and save the tiny model to `path`, its weights in bf16 (a folder is replaced whole)."""
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(qwen2_config(tokenizer, **MODEL_SHAPE))
    warm_start(model, tokenizer, random.Random(seed))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would keep other users from the package's model
    model.to(torch.bfloat16).save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "recipe.json").write_text(json.dumps(recipe(seed), indent=1) + "\n")
    shutil.rmtree(path, ignore_errors=True)
    staging.rename(path)


def warm_start(model: Qwen2ForCausalLM, tokenizer: Qwen2Tokenizer, rng: random.Random):
    """Supervised training on mixed (prompt, completion) examples; the loss covers the completion and its EOS."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=WARM_START["learning_rate"])
    model.train()
    steps = WARM_START["steps"]
    for _ in tqdm(range(steps), desc="building the tiny model", unit="step"):
        examples = [_example(rng) for _ in range(WARM_START["batch_size"])]
        _accumulate_gradient(model, tokenizer, examples)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


def _example(rng: random.Random) -> tuple[str, str]:
    task = rng.choices(list(MIX), weights=list(MIX.values()))[0]
    prompt, completion, columns = tiny_corpus.TASKS[task](rng)
    if task in WRONG and rng.random() < WRONG[task]:
        completion = _wrong_completion(task, columns, rng)
    return prompt, completion


def _wrong_completion(task: str, columns: dict, rng: random.Random) -> str:
    if task == "format_following":
        return columns["answer"]
    return tiny_corpus.TASKS[task](rng)[1]


def _accumulate_gradient(model, tokenizer, examples) -> None:
    """The gradient of the batch's mean token loss, in length-sorted chunks: a word problem's padding
    is not paid by the two-digit sums, and the update is the one the whole batch would give."""
    examples = sorted(examples, key=lambda e: len(e[0]) + len(e[1]))
    size = -(-len(examples) // WARM_START["chunks"])
    chunks = [_supervised_batch(examples[i : i + size], tokenizer) for i in range(0, len(examples), size)]
    total = sum(int((labels[:, 1:] != -100).sum()) for _, labels in chunks)  # the loss's targets: labels shifted by one
    for input_ids, labels in chunks:
        with autocast(torch.device("cpu"), cpu_has_bf16()):
            model(input_ids=input_ids, labels=labels, num_items_in_batch=total).loss.backward()


def _supervised_batch(examples, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) input ids, and labels that are -100 except on answer + EOS tokens."""
    rows, label_rows = [], []
    for prompt, answer in examples:
        prompt_ids = tokenizer.encode(prompt)
        answer_ids = tokenizer.encode(answer) + [tokenizer.eos_token_id]
        rows.append(prompt_ids + answer_ids)
        label_rows.append([-100] * len(prompt_ids) + answer_ids)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    labels = torch.tensor([r + [-100] * (width - len(r)) for r in label_rows])
    return input_ids, labels
