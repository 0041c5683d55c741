"""Health checks: named signs that a run is going wrong, each with what it saw and what to try.

They read a run's `steps` rows (and its `evals`), so the trainer checks after every step, `python -m
workbench doctor RUN_ID` checks any stored run (a watched TRL run too), and the app shows the same words.
Each check looks at the last WINDOW steps; thresholds are the module's constants, chosen so that the
sample tasks' healthy runs stay quiet (tests/test_health.py runs them).
"""

from __future__ import annotations

import json
import math

from workbench.events import Finding

WINDOW = 5  # steps a check averages over
NO_SIGNAL_FRAC = 0.6  # of groups whose rewards are all equal
TRUNCATED_FRAC = 0.3  # of completions cut at max_new_tokens
KL_HIGH, KL_GROWTH = 0.1, 2.0  # KL above this, and this many times what it was a window earlier
CLIP_FRAC = 0.2  # of tokens whose ratio was clipped
LENGTH_FALL = 0.5  # completions shorter than this share of the first window's, from at least LENGTH_MIN tokens
LENGTH_MIN = 4.0
DIVERGENCE = 0.1  # one reward function's mean up this much while another's falls this much
KL_STILL, STILL_STEPS = 1e-4, 2 * WINDOW  # KL below this after this many steps: the adapter has hardly moved


CHECKS = (
    "no_signal",
    "truncated",
    "kl_rising",
    "clip_high",
    "length_collapse",
    "reward_hacking",
    "adapter_still",
)


def diagnose(steps: list[dict], config: dict, evals: list[dict] | tuple = ()) -> list[Finding]:
    """The checks that fire on a run's steps so far (rows of the `steps` table, in step order), with its
    config (as stored) and its held-out evaluations."""
    if not steps:
        return []
    found = [
        check(steps, config) for check in (no_signal, truncated, kl_rising, clip_high, length_collapse, adapter_still)
    ]
    found.append(reward_hacking(steps, evals))
    return [finding for finding in found if finding is not None]


def examine(store, run_id: str) -> list[Finding]:
    """The checks that fire on a stored run now (`workbench doctor`, the app's banner)."""
    run = store.run(run_id)
    if run is None:
        raise KeyError(f"no run {run_id!r} in workspace {store.workspace}")
    steps = store.steps(run_id).to_dict(orient="records")
    return diagnose(steps, run["config"], store.evals(run_id).to_dict(orient="records"))


def no_signal(steps: list[dict], config: dict) -> Finding | None:
    frac = _mean(steps[-WINDOW:], "frac_zero_std")
    if frac is None or frac < NO_SIGNAL_FRAC:
        return None
    return Finding(
        "no_signal",
        steps[-1]["step"],
        f"{frac:.0%} of groups over {_span(steps)} had rewards all equal, so their advantages were 0 and "
        "they taught nothing",
        f"make the reward graded (partial credit) rather than pass/fail; raise group_size (now "
        f"{config.get('group_size')}) so that a group more often holds both outcomes; use prompts the "
        "model solves sometimes, not never or always; or turn on dynamic_sampling to resample such groups",
    )


def truncated(steps: list[dict], config: dict) -> Finding | None:
    frac = _mean(steps[-WINDOW:], "truncated_frac")
    if frac is None or frac < TRUNCATED_FRAC:
        return None
    return Finding(
        "truncated",
        steps[-1]["step"],
        f"{frac:.0%} of completions over {_span(steps)} hit max_new_tokens ({config.get('max_new_tokens')}) "
        "before their end",
        "raise max_new_tokens; or turn on mask_truncated_completions, so that cut-off completions do not "
        "train; or reward finishing (a format or length term)",
    )


def kl_rising(steps: list[dict], config: dict) -> Finding | None:
    if len(steps) <= WINDOW:
        return None
    now, before = steps[-1].get("kl"), steps[-1 - WINDOW].get("kl")
    if not _number(now) or not _number(before) or now < KL_HIGH or now < KL_GROWTH * before:
        return None
    return Finding(
        "kl_rising",
        steps[-1]["step"],
        f"KL to the reference rose from {before:.3f} at step {steps[-1 - WINDOW]['step']} to {now:.3f}",
        f"lower learning_rate (now {config.get('learning_rate')}) or raise beta (now {config.get('beta')}); "
        "a KL that keeps climbing is the policy leaving the reference faster than its reward justifies",
    )


