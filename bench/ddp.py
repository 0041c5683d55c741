"""Data-parallel training: 2 processes under torchrun against 1, on the same global batch.

    python bench/ddp.py [--models tiny smollm2] [--rounds 3]

Work per step: 8 prompts x 8 completions (each of the 2 processes samples 4 groups), beta 0.04, fp32
(where the two runs' adapters agree to ~1e-7). The one-process run has the machine's cores; under
torchrun each process gets one thread (torchrun's OMP_NUM_THREADS=1). The sides alternate, --rounds
times; each side's figure is the median over rounds of its median step time after the first two steps
(`steps.seconds` from the store). Also printed: how many completions of each step differ between the
last round's two runs, and the largest difference between their adapters after the last step.

On a 2-core machine expect no speedup: two processes split the same two cores, and each then pays
for its own model copy, reward worker and the all-reduces. The point is that the path is correct;
the speedup comes with one GPU per process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT))

from workbench.engine.checkpoint import checkpoint_folder  # noqa: E402
from workbench.store.database import Store  # noqa: E402

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
WORK = {  # model -> arguments, timed steps
    "tiny": (["--task", "arithmetic", "--max-new-tokens", "16"], 12),
    "smollm2": (
        ["--task", "short_answers", "--model", SMOLLM2, "--max-new-tokens", "32", "--learning-rate", "2e-4"],
        4,
    ),
}
COMMON = ["--prompts-per-step", "8", "--group-size", "8", "--beta", "0.04", "--precision", "fp32"]
SKIPPED = 2  # warm-up steps


def run(workspace: Path, arguments: list[str], processes: int) -> dict:
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    command = [*launcher, "-m", "workbench", "train", *arguments, "--workspace", str(workspace)]
    subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
    store = Store(workspace)
    run_id = store.runs().run_id[0]
    seconds = store.steps(run_id).seconds.tolist()[SKIPPED:]
    completions = store.query("SELECT step, completion FROM rollouts ORDER BY step, group_id, sample_idx")
    adapter = load_file(checkpoint_folder(workspace, run_id) / "adapter_model.safetensors")
    return dict(seconds=statistics.median(seconds), completions=completions, adapter=adapter)


def measure(model: str, rounds: int) -> dict:
    arguments, steps = WORK[model]
    arguments = [*arguments, *COMMON, "--steps", str(steps + SKIPPED)]
    times = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as folder:
        for r in range(rounds):
            for processes in (1, 2) if r % 2 == 0 else (2, 1):
                result = run(Path(folder) / f"{r}-{processes}", arguments, processes)
                times[processes].append(result["seconds"])
                if processes == 1:
                    single = result
                else:
                    split = result
    difference = max((single["adapter"][k] - split["adapter"][k]).abs().max().item() for k in single["adapter"])
    largest = max(w.abs().max().item() for w in single["adapter"].values())
    return dict(
        one=statistics.median(times[1]),
        two=statistics.median(times[2]),
        rounds={p: [round(t, 3) for t in ts] for p, ts in times.items()},
        differing=differing(single["completions"], split["completions"]),
        adapter_difference=difference,
        adapter_largest=largest,
    )


def differing(single, split) -> str:
    """How many of each step's completions differ between the two runs, e.g. '0, 0, 3 of 64'."""
    differs = single.completion.ne(split.completion).groupby(single.step).sum()
    return f"{', '.join(map(str, differs.tolist()))} of {single.step.value_counts().iloc[0]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(WORK), default=["tiny", "smollm2"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        "| model | 1 process, s/step | 2 processes, s/step | 2 / 1 | completions that differ, by step "
        "| adapter max abs diff |"
    )
    print("|---|---|---|---|---|---|")
    for model in args.models:
        m = measure(model, args.rounds)
        print(
            f"| {model} | {m['one']:.3f} | {m['two']:.3f} | {m['two'] / m['one']:.2f} | "
            f"{m['differing']} | {m['adapter_difference']:.1e} "
            f"(largest weight {m['adapter_largest']:.1e}) |",
            flush=True,
        )
        print(f"  rounds: {m['rounds']}", flush=True)


if __name__ == "__main__":
    main()
