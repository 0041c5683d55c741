"""How much of the machine a GRPO step uses: each phase's FLOPs against the machine's matmul throughput.

    python bench/mfu.py [--models tiny small smollm2] [--steps 6]

Runs the workbench for a few steps of bench/step_time.py's work (8 prompts x 8 completions) and, per phase:
- sample: the prompts' prefill (once per group) and the decode of every completion token;
- reference: log pi_ref over every prompt (once per group) and completion token (beta > 0);
- update: the forward and backward of the policy's log-probs (backward through frozen weights is one more
  forward's worth of matmuls, for the inputs' gradients; the adapter's own gradients are counted too).
Model FLOPs (no recomputation counted, as MFU is usually defined) from the model's config and the real
token counts of each step: 2 x (linear weights, LoRA's included) per token, 4 x layers x hidden x context per
token for attention, 2 x hidden x vocabulary for each token whose logits are taken. Padding and rows that
finished early are not useful work, so they count against the phase.

The machine's limit is torch.matmul's throughput, measured here at the model's own linear shapes, in the
dtype the run uses ('auto': bf16 where the CPU has native bf16, else fp32), with as many rows as the phase
multiplies at once (decode: the batch's 64 rows; prefill, reference and update: a micro-batch's tokens).
Prints FLOPs, seconds, achieved FLOP/s and utilisation per phase, medians over the timed steps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_time import SETTINGS, WARMUP, WORK, small_model  # noqa: E402  the same work as the step-time bench


def linear_shapes(config, lora_rank: int, targets: tuple[str, ...]) -> list[tuple[int, int]]:
    """(in, out) of every linear layer of one decoder layer, LoRA's A and B on the targeted ones included."""
    d, ff = config.hidden_size, config.intermediate_size
    heads, kv_heads = (
        config.num_attention_heads,
        getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
    )
    head_dim = getattr(config, "head_dim", None) or d // heads
    shapes = {
        "q_proj": (d, heads * head_dim),
        "k_proj": (d, kv_heads * head_dim),
        "v_proj": (d, kv_heads * head_dim),
        "o_proj": (heads * head_dim, d),
        "gate_proj": (d, ff),
        "up_proj": (d, ff),
        "down_proj": (ff, d),
    }
    lora = [(i, lora_rank) for name, (i, o) in shapes.items() if name in targets]
    lora += [(lora_rank, o) for name, (i, o) in shapes.items() if name in targets]
    return list(shapes.values()) + lora


class Flops:
    """Forward FLOPs of the model per token, by what the token does."""

    def __init__(self, config, lora_rank: int, targets: tuple[str, ...]):
        self.layers, self.hidden, self.vocab = config.num_hidden_layers, config.hidden_size, config.vocab_size
        self.shapes = linear_shapes(config, lora_rank, targets)
        self.linear = 2 * self.layers * sum(i * o for i, o in self.shapes)  # per token
        self.lora = 2 * self.layers * sum(i * o for i, o in self.shapes if lora_rank in (i, o))

    def tokens(self, first: int, count: int, logits: bool) -> float:
        """`count` tokens at positions first + 1 .. first + count (each attends to everything before it)."""
        context = count * first + count * (count + 1) / 2
        return (
            self.linear * count
            + 4 * self.layers * self.hidden * context
            + (2 * self.hidden * self.vocab * count if logits else 0)
        )

    def group(self, prompt: int, completions: list[int], logits_on_prompt: bool = False) -> float:
        """A group's prompt once and its completions after it (each completion's logits taken)."""
        return self.tokens(0, prompt, logits_on_prompt) + sum(self.tokens(prompt, n, True) for n in completions)


def matmul_flops_per_second(shapes: list[tuple[int, int]], rows: int, dtype: torch.dtype, repeats: int = 7) -> float:
    """torch.matmul's throughput over the layer's shapes with `rows` rows: each shape's best of `repeats` timings
    of ~0.05 s (a shared machine drifts; the best is what it can do), the shapes weighted by their FLOPs."""
    total_flops, total_time = 0.0, 0.0
    for i, o in shapes:
        a, b = torch.randn(rows, i, dtype=dtype), torch.randn(i, o, dtype=dtype)
        torch.matmul(a, b)
        started = time.perf_counter()
        torch.matmul(a, b)
        n = max(1, int(0.05 / max(time.perf_counter() - started, 1e-6)))
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(n):
                torch.matmul(a, b)
            best = min(best, (time.perf_counter() - started) / n)
        total_time += best
        total_flops += 2 * rows * i * o
    return total_flops / total_time


