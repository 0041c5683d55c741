"""The rollout store's costs: write time per step while training, and named queries on 1M rollouts.

    python bench/store.py [--steps 200] [--rollouts 1000000]

1. Trains the tiny model for --steps steps (8 prompts x 8 completions) and times every step's
   commit on the writer thread against the step's duration (medians).
2. Fills a fresh store with --rollouts synthetic rollouts (64 per step, 5,000 distinct 200-character prompts,
   completions of 20 to 260 characters with a token id per character, an answer column, two reward
   functions), reports its size on disk, and times
   each named query through `run_sql` (connection included; median of 5).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from workbench import Config, Store, load_task, train
from workbench.events import StepFinished
from workbench.store.queries import NAMED_QUERIES, named_sql, run_sql
from workbench.store.writer import COMMIT_SECONDS


def median_step_seconds(steps: int, seed: int) -> float:
    config = Config(steps=steps, checkpoint_every=10_000, seed=seed)
    events = train(config, load_task("arithmetic"), tempfile.mkdtemp(prefix="bench-store-"))
    return statistics.median(e.metrics["seconds"] for e in events if isinstance(e, StepFinished))


def write_share(steps: int) -> None:
    """Step time with the store against the same run with commits skipped; and the commit's own time."""
    write_seconds = []
    original = Store.write_steps

    def timed(self, *args, **kwargs):
        started = time.perf_counter()
        original(self, *args, **kwargs)
        write_seconds.append(time.perf_counter() - started)

    def skipped(self, *args, **kwargs):
        pass

    with_store, without = [], []
    for seed in range(3):  # interleaved, so drift in the machine's speed hits both alike
        Store.write_steps = timed
        with_store.append(median_step_seconds(steps, seed))
        Store.write_steps = skipped
        without.append(median_step_seconds(steps, seed))
    Store.write_steps = original
    step, bare = statistics.median(with_store), statistics.median(without)
    commit = statistics.median(write_seconds)
    print(
        f"tiny model, {steps} steps x 3 runs: step {step * 1000:.1f} ms with the store, "
        f"{bare * 1000:.1f} ms with commits skipped: the store costs {(step - bare) / bare:+.1%} of a step"
    )
    print(
        f"a commit takes {commit * 1000:.2f} ms on the writer thread, holding the steps of up to "
        f"{COMMIT_SECONDS} s (it overlaps the training steps)"
    )


def fill(store: Store, rollouts: int) -> None:
    steps = rollouts // 64
    with store.connect(read_only=False) as con:
        con.execute(
            "INSERT INTO runs (run_id, created_at, task, model, config, status) VALUES "
            "('bench', now(), 'arithmetic', 'tiny', '{}', 'finished')"
        )
        # varied text (md5 digests, so no completion repeats itself) of 20 to 260 characters;
        # rewards spread over [0, 1); one completion in 1,000 repeats a phrase, as a hacked reward would;
        # token ids one per character, as the tiny model's, and an answer column per prompt
        con.execute(f"""INSERT INTO rollouts
            SELECT *, '0123456789ab', list_transform(range(length(completion)), lambda i: (i * 7 + step) % 50),
                   '{{"answer": "' || (step * 8 + group_id) % 200 || '"}}', false
            FROM (SELECT 'bench', s, g, k, 'prompt ' || (s * 8 + g) % 5000 || ' ' || repeat('x', 190),
                   CASE WHEN (s * 8 + g) % 125 = 0 AND k = 0 THEN repeat('the answer is 42. ', 12)
                        ELSE substr(md5(s || '-' || g || '-' || k) || md5(k || '+' || s) || md5(g || '*' || s)
                             || md5(s || '/' || k) || md5(k || '%' || g) || md5(s || '#' || g)
                             || md5(g || '@' || k) || md5(s || '!' || k || g), 1, 20 + (s * 13 + k * 7) % 240) END,
                   ((s * 31 + g * 17 + k * 7) % 100) / 100.0, 0.0, 5 + (s * 13 + k * 7) % 60, (s + k) % 17 = 0
            FROM range(1, {steps} + 1) t(s), range(8) u(g), range(8) v(k)) AS r(run_id, step, group_id, sample_idx,
                 prompt, completion, reward, advantage, num_tokens, truncated)""")
        con.execute("""INSERT INTO reward_values
            SELECT run_id, step, group_id, sample_idx, name, reward
            FROM rollouts, (VALUES ('correct'), ('format')) f(name)""")
        con.execute("""INSERT INTO steps (run_id, step, reward_mean, reward_std, frac_zero_std, kl, loss)
            SELECT 'bench', step, avg(reward), stddev(reward), 0.1, 0.01, 0.0 FROM rollouts GROUP BY step""")
        con.execute("CHECKPOINT")


def query_latencies(rollouts: int) -> None:
    workspace = Path(tempfile.mkdtemp(prefix="bench-store-1m-"))
    store = Store(workspace)
    started = time.perf_counter()
    fill(store, rollouts)
    size = (workspace / "store.duckdb").stat().st_size / 2**20
    print(f"\n{rollouts:,} rollouts written in {time.perf_counter() - started:.1f} s; {size:.0f} MiB on disk\n")
    print("| named query | median ms (of 5) |\n|---|---|")
    for name in NAMED_QUERIES:
        sql = named_sql(name)
        times = []
        for _ in range(5):
            started = time.perf_counter()
            run_sql(store, sql)
            times.append(time.perf_counter() - started)
        print(f"| {name} | {statistics.median(times) * 1000:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rollouts", type=int, default=1_000_000)
    args = parser.parse_args()
    write_share(args.steps)
    query_latencies(args.rollouts)


if __name__ == "__main__":
    main()
