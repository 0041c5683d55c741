"""The seed's four claims about GRPO, measured (workbench.engine.lab): the "GRPO lab" tables of docs/lab.md.

    python bench/lab.py [--parts memory variance signal beta] [--models tiny smollm2]

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
Prints a markdown table per part.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile

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


def beta(steps: int) -> None:
    workspace = tempfile.mkdtemp(prefix="bench-lab-")
    base = Config(steps=steps, eval_steps=steps // 5, checkpoint_every=100_000)
    run_sweep(base, "arithmetic", {"beta": [0.0, 0.04, 0.2]}, [0, 1, 2], workspace, parallel=2)
    store = Store(workspace)
    sweep_id = store.sweeps().sweep_id.iloc[0]
    runs = store.sweep(sweep_id)
    task = load_task("arithmetic")
    measured = {}
    for run in runs.itertuples():
        config = dataclasses.replace(base, beta=run.beta, seed=run.seed)
        policy = load_policy(config)
        policy.load_adapter(checkpoint_folder(workspace, run.run_id))
        evals = store.evals(run.run_id)
        measured[run.run_id] = dict(
            kl=lab.kl_to_reference(policy, task.eval_rows[:32], config),
            held_out=evals.greedy_accuracy.iloc[-1],
            held_out_before=evals.greedy_accuracy.iloc[0],
        )
    rows = []
    for value, seeds in runs.groupby("beta"):
        kls = [measured[run_id]["kl"] for run_id in seeds.run_id]
        held_out = [measured[run_id]["held_out"] for run_id in seeds.run_id]
        rows.append(
            dict(
                beta=value,
                final_reward=seeds.final_reward.median(),
                final_reward_seeds=", ".join(f"{r:.3f}" for r in seeds.final_reward),
                held_out_greedy_accuracy=statistics.median(held_out),
                held_out_seeds=", ".join(f"{a:.3f}" for a in held_out),
                kl_to_reference=statistics.median(kls),
                kl_seeds=", ".join(f"{k:.3f}" for k in kls),
            )
        )
    before = statistics.mean(m["held_out_before"] for m in measured.values())
    print(f"held-out greedy accuracy of the base model: {before:.3f}")
    print(table(rows, list(rows[0])), "\n")
    print(f"curves: plots.sweep_curves(store.sweep({sweep_id!r}), store.sweep_steps({sweep_id!r})), store {workspace}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["memory", "variance", "signal", "beta"])
    parser.add_argument("--models", nargs="+", default=["tiny", "smollm2"])
    parser.add_argument("--steps", type=int, default=30, help="steps of each memory run on the tiny model")
    parser.add_argument("--real-steps", type=int, default=3, help="steps of each memory run on SmolLM2")
    parser.add_argument("--train-steps", type=int, default=100, help="PPO steps before the variance measurement")
    parser.add_argument("--resamples", type=int, default=16)
    parser.add_argument("--beta-steps", type=int, default=500)
    args = parser.parse_args()
    if "memory" in args.parts:
        memory(args.models, args.steps, args.real_steps)
    if {"variance", "signal"} & set(args.parts):
        variance_and_signal(args.parts, args.train_steps, args.resamples)
    if "beta" in args.parts:
        beta(args.beta_steps)


if __name__ == "__main__":
    main()