def measure(name: str, model: str, steps: int) -> None:
    from workbench import Config, Store, load_task, train
    from workbench.engine.hardware import cpu_has_bf16
    from workbench.engine.policy import Policy, load_policy
    from workbench.events import StepFinished
    from workbench.store.reads import stored_prompt

    task_name, changes = WORK[name]
    config = Config(model=model, steps=steps + WARMUP, checkpoint_every=10_000, **(SETTINGS | changes))
    reference_seconds: list[float] = []
    original = Policy.reference_log_probs

    def timed_reference(self, *inputs, **kwargs):
        started = time.perf_counter()
        try:
            return original(self, *inputs, **kwargs)
        finally:
            reference_seconds.append(time.perf_counter() - started)

    Policy.reference_log_probs = timed_reference
    workspace = tempfile.mkdtemp()
    reference_by_step = []
    try:
        for event in train(config, load_task(task_name), workspace):
            if isinstance(event, StepFinished):
                reference_by_step.append(sum(reference_seconds))
                reference_seconds.clear()
    finally:
        Policy.reference_log_probs = original

    policy = load_policy(config)
    model_config = policy.model.get_base_model().config
    flops = Flops(model_config, config.lora_rank, config.lora_target_modules)
    store = Store(workspace)
    steps_table = store.query("SELECT * FROM steps ORDER BY step")
    rollouts = store.query(
        "SELECT step, group_id, prompt, num_tokens FROM rollouts ORDER BY step, group_id, sample_idx"
    )
    prompt_tokens = {p: len(policy.encode_prompt(stored_prompt(p))) for p in rollouts.prompt.unique()}
    bf16 = cpu_has_bf16() if config.precision == "auto" else config.precision == "bf16"
    dtype = torch.bfloat16 if bf16 else torch.float32
    rows_decode = config.group_size * config.prompts_per_step
    peak_decode = matmul_flops_per_second(flops.shapes, rows_decode, dtype)
    peak_batch = matmul_flops_per_second(flops.shapes, config.micro_batch_tokens, dtype)
    table = {"sample": [], "reference": [], "update": []}
    for row, reference in zip(steps_table.itertuples(), reference_by_step):
        if row.step <= WARMUP:
            continue
        groups = rollouts[rollouts.step == row.step].groupby("group_id")
        forward = sum(flops.group(prompt_tokens[g.prompt.iloc[0]], g.num_tokens.tolist()) for _, g in groups)
        tokens = sum(prompt_tokens[g.prompt.iloc[0]] + sum(g.num_tokens) for _, g in groups)
        sample_flops = forward  # the prefill takes the prompt's last logits only: within a rounding of this
        update_flops = 2 * forward + 2 * flops.lora * tokens  # inputs' gradients, and the adapter's weights'
        table["sample"].append((sample_flops, row.seconds_sample, peak_decode))
        table["reference"].append((forward if config.beta > 0 else 0.0, reference, peak_batch))
        table["update"].append((update_flops, row.seconds_update - reference, peak_batch))
    step_seconds = statistics.median(steps_table.seconds[WARMUP:])
    print(f"| {name} ({'bf16' if bf16 else 'fp32'}) | whole step | | {step_seconds:.3f} s | | | |")
    for phase, rows in table.items():
        f = statistics.median(r[0] for r in rows)
        s = statistics.median(r[1] for r in rows)
        peak = rows[0][2]
        print(
            f"| {name} | {phase} | {f / 1e12:.3f} TFLOP | {s:.3f} s | {f / s / 1e9:.0f} GFLOP/s | "
            f"{peak / 1e9:.0f} GFLOP/s | {f / s / peak:.0%} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(WORK), choices=list(WORK))
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model, after warm-up")
    args = parser.parse_args()
    from workbench.engine.hub import SMOLLM2, cache_root, resolve_model
    from workbench.engine.tiny import tiny_model_path

    paths = {
        "tiny": lambda: str(tiny_model_path()),
        "small": lambda: small_model(cache_root() / "bench-small-25m"),
        "smollm2": lambda: resolve_model(SMOLLM2),
    }
    print("| model | phase | model FLOPs | seconds | achieved | matmul at its shapes | utilisation |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        measure(name, paths[name](), args.steps)


if __name__ == "__main__":
    main()
