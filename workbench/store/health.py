"""Health checks: named signs that a run is going wrong, each with what it saw and what to try.

They read a run's `steps` rows (its `evals`, and its last step's completions), so the trainer checks after
every step, `python -m workbench doctor RUN_ID` checks any stored run (a watched TRL run too), and the app
shows the same words. Each check looks at the last WINDOW steps (same_completion at the last step's
completions); thresholds are the module's constants, chosen so that the sample tasks' healthy runs stay quiet
(tests/test_health.py runs them; bench/first_run.py --tasks all measures every sample task).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter

from workbench.events import Finding

WINDOW = 5  # steps a check averages over
QUIET = 2 * WINDOW  # steps a check stays quiet before a run announces it again (one near its threshold flickers)
# Of groups whose rewards are all equal: 3 in 4. Healthy runs of the sample tasks have half their groups so for
# steps on end (countdown on the tiny model: 5-step means up to 0.7), and train on the other half.
NO_SIGNAL_FRAC = 0.75
TRUNCATED_FRAC = 0.3  # of completions cut at max_new_tokens
KL_HIGH, KL_GROWTH = 0.6, 2.0  # KL's window median above this, and this many times the window's before
CLIP_FRAC = 0.2  # of tokens whose ratio was clipped
LENGTH_FALL = 0.5  # completions shorter than this share of the first window's, from at least LENGTH_MIN tokens
LENGTH_MIN = 4.0
DIVERGENCE = 0.1  # one reward function's mean up this much while another's falls this much
KL_STILL, STILL_STEPS = 1e-4, 2 * WINDOW  # KL below this after this many steps: the adapter has hardly moved
KL_STAYS = 1.0  # KL at least this at each of the last WINDOW steps: the policy stays far from the reference
# A few completion strings (each repeated across SAME_PROMPTS prompts) making up SAME_FRAC of a step's completions:
# the reward pays for them whatever the prompt (a tiny model answered "s2" to every prompt).
SAME_FRAC, SAME_PROMPTS, SAME_FEW = 0.5, 3, 3


CHECKS = (
    "no_signal",
    "truncated",
    "kl_rising",
    "clip_high",
    "length_collapse",
    "reward_hacking",
    "adapter_still",
    "kl_high",
    "same_completion",
)


def diagnose(
    steps: list[dict],
    config: dict,
    evals: list[dict] | tuple = (),
    completions: list[tuple[str, str, float]] | tuple = (),
) -> list[Finding]:
    """The checks that fire on a run's steps so far (rows of the `steps` table, in step order), with its
    config (as stored), its held-out evaluations and its last step's (prompt, completion, reward) triples."""
    if not steps:
        return []
    checks = (no_signal, truncated, kl_rising, kl_high, clip_high, length_collapse, adapter_still)
    found = [check(steps, config) for check in checks]
    found += [reward_hacking(steps, evals), same_completion(steps[-1]["step"], completions)]
    return [finding for finding in found if finding is not None]


def examine(store, run_id: str) -> list[Finding]:
    """The checks that fire on a stored run now (`workbench doctor`, the app's banner)."""
    run = store.run(run_id)
    if run is None:
        raise KeyError(f"no run {run_id!r} in workspace {store.workspace}")
    steps = store.steps(run_id).to_dict(orient="records")
    last = steps[-1]["step"] if steps else None
    completions = store.records(
        "SELECT prompt, completion, reward FROM rollouts WHERE run_id = $1 AND step = $2", [run_id, last]
    )
    triples = [(row["prompt"], row["completion"], row["reward"]) for row in completions]
    return diagnose(steps, run["config"], store.evals(run_id).to_dict(orient="records"), triples)


