"""Seconds per GRPO step on one GPU: a Qwen2.5-0.5B-shaped model, 8 x 8 completions of 256 tokens.

    python bench/gpu.py [--steps 5] [--trl]

The model is built from Qwen2.5-0.5B's shape (24 layers, hidden 896, 152k vocabulary, tied
embeddings) with random weights, so nothing is downloaded; EOS is ignored, so every completion
runs to 256 tokens. bf16, LoRA r 16 on q/k/v/o, beta 0.04, one update per batch. Prints seconds
per step, sampling tokens per second, peak GPU memory and the sampling_logp_diff, for the
workbench and (with --trl, when TRL's wheels are installed) TRL's GRPOTrainer with its defaults
on the same work, each in its own process.

Made to run in under 5 minutes on one H100 with only torch, transformers, peft and accelerate
installed and no network: the workbench's other needs (duckdb, pandas, pyarrow, tqdm, safetensors;
TRL and datasets for --trl) travel as wheels, downloaded beside the repository with
`pip download --only-binary=:all: -d .whl ...` and installed there with `pip install --no-index --find-links .whl`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SHAPE = dict(  # Qwen2.5-0.5B
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_theta=1_000_000.0,
    vocab_size=151_936,
    tie_word_embeddings=True,
)
SETTINGS = dict(
    group_size=8,
    prompts_per_step=8,
    max_new_tokens=256,
    beta=0.04,
    lora_rank=16,
    lora_alpha=32.0,
    learning_rate=1e-5,
    micro_batch_tokens=64 * 300,  # the whole batch in one pass: an H100 has the memory
)
WARMUP = 2


def build_model(folder: Path) -> str:
    """Qwen2.5-0.5B's shape with random weights and the tiny model's tokenizer, saved in bf16."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from workbench.engine.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    config = Qwen2Config(pad_token_id=tokenizer.pad_token_id, eos_token_id=-1, bos_token_id=-1, **SHAPE)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def no_eos(policy_module) -> None:
    """Every completion runs to max_new_tokens: no id ends it (ids are never negative)."""
    policy_module.eos_token_ids = lambda model, tokenizer: (-1,)


def measure_workbench(model: str, steps: int) -> dict:
    from workbench import Config, load_task, train
    from workbench.engine import policy
    from workbench.events import StepFinished

    no_eos(policy)
    config = Config(model=model, steps=steps + WARMUP, checkpoint_every=10_000, device="cuda", **SETTINGS)
    torch.cuda.reset_peak_memory_stats()
    rows = [
        e.metrics for e in train(config, load_task("arithmetic"), tempfile.mkdtemp()) if isinstance(e, StepFinished)
    ]
    rows = rows[WARMUP:]
    tokens = config.batch_size * config.max_new_tokens
    return {
        "seconds": statistics.median(r["seconds"] for r in rows),
        "seconds_sample": statistics.median(r["seconds_sample"] for r in rows),
        "sampling_tokens_per_s": tokens / statistics.median(r["seconds_sample"] for r in rows),
        "sampling_logp_diff_mean": statistics.median(r["sampling_logp_diff_mean"] for r in rows),
        "sampling_logp_diff_max": max(r["sampling_logp_diff_max"] for r in rows),
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def measure_trl(model: str, steps: int) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from workbench.rewards.tasks import load_task

    times = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            torch.cuda.synchronize()
            times.append(time.perf_counter() - self.start)

    def length(completions, **kwargs):
        return [float(len(c)) for c in completions]

    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(),
        max_steps=steps + WARMUP,
        report_to=[],
        per_device_train_batch_size=64,
        num_generations=SETTINGS["group_size"],
        max_completion_length=SETTINGS["max_new_tokens"],
        beta=SETTINGS["beta"],
        learning_rate=SETTINGS["learning_rate"],
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        generation_kwargs={"eos_token_id": None, "min_new_tokens": SETTINGS["max_new_tokens"]},
    )
    torch.cuda.reset_peak_memory_stats()
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16),
        processing_class=AutoTokenizer.from_pretrained(model),
        reward_funcs=[length],
        args=args,
        train_dataset=Dataset.from_list([{"prompt": row["prompt"]} for row in load_task("arithmetic").rows]),
        callbacks=[Clock()],
        peft_config=LoraConfig(
            r=SETTINGS["lora_rank"],
            lora_alpha=SETTINGS["lora_alpha"],
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            task_type="CAUSAL_LM",
        ),
    )
    trainer.train()
    return {"seconds": statistics.median(times[WARMUP:]), "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--trl", action="store_true", help="also TRL's GRPOTrainer, side by side")
    parser.add_argument("--side", choices=["workbench", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        measure = measure_workbench if args.side == "workbench" else measure_trl
        print(json.dumps(measure(args.model_path, args.steps)))
        return
    assert torch.cuda.is_available(), "bench/gpu.py needs a CUDA GPU"
    model = build_model(Path(tempfile.mkdtemp()) / "qwen2.5-0.5b-shaped")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    for side in ["workbench", "trl"] if args.trl else ["workbench"]:
        command = [sys.executable, __file__, "--side", side, "--model-path", model, "--steps", str(args.steps)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        print(side, output.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
