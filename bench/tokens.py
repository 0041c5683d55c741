"""What the token view's per-token numbers cost: disk per 1M rollouts and share of step time.

    python bench/tokens.py [--models tiny smollm2] [--rounds 3]

Each round trains the same run twice, with `log_token_stats` on and off (alternating which goes
first), in processes of their own: tiny on arithmetic (8 prompts x 8 completions, 40 steps), SmolLM2 on
short_answers (8 x 8, at most 32 new tokens, 4 steps). Time: the median `steps.seconds` after two warm-up
steps, median over rounds. Disk: the `tokens` table's share of the store file, from the file sizes
of the two runs' stores after a CHECKPOINT, per rollout and scaled to 1M rollouts; also the tokens
per rollout, since the cost grows with completion length.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb

ROOT = Path(__file__).parent.parent
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
WORK = {
    "tiny": ["--task", "arithmetic", "--steps", "42"],
    "smollm2": ["--task", "short_answers", "--model", SMOLLM2, "--max-new-tokens", "32", "--steps", "6"],
}
COMMON = ["--prompts-per-step", "8", "--group-size", "8", "--checkpoint-every", "1000"]
SKIPPED = 2


def run(workspace: Path, arguments: list[str], token_stats: bool) -> dict:
    flag = "--log-token-stats" if token_stats else "--no-log-token-stats"
    command = [sys.executable, "-m", "workbench", "train", *arguments, *COMMON, flag, "--workspace", str(workspace)]
    subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
    path = workspace / "store.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CHECKPOINT")
        seconds = [s for (s,) in con.execute("SELECT seconds FROM steps ORDER BY step").fetchall()][SKIPPED:]
        rollouts, tokens = con.execute("SELECT count(*), sum(num_tokens) FROM rollouts").fetchone()
    return dict(seconds=statistics.median(seconds), bytes=path.stat().st_size, rollouts=rollouts, tokens=tokens)


def measure(model: str, rounds: int) -> dict:
    times, sizes = {True: [], False: []}, {}
    with tempfile.TemporaryDirectory() as folder:
        for r in range(rounds):
            for on in (True, False) if r % 2 == 0 else (False, True):
                result = run(Path(folder) / f"{r}-{on}", WORK[model], on)
                times[on].append(result["seconds"])
                sizes[on] = result  # the last round's, for the disk figure
    extra = sizes[True]["bytes"] - sizes[False]["bytes"]
    rollouts = sizes[True]["rollouts"]
    return dict(
        on=statistics.median(times[True]),
        off=statistics.median(times[False]),
        bytes_per_rollout=extra / rollouts,
        tokens_per_rollout=sizes[True]["tokens"] / rollouts,
        rounds={("on" if k else "off"): [round(t, 4) for t in v] for k, v in times.items()},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(WORK), default=list(WORK))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("| model | tokens per rollout | disk per 1M rollouts | s/step on | s/step off | step time share |")
    print("|---|---|---|---|---|---|")
    for model in args.models:
        m = measure(model, args.rounds)
        share = (m["on"] - m["off"]) / m["on"]
        print(
            f"| {model} | {m['tokens_per_rollout']:.1f} | {m['bytes_per_rollout'] * 1e6 / 2**30:.2f} GiB | "
            f"{m['on']:.3f} | {m['off']:.3f} | {share:+.1%} |",
            flush=True,
        )
        print(f"  rounds: {m['rounds']}", flush=True)


if __name__ == "__main__":
    main()
