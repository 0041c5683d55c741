"""The seed's four claims about GRPO, the KL grid and GSPO, measured (workbench.engine.lab): the "GRPO lab", "The
KL grid" and "GSPO against GRPO" tables of docs/lab.md.

    python bench/lab.py [--parts memory variance signal beta kl gspo] [--models tiny smollm2] [--parallel 2]

a. memory: peak memory and seconds per step of GRPO and of PPO with its critic, each run in its own
   process (a sweep over advantage_estimator, scale_rewards 'batch' for both, 3 seeds, --steps
   steps) on the tiny model with arithmetic, and on SmolLM2-135M-Instruct with short_answers (one
   seed, --real-steps) when it is present; beside them the weights each model holds in memory.
b. variance: a PPO run trains the policy and its critic for --train-steps on arithmetic; then, under
   that policy, 16 resamples of 8 prompts x 16 completions, and for each baseline (none, the group
   mean at K = 2, 4, 8, 16, leave-one-out, the critic) the advantages' variance and mean square
   and the policy gradient's variance across resamples.
c. signal: from the same samples, the share of groups whose rewards are all equal against K, beside
   p^K + (1 - p)^K (arithmetic's reward is 0 or 1).
d. beta: beta 0, 0.04 and 0.2, three seeds each, --beta-steps steps on arithmetic, evaluated on its
   held-out prompts five times a run: the final training reward (the mean of the last 5 steps), the
   held-out greedy accuracy at the end, and the KL to the reference measured afterwards on 32
   held-out prompts x 8 samples (`lab.kl_to_reference`, so beta 0 is measured too); medians over seeds.
e. kl: the KL grid, kl_estimator k1, k2, k3 x its placement (in the loss, or use_kl_in_reward), at beta --kl-beta,
   three seeds, --kl-steps steps on arithmetic, beside beta 0; measured as in d, plus the held-out sampled reward
   (--parallel runs at once; 11 minutes of CPU at the defaults).
f. gspo: importance_sampling_level token (GRPO) against sequence (GSPO) with num_iterations --gspo-iterations (on
   policy, one update per batch, their gradients are the same), three seeds, measured as in e with the clipped
   share; then the per-token ratios of one group of the GSPO run beside each completion's sequence ratio.
Prints a markdown table per part: medians over seeds with their range, "median (lowest-highest)".
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile

import numpy as np
import pandas as pd

from workbench import Config, Store, load_task
from workbench.engine import lab
from workbench.engine.checkpoint import checkpoint_folder
from workbench.engine.hub import ModelLoadError, resolve_model
from workbench.engine.policy import load_policy
from workbench.engine.ppo import load_critic
from workbench.engine.sweep import run_sweep, summary
from workbench.engine.trainer import train

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
REAL_MODEL = dict(model=SMOLLM2, prompts_per_step=4, max_new_tokens=32, learning_rate=2e-4)  # bench/tasks.py's
BOTH = dict(scale_rewards="batch", checkpoint_every=100_000)  # a scale both estimators take
BETA_MEASURES = ["final_reward", "held_out", "kl_to_reference"]
KL_MEASURES = [*BETA_MEASURES, "held_out_reward"]


def table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def available(model: str) -> bool:
    try:
        resolve_model(model)
    except ModelLoadError:
        return False
    return True


def memory(models: list[str], steps: int, real_steps: int) -> None:
    rows = []
    for model in models:
        if model == "smollm2" and not available(SMOLLM2):
            print(f"{SMOLLM2} is not installed (docs/models.md says how): its rows are left out\n")
            continue
        task, base, seeds = "arithmetic", Config(steps=steps, **BOTH), [0, 1, 2]
        if model == "smollm2":
            task, base, seeds = "short_answers", Config(steps=real_steps, **BOTH, **REAL_MODEL), [0]
        workspace = tempfile.mkdtemp(prefix="bench-lab-")
        run_sweep(base, task, {"advantage_estimator": ["grpo", "ppo"]}, seeds, workspace)
        sweep_id = Store(workspace).sweeps().sweep_id.iloc[0]
        weights = lab.model_mib(load_policy(base).model)
        for point in summary(Store(workspace).sweep(sweep_id)).to_dict("records"):
            ppo = point["advantage_estimator"] == "ppo"
            rows.append(
                dict(
                    model=model,
                    estimator=point["advantage_estimator"],
                    seeds=point["seeds"],
                    weights_mib=weights * (2 if ppo else 1),
                    peak_mib=point["peak_memory_mib"],
                    seconds_per_step=1 / point["steps_per_second"],
                )
            )
    print(table(rows, ["model", "estimator", "seeds", "weights_mib", "peak_mib", "seconds_per_step"]), "\n")


def trained_policy_and_critic(train_steps: int):
    """A PPO run on arithmetic: its policy and critic as they end."""
    config = Config(advantage_estimator="ppo", scale_rewards="batch", steps=train_steps, checkpoint_every=100_000)
    workspace = tempfile.mkdtemp(prefix="bench-lab-")
    events = list(train(config, load_task("arithmetic"), workspace))
    folder = checkpoint_folder(workspace, events[0].run_id)
    policy, critic = load_policy(config), load_critic(config)
    policy.load_adapter(folder)
    critic.load(folder / "critic")
    return config, policy, critic


def variance_and_signal(parts: list[str], train_steps: int, resamples: int) -> None:
    config, policy, critic = trained_policy_and_critic(train_steps)
    groups = lab.sample_groups_again(policy, load_task("arithmetic"), config, resamples, group_size=16)
    if "variance" in parts:
        rows = lab.baseline_variance(policy, groups, config, critic)
        columns = ["baseline", "completions", "advantage_var", "advantage_mean_square"]
        print(table(rows, [*columns, "gradient_variance", "relative_gradient_variance"]), "\n")
    if "signal" in parts:
        print(table(lab.signal_fraction(groups), ["K", "measured", "p", "predicted", "predicted_per_prompt"]), "\n")


def measured_sweep(
    base: Config, grid: dict[str, list], seeds: list[int], parallel: int = 2
) -> tuple[pd.DataFrame, Store, str]:
    """Train the grid on arithmetic (a sweep, `parallel` runs at once, evaluated on its held-out prompts as `base`
    says), then measure each run: the KL to the reference afterwards on 32 held-out prompts x 8 samples
    (`lab.kl_to_reference`, the same k1 for every estimator and for beta 0), and held-out greedy accuracy and sampled
    reward at its first and last evaluation.  -> one row per run (`Store.sweep`'s), the store, the sweep id"""
    workspace = tempfile.mkdtemp(prefix="bench-lab-")
    run_sweep(base, "arithmetic", grid, seeds, workspace, parallel=parallel)
    store = Store(workspace)
    sweep_id = store.sweeps().sweep_id.iloc[0]
    runs = store.sweep(sweep_id)
    task, measured = load_task("arithmetic"), []
    for run in runs.itertuples():
        config = dataclasses.replace(base, **run.grid, seed=run.seed)
        policy = load_policy(config)
        policy.load_adapter(checkpoint_folder(workspace, run.run_id))
        evals, steps = store.evals(run.run_id), store.steps(run.run_id)
        measured.append(
            dict(
                kl_to_reference=lab.kl_to_reference(policy, task.eval_rows[:32], config),
                held_out=evals.greedy_accuracy.iloc[-1],
                held_out_before=evals.greedy_accuracy.iloc[0],
                held_out_reward=evals.reward_mean.iloc[-1],
                clip_frac=steps.clip_frac.mean(),
            )
        )
    return pd.concat([runs, pd.DataFrame(measured)], axis=1), store, sweep_id


def spread(values) -> str:
    """The median over seeds and their range: '0.875 (0.844-0.906)'."""
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def by_point(runs: pd.DataFrame, measures: list[str]) -> list[dict]:
    """One row per grid point: its values, its seeds, and each measure's `spread` over them."""
    return [
        dict(point=point, seeds=len(seeds), **{m: spread(seeds[m].tolist()) for m in measures})
        for point, seeds in runs.groupby("point", sort=False)
    ]


def beta(steps: int) -> None:
    base = Config(steps=steps, eval_steps=steps // 5, checkpoint_every=100_000)
    runs, _, sweep_id = measured_sweep(base, {"beta": [0.0, 0.04, 0.2]}, [0, 1, 2])
    print(f"held-out greedy accuracy of the base model: {runs.held_out_before.mean():.3f}")
    print(table(by_point(runs, BETA_MEASURES), ["point", "seeds", *BETA_MEASURES]))
    print(f"\ncurves: plots.sweep_curves(store.sweep({sweep_id!r}), store.sweep_steps({sweep_id!r}))\n")


def kl_grid(steps: int, beta_value: float, parallel: int) -> None:
    """Each KL estimator in the loss and in the reward at one beta, with beta 0 (no KL anywhere) beside them."""
    base = Config(steps=steps, eval_steps=steps // 3, beta=beta_value, checkpoint_every=100_000)
    grid = {"kl_estimator": ["k1", "k2", "k3"], "use_kl_in_reward": [False, True]}
    runs, _, _ = measured_sweep(base, grid, [0, 1, 2], parallel)
    control, _, _ = measured_sweep(dataclasses.replace(base, beta=0.0), {"beta": [0.0]}, [0, 1, 2], parallel)
    print(f"held-out greedy accuracy of the base model: {runs.held_out_before.mean():.3f}")
    rows = by_point(control, KL_MEASURES) + by_point(runs, KL_MEASURES)
    print(table(rows, ["point", "seeds", *KL_MEASURES]), "\n")


def gspo(steps: int, iterations: int, beta_value: float, parallel: int) -> None:
    """GRPO's token ratio against GSPO's sequence ratio on the same work, and one group's ratios both ways."""
    base = Config(
        steps=steps, eval_steps=steps // 3, beta=beta_value, num_iterations=iterations, checkpoint_every=100_000
    )
    grid = {"importance_sampling_level": ["token", "sequence"]}
    runs, store, _ = measured_sweep(base, grid, [0, 1, 2], parallel)
    measures = [*KL_MEASURES, "clip_frac"]
    print(table(by_point(runs, measures), ["point", "seeds", *measures]), "\n")
    run_id = runs[(runs.importance_sampling_level == "sequence") & (runs.seed == 0)].run_id.iloc[0]
    print(table(*one_group_ratios(store, run_id, base)), "\n")


def one_group_ratios(store: Store, run_id: str, config: Config) -> tuple[list[dict], list[str]]:
    """The per-token ratios pi_theta / pi_old at the last of `num_iterations` updates of the run's last step, for
    the group whose tokens' log ratios spread the widest, beside each completion's sequence ratio (GSPO's: exp of
    the mean log ratio) and which tokens each level clips (for the completion's advantage sign)."""
    tokens = store.query(
        """SELECT t.group_id, t.sample_idx, t.tokens, t.ratio, r.advantage FROM tokens t
           JOIN rollouts r USING (run_id, step, group_id, sample_idx)
           WHERE run_id = $1 AND step = (SELECT max(step) FROM tokens WHERE run_id = $1)
           ORDER BY group_id, sample_idx""",
        [run_id],
    )
    tokens["log_ratio"] = tokens.ratio.map(lambda ratio: np.log(np.asarray(ratio, dtype=float)))
    widths = tokens.groupby("group_id").log_ratio.agg(lambda rows: np.ptp(np.concatenate(rows.tolist())))
    group = tokens[tokens.group_id == widths.idxmax()]
    low, high = 1 - config.clip_epsilon, 1 + (config.epsilon_high or config.clip_epsilon)
    rows = {}
    for one in group.itertuples():
        ratio, sequence = np.exp(one.log_ratio), float(np.exp(one.log_ratio.mean()))
        cut = (lambda r: r > high) if one.advantage > 0 else (lambda r: r < low)  # where min(...) takes the clip
        tokens = "·".join(t.replace(" ", "␣").replace("|", "\\|") for t in one.tokens)
        if tokens in rows:  # the same completion again: counted, not repeated
            rows[tokens]["completions"] += 1
            continue
        rows[tokens] = dict(
            tokens=tokens,
            completions=1,
            advantage=float(one.advantage),
            token_ratios=" ".join(f"{r:.3f}" for r in ratio),
            sequence_ratio=sequence,
            tokens_clipped_token_level=f"{int(cut(ratio).sum())}/{len(ratio)}",
            clipped_sequence_level="yes" if cut(sequence) else "no",
        )
    print(f"run {run_id}, group {int(widths.idxmax())} of its last step, clip range [{low:.2f}, {high:.2f}]:")
    rows = list(rows.values())
    return rows, list(rows[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["memory", "variance", "signal", "beta", "kl", "gspo"])
    parser.add_argument("--models", nargs="+", default=["tiny", "smollm2"])
    parser.add_argument("--steps", type=int, default=30, help="steps of each memory run on the tiny model")
    parser.add_argument("--real-steps", type=int, default=3, help="steps of each memory run on SmolLM2")
    parser.add_argument("--train-steps", type=int, default=100, help="PPO steps before the variance measurement")
    parser.add_argument("--resamples", type=int, default=16)
    parser.add_argument("--beta-steps", type=int, default=500)
    parser.add_argument("--kl-steps", type=int, default=50, help="steps of each run of the KL grid and of gspo")
    parser.add_argument("--kl-beta", type=float, default=0.1, help="beta of the KL grid and of gspo")
    parser.add_argument("--gspo-iterations", type=int, default=2, help="num_iterations of gspo's runs")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once in the kl and gspo sweeps")
    args = parser.parse_args()
    if "memory" in args.parts:
        memory(args.models, args.steps, args.real_steps)
    if {"variance", "signal"} & set(args.parts):
        variance_and_signal(args.parts, args.train_steps, args.resamples)
    if "beta" in args.parts:
        beta(args.beta_steps)
    if "kl" in args.parts:
        kl_grid(args.kl_steps, args.kl_beta, args.parallel)
    if "gspo" in args.parts:
        gspo(args.kl_steps, args.gspo_iterations, args.kl_beta, args.parallel)


if __name__ == "__main__":
    main()