def clip_high(steps: list[dict], config: dict) -> Finding | None:
    frac = _mean(steps[-WINDOW:], "clip_frac")
    if frac is None or frac < CLIP_FRAC:
        return None
    return Finding(
        "clip_high",
        steps[-1]["step"],
        f"{frac:.0%} of tokens over {_span(steps)} had their ratio clipped (outside 1 ± clip_epsilon)",
        f"each update moves the policy far: lower learning_rate (now {config.get('learning_rate')}) or "
        f"num_iterations (now {config.get('num_iterations')})",
    )


def length_collapse(steps: list[dict], config: dict) -> Finding | None:
    if len(steps) < 2 * WINDOW:
        return None
    first, last = _mean(steps[:WINDOW], "completion_tokens_mean"), _mean(steps[-WINDOW:], "completion_tokens_mean")
    if first is None or last is None or first < LENGTH_MIN or last > LENGTH_FALL * first:
        return None
    return Finding(
        "length_collapse",
        steps[-1]["step"],
        f"completions shrank from {first:.1f} tokens on average (first {WINDOW} steps) to {last:.1f} ({_span(steps)})",
        "check whether a reward favours short answers (a length or format term that is easier than the "
        "task); the 'grpo' loss_type averages per completion, which favours short correct ones "
        "('dr_grpo' or 'dapo' do not); read the shortest completions in the group view",
    )


def reward_hacking(steps: list[dict], evals: list[dict] | tuple) -> Finding | None:
    """Suspected when one reward function's mean climbs while another's falls, or the training reward
    climbs while the held-out reward falls."""
    if len(steps) >= 2 * WINDOW:
        first, last = _function_means(steps[:WINDOW]), _function_means(steps[-WINDOW:])
        change = {name: last[name] - first[name] for name in first.keys() & last.keys()}
        rising = max(change, key=change.get, default=None)
        falling = min(change, key=change.get, default=None)
        if rising and change[rising] >= DIVERGENCE and change[falling] <= -DIVERGENCE:
            return Finding(
                "reward_hacking",
                steps[-1]["step"],
                f"reward function {rising} rose by {change[rising]:.2f} while {falling} fell by "
                f"{-change[falling]:.2f} (first {WINDOW} steps against {_span(steps)})",
                _HACKING_ADVICE,
            )
    scored = [e for e in evals if _number(e.get("reward_mean"))]
    if len(scored) >= 2 and len(steps) >= 2 * WINDOW:
        held_out = scored[-1]["reward_mean"] - scored[0]["reward_mean"]
        training = _mean(steps[-WINDOW:], "reward_mean") - _mean(steps[:WINDOW], "reward_mean")
        if training >= DIVERGENCE and held_out <= -DIVERGENCE:
            return Finding(
                "reward_hacking",
                steps[-1]["step"],
                f"the training reward rose by {training:.2f} while the held-out reward fell by {-held_out:.2f} "
                f"(steps {scored[0]['step']} to {scored[-1]['step']})",
                _HACKING_ADVICE,
            )
    return None


_HACKING_ADVICE = (
    "read the completions that score highest (SQL: ... ORDER BY reward DESC, or the reward buckets): a "
    "reward that can be earned without solving the task gets earned that way. Tighten the function that "
    "rises, weight the one that falls more, or hold out prompts (eval_steps) to see what generalises"
)


def adapter_still(steps: list[dict], config: dict) -> Finding | None:
    if len(steps) < STILL_STEPS:
        return None
    kl = _mean(steps[-WINDOW:], "kl")
    if kl is None or kl >= KL_STILL:
        return None
    return Finding(
        "adapter_still",
        steps[-1]["step"],
        f"after {len(steps)} steps the policy's KL to the reference is {kl:.1e}: the adapter has hardly moved",
        f"raise learning_rate (now {config.get('learning_rate')}; LoRA on small models wants ~1e-4 to 1e-3, "
        f"on billion-parameter ones ~1e-5), or lora_alpha (now {config.get('lora_alpha')})",
    )


def _mean(steps: list[dict], column: str) -> float | None:
    values = [s[column] for s in steps if _number(s.get(column))]
    return sum(values) / len(values) if values else None


def _number(value) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


def _function_means(steps: list[dict]) -> dict[str, float]:
    """Each reward function's mean over the steps (reward_function_means, a dict or its JSON text)."""
    values: dict[str, list[float]] = {}
    for s in steps:
        means = s.get("reward_function_means") or {}
        for name, value in (json.loads(means) if isinstance(means, str) else means).items():
            if _number(value):
                values.setdefault(name, []).append(value)
    return {name: sum(v) / len(v) for name, v in values.items()}


def _span(steps: list[dict]) -> str:
    window = steps[-WINDOW:]
    return f"steps {window[0]['step']}-{window[-1]['step']}"