def no_signal(steps: list[dict], config: dict) -> Finding | None:
    """A full window: a task's first step often has groups all wrong that a few steps of learning split."""
    if len(steps) < WINDOW:
        return None
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
    """Window medians, not single steps or means: a step's KL is noisy (one step of a healthy run can reach 30
    times its neighbours' when a few completions wander off), and a climb holds for most of a window."""
    if len(steps) < 2 * WINDOW:
        return None
    now, before = _median(steps[-WINDOW:], "kl"), _median(steps[-2 * WINDOW : -WINDOW], "kl")
    if now is None or before is None or now < KL_HIGH or now < KL_GROWTH * before:
        return None
    earlier = steps[-2 * WINDOW : -WINDOW]
    return Finding(
        "kl_rising",
        steps[-1]["step"],
        f"KL to the reference rose from {before:.3f} (median over steps {earlier[0]['step']}-{earlier[-1]['step']}) "
        f"to {now:.3f} ({_span(steps)})",
        f"lower learning_rate (now {config.get('learning_rate')}) or raise beta (now {config.get('beta')}); "
        "a KL that keeps climbing is the policy leaving the reference faster than its reward justifies",
    )


def kl_high(steps: list[dict], config: dict) -> Finding | None:
    """KL that stays high, risen or not: kl_rising sees a climb, this sees where it stays."""
    kls = [s.get("kl") for s in steps[-WINDOW:]]
    if len(kls) < WINDOW or not all(_number(kl) and kl >= KL_STAYS for kl in kls):
        return None
    return Finding(
        "kl_high",
        steps[-1]["step"],
        f"KL to the reference stayed at {min(kls):.2f} or more over {_span(steps)} (now {kls[-1]:.2f})",
        "the policy sits far from the reference: when its reward rose as fast, read the completions it "
        "converged to (same_completion, the group view) for a shortcut the reward pays for; otherwise lower "
        f"learning_rate (now {config.get('learning_rate')}) or raise beta (now {config.get('beta')})",
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


def same_completion(step: int, completions: list[tuple[str, str, float]] | tuple) -> Finding | None:
    """A few completion strings (whitespace stripped), each given to at least SAME_PROMPTS different prompts
    and paid the same reward on all of them, that make up at least SAME_FRAC of the step's (prompt,
    completion, reward) triples. Left out: a string confined to fewer prompts (a group that agrees on its own
    prompt's answer is a model that learned it), and one whose reward depends on the prompt (the right
    answer to some of them: word problems whose answer is 4)."""
    strings: Counter = Counter()
    prompts: dict[str, set] = {}
    rewards: dict[str, set] = {}
    for prompt, completion, reward in completions:
        text = completion.strip()
        strings[text] += 1
        prompts.setdefault(text, set()).add(prompt)
        rewards.setdefault(text, set()).add(round(reward, 6) if _number(reward) else None)
    shared = [
        text for text, _ in strings.most_common() if len(prompts[text]) >= SAME_PROMPTS and len(rewards[text]) == 1
    ][:SAME_FEW]
    taken, count = [], 0
    for text in shared:  # the fewest of them that reach the share
        taken.append(text)
        count += strings[text]
        if count >= SAME_FRAC * len(completions):
            break
    else:
        return None
    named = " and ".join(f"{_quoted(t)} ({strings[t] / len(completions):.0%})" for t in taken)
    return Finding(
        "same_completion",
        step,
        f"{named}: {count} of step {step}'s {len(completions)} completions ({count / len(completions):.0%}), "
        f"given to {len(set().union(*(prompts[t] for t in taken)))} different prompts",
        "the reward may pay for this string regardless of the prompt (reward hacking): read the reward "
        "function for a loophole (a pattern that matches too much, a score that ignores the prompt or its "
        "answer) and score these completions by hand; a task whose right answer is truly the same for every "
        "prompt can ignore this",
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
    values = _numbers(steps, column)
    return sum(values) / len(values) if values else None


def _median(steps: list[dict], column: str) -> float | None:
    values = _numbers(steps, column)
    return statistics.median(values) if values else None


def _numbers(steps: list[dict], column: str) -> list[float]:
    return [s[column] for s in steps if _number(s.get(column))]


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


def _quoted(text: str, limit: int = 40) -> str:
    """A completion as a JSON string, cut to `limit` characters: "s2", "" for an empty one."""
    return json.dumps(text if len(text) <= limit else text[:limit] + "...")


def _span(steps: list[dict]) -> str:
    window = steps[-WINDOW:]
    return f"steps {window[0]['step']}-{window[-1]['step']}"
