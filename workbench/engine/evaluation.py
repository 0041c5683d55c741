"""Held-out evaluation: how the policy does on prompts it never trains on (TRL's eval_dataset, nanochat's pass@k).

For the first `eval_max_prompts` held-out prompts, `evaluate` samples k = `eval_num_generations`
completions each at the run's temperature and top_p, and one greedy completion each, and scores
them all with the run's reward functions. A completion is correct when its reward is at least
`eval_success_reward`. It reports:

    reward_mean         mean reward of the sampled completions (the training reward's held-out twin)
    greedy_reward_mean  mean reward of the greedy completions
    greedy_accuracy     share of prompts whose greedy completion is correct
    pass_at_1, pass_at_k  the unbiased estimator over the k samples (Chen et al. 2021, as nanochat)

An evaluation leaves torch's RNG as it found it, so a run samples the same training rollouts
with evaluation on or off.
"""

from __future__ import annotations

import math
import time

from workbench.config import Config, ConfigError
from workbench.engine.checkpoint import rng_state, set_rng_state
from workbench.engine.policy import Policy
from workbench.engine.rollout import sample_groups
from workbench.rewards.scoring import Scorer
from workbench.rewards.tasks import EVAL_FILES, Task

GREEDY_TOP_P = 0.0  # nucleus sampling keeps the top token always: top_p 0 keeps it alone, greedy decoding


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k completions drawn from n, of which c are correct, is correct) = 1 - C(n-c, k) / C(n, k).

    Chen et al. 2021 (Codex), eq. 1: unbiased, unlike 1 - (1 - c/n)^k. C(n-c, k) is 0 when n - c < k."""
    assert 0 <= c <= n and 1 <= k <= n
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def check_held_out(task: Task, config: Config) -> None:
    """A run that evaluates needs held-out prompts: say so before any model loads."""
    if config.eval_steps > 0 and not task.eval_rows:
        raise ConfigError(
            f"eval_steps is {config.eval_steps} but task {task.name} has no held-out prompts: add an eval file "
            f"({' or '.join(EVAL_FILES)}) to its folder, or hold some prompts out with eval_split (e.g. 0.1)"
        )


def due(config: Config, step: int) -> bool:
    """Whether a run evaluates after `step`: every eval_steps steps, at step 0 (the base model) and at the last."""
    return config.eval_steps > 0 and (step % config.eval_steps == 0 or step == config.steps)


def evaluate(policy: Policy, scorer: Scorer, eval_rows: list[dict], config: Config, step: int) -> dict:
    """The policy's held-out metrics after `step`: one row of the store's `evals` table, less its run_id."""
    started = time.perf_counter()
    rows = eval_rows[: config.eval_max_prompts]
    k = config.eval_num_generations
    rng = rng_state()  # the training rollouts must not depend on whether the run evaluates
    sampled = _rewards(policy, scorer, rows, k, config.top_p, config, step)  # (P * k,)
    greedy = _rewards(policy, scorer, rows, 1, GREEDY_TOP_P, config, step)  # (P,)
    set_rng_state(rng)
    correct = [_correct(r, config) for r in sampled]
    counts = [sum(correct[i * k : (i + 1) * k]) for i in range(len(rows))]  # correct samples per prompt
    return dict(
        step=step,
        num_prompts=len(rows),
        num_generations=k,
        reward_mean=_mean(sampled),
        greedy_reward_mean=_mean(greedy),
        greedy_accuracy=sum(_correct(r, config) for r in greedy) / len(rows),
        pass_at_1=sum(pass_at_k(k, c, 1) for c in counts) / len(rows),
        pass_at_k=sum(pass_at_k(k, c, k) for c in counts) / len(rows),
        seconds=time.perf_counter() - started,
    )


def _rewards(policy, scorer, rows, k, top_p, config, step) -> list[float | None]:
    """k completions for each row's prompt, scored: their rewards, group by group.  (P * k,)"""
    prompt_ids = [policy.encode_prompt(row["prompt"]) for row in rows]
    rollouts = sample_groups(policy, prompt_ids, k, config.max_new_tokens, config.temperature, top_p)
    rows = [row for row in rows for _ in range(k)]
    return scorer.score(rows, rollouts.completions, rollouts.completion_id_lists, global_step=step).rewards


def _correct(reward: float | None, config: Config) -> bool:
    return reward is not None and reward >= config.eval_success_reward


def _mean(rewards: list[float | None]) -> float | None:
    """Mean of the scored rewards (None: no function scored any)."""
    scored = [r for r in rewards if r is not None]
    return sum(scored) / len(scored) if scored else None
