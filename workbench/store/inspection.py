"""Reading a run's groups: a step's groups on one screen, one prompt before and after training, and the
completions bucketed by their reward functions' values.

    from workbench import Store
    from workbench.store import inspection
    store = Store("runs", create=False)
    inspection.step_groups(store, run_id, 3, sort_by="spread")   # a row per group, widest spread first
    inspection.recurring_prompts(store, run_id)                  # the prompts sampled at two steps or more
    inspection.before_after(store, run_id, prompt)               # its first and latest step, side by side
    inspection.reward_buckets(store, run_id, steps=(1, 10))      # completions by their reward values
    inspection.groups_table(groups), inspection.group_buckets(groups)  # the same for groups in memory
    inspection.completion_tokens(store, run_id, step, group_id, sample_idx)  # one completion, token by token

Buckets are how Stanford's CS336 (assignment 5) teaches reading rewards: count the completions by
their vector of reward-function values, e.g. (format 1, answer 0), and read a few of each, before
trusting the mean reward. The app (Runs, Train, the dry-run) and `python -m workbench buckets | tokens`
use these.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pandas as pd

from workbench.events import Group
from workbench.formatting import cut
from workbench.store.database import Store, StoreError, stored_prompt

SORTS = {  # sort_by -> (column, ascending): the groups that teach the most come first
    "group": ("group_id", True),
    "spread": ("spread", False),
    "std": ("std", False),
    "mean": ("mean", False),
}
PROMPT_WIDTH = 60  # the characters of a prompt an error message quotes
STEP_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


class InspectionError(StoreError):
    """What was asked for is not in the store (a run, a step, a prompt) or is malformed; the message says which."""


# a step's groups


def step_groups(store: Store, run_id: str, step: int, sort_by: str = "group") -> pd.DataFrame:
    """A stored step's groups, one row each (`groups_table`'s columns), sorted by `sort_by` (one of SORTS)."""
    rows = store.query(
        """SELECT group_id, sample_idx, prompt, reward, advantage, coalesce(dropped, false) AS dropped FROM rollouts
           WHERE run_id = $1 AND step = $2 ORDER BY group_id, sample_idx""",
        [run_id, step],
    )
    if rows.empty:
        _check_run(store, run_id)  # only now: each read opens the store (~10 ms)
        raise InspectionError(f"run {run_id} has no step {step} stored ({_stored_steps(store, run_id)})")
    return _per_group(rows.assign(prompt=rows.prompt.map(stored_prompt)), sort_by)


def groups_table(groups: list[Group], sort_by: str = "group") -> pd.DataFrame:
    """Groups in memory (a live step, a dry-run), one row each: group_id, prompt, rewards and advantages
    (lists, by sample index), mean, std (n - 1, as the advantages use) and spread (max - min) of the scored
    rewards, dropped; sorted by `sort_by` (one of SORTS). A group with fewer than two scored rewards has a
    NaN std."""
    return _per_group(_flat(groups), sort_by)


def _per_group(rows: pd.DataFrame, sort_by: str) -> pd.DataFrame:
    """Flat completions (group_id, sample_idx, prompt, reward, advantage, dropped) -> a row per group."""
    if sort_by not in SORTS:
        raise InspectionError(f"sort_by must be one of {', '.join(SORTS)}, not {sort_by!r}")
    by_group = rows.groupby("group_id", sort=True)
    frame = pd.DataFrame(
        {
            "prompt": by_group.prompt.first(),
            "rewards": by_group.reward.agg(_list),
            "advantages": by_group.advantage.agg(_list),
            "mean": by_group.reward.mean(),
            "std": by_group.reward.std(),  # pandas: n - 1, NaN skipped, NaN for fewer than two
            "spread": by_group.reward.max() - by_group.reward.min(),
            "dropped": by_group.dropped.first().astype(bool),
        }
    ).reset_index()
    column, ascending = SORTS[sort_by]
    return frame.sort_values([column, "group_id"], ascending=[ascending, True], kind="stable", ignore_index=True)


# one prompt, before and after


def recurring_prompts(store: Store, run_id: str) -> pd.DataFrame:
    """The prompts the run sampled at two steps or more (tasks cycle their prompts), most steps first:
    prompt (as stored: chat messages are JSON text), steps (a list, ascending), first_step, last_step."""
    frame = store.query(
        """SELECT prompt, min(step) AS first_step, max(step) AS last_step, count(DISTINCT step) AS times
           FROM rollouts WHERE run_id = $1 GROUP BY prompt HAVING count(DISTINCT step) >= 2
           ORDER BY times DESC, first_step, prompt""",
        [run_id],
    )
    if frame.empty:
        _check_run(store, run_id)
    steps = _prompt_steps(store, run_id, frame.prompt.tolist())
    return frame.assign(steps=frame.prompt.map(steps))[["prompt", "steps", "first_step", "last_step"]]


@dataclass(frozen=True)
class BeforeAfter:
    """One prompt's completions at two steps of a run; `before` and `after` have a row per completion:
    group_id, sample_idx, completion, reward, advantage, and each reward function's value by name."""

    run_id: str
    prompt: str | list[dict]
    steps: list[int]  # every step the run sampled the prompt at
    first_step: int
    last_step: int
    before: pd.DataFrame
    after: pd.DataFrame


def before_after(
    store: Store, run_id: str, prompt: str | list[dict], first_step: int | None = None, last_step: int | None = None
) -> BeforeAfter:
    """The prompt's completions (every group of it) at `first_step` and `last_step`: by default the first
    and the latest step the run sampled it at."""
    text = prompt if isinstance(prompt, str) else json.dumps(prompt)  # as `writer.rollout_rows` keeps it
    steps = _prompt_steps(store, run_id, [text]).get(text, [])
    quoted = repr(cut(text, PROMPT_WIDTH))  # as the error messages below name it
    if not steps:
        _check_run(store, run_id)
        raise InspectionError(f"run {run_id} never sampled the prompt {quoted}")
    for given in (first_step, last_step):
        if given is not None and given not in steps:
            raise InspectionError(
                f"run {run_id} did not sample the prompt {quoted} at step {given}; "
                f"it did at step{'s' if len(steps) > 1 else ''} {', '.join(map(str, steps))}"
            )
    first = steps[0] if first_step is None else first_step
    last = steps[-1] if last_step is None else last_step
    if len(steps) == 1 and (first_step is None or last_step is None):
        raise InspectionError(
            f"run {run_id} sampled the prompt {quoted} at step {first} only: there is nothing to compare "
            "(recurring_prompts lists those it sampled at two steps or more)"
        )
    return BeforeAfter(
        run_id, stored_prompt(text), steps, first, last, *_completions_at(store, run_id, text, first, last)
    )


def _completions_at(store: Store, run_id: str, prompt: str, *steps: int) -> list[pd.DataFrame]:
    rows = store.query(
        """SELECT step, group_id, sample_idx, completion, reward, advantage FROM rollouts
           WHERE run_id = $1 AND prompt = $2 AND step IN ($3, $4) ORDER BY step, group_id, sample_idx""",
        [run_id, prompt, *steps],
    )
    rows, _ = _with_values(store, run_id, rows)
    return [rows[rows.step == s].drop(columns="step").reset_index(drop=True) for s in steps]


def _prompt_steps(store: Store, run_id: str, prompts: list[str]) -> dict[str, list[int]]:
    """Each prompt's steps, ascending."""
    if not prompts:
        return {}
    frame = store.query(
        "SELECT DISTINCT prompt, step FROM rollouts WHERE run_id = $1 AND list_contains($2, prompt) ORDER BY step",
        [run_id, prompts],
    )
    return {prompt: rows.step.astype(int).tolist() for prompt, rows in frame.groupby("prompt", sort=False)}


# reward buckets


def reward_buckets(
    store: Store, run_id: str, steps: tuple[int, int] | None = None, examples: int = 3, decimals: int = 2
) -> pd.DataFrame:
    """A run's completions (of the steps first..last, inclusive, when given) bucketed by their vector of
    reward-function values: see `buckets`."""
    first, last = steps if steps is not None else (1, 2**31 - 1)
    if first > last:
        raise InspectionError(
            f"the step range {first}-{last} runs backwards: the first step must not be after the last"
        )
    rows = store.query(
        """SELECT step, group_id, sample_idx, prompt, completion, reward FROM rollouts
           WHERE run_id = $1 AND step BETWEEN $2 AND $3 ORDER BY step, group_id, sample_idx""",
        [run_id, first, last],
    )
    if rows.empty:
        _check_run(store, run_id)
        where = "" if steps is None else f" in step {first}" if first == last else f" in steps {first}-{last}"
        raise InspectionError(f"run {run_id} has no completions stored{where} ({_stored_steps(store, run_id)})")
    rows, names = _with_values(store, run_id, rows)
    return buckets(rows, names, examples, decimals)


def group_buckets(groups: list[Group], examples: int = 3, decimals: int = 2) -> pd.DataFrame:
    """Groups in memory (a dry-run's, a live step's) bucketed by their reward-function values: see `buckets`."""
    rows = _flat(groups)
    names = list(dict.fromkeys(name for group in groups for name in group.reward_values))
    return buckets(rows, names, examples, decimals)


def buckets(rows: pd.DataFrame, names: list[str], examples: int = 3, decimals: int = 2) -> pd.DataFrame:
    """Completions (a row each: completion, reward, and a column per reward function in `names`) bucketed by
    their values of those functions, rounded to `decimals`; one row per bucket, the most common first: a
    column per function (its value; NaN where the function did not score), count, share (of all the
    completions), reward_mean, and `examples`: up to that many of its completions, evenly spaced through
    it (so from early and late steps alike)."""
    if examples < 0:
        raise InspectionError(f"examples must be 0 or more, not {examples}")
    values = rows[names].astype("float64").round(decimals) + 0.0  # + 0.0: -0.0 and 0.0 are one bucket
    keys = [tuple(None if v != v else v for v in row) for row in values.itertuples(index=False)]  # NaN -> None
    result = []
    for key, bucket in rows.groupby(pd.Series(keys, index=rows.index), sort=False):
        picks = [round(i * (len(bucket) - 1) / max(examples - 1, 1)) for i in range(min(examples, len(bucket)))]
        result.append(
            {
                **dict(zip(names, key)),
                "count": len(bucket),
                "share": len(bucket) / len(rows),
                "reward_mean": bucket.reward.mean(),
                "examples": bucket.completion.iloc[picks].tolist(),
            }
        )
    frame = pd.DataFrame(result, columns=[*names, "count", "share", "reward_mean", "examples"])
    return frame.sort_values("count", ascending=False, kind="stable", ignore_index=True)  # ties: as first seen


def parse_steps(text: str) -> tuple[int, int]:
    """'A-B' (or one step 'A') as (A, B); a clear error for anything else."""
    match = STEP_RANGE.match(text or "")
    if not match:
        raise InspectionError(f"a step range is A-B (e.g. 3-10) or one step (e.g. 7), not {text!r}")
    first = int(match.group(1))
    last = int(match.group(2) or first)
    if first < 1:
        raise InspectionError(f"steps start at 1: the range {text!r} starts at {first}")
    if first > last:
        raise InspectionError(f"the step range {text!r} runs backwards: the first step must not be after the last")
    return first, last


# one completion, token by token


@dataclass(frozen=True)
class CompletionTokens:
    """One stored completion with its per-token numbers (`Store.token_view`: token, logprob, ref_logprob,
    ratio, clipped, kl, entropy, contribution)."""

    run_id: str
    step: int
    group_id: int
    sample_idx: int
    prompt: str | list[dict]
    completion: str
    reward: float | None
    advantage: float
    tokens: pd.DataFrame


def completion_tokens(
    store: Store, run_id: str, step: int | None = None, group_id: int = 0, sample_idx: int = 0
) -> CompletionTokens:
    """A completion of a stored step (by default the run's latest) token by token; an InspectionError
    names what is not there: the run, the step, the group, the completion, or the token stats."""
    if step is None:
        _check_run(store, run_id)
        latest = store.query("SELECT max(step) AS step FROM rollouts WHERE run_id = $1", [run_id]).step[0]
        if pd.isna(latest):
            raise InspectionError(f"run {run_id} has no step stored yet")
        step = int(latest)
    rows = store.query(
        """SELECT sample_idx, prompt, completion, reward, advantage, coalesce(dropped, false) AS dropped
           FROM rollouts WHERE run_id = $1 AND step = $2 AND group_id = $3 ORDER BY sample_idx""",
        [run_id, step, group_id],
    )
    if rows.empty:
        _check_run(store, run_id)
        groups = store.query(
            "SELECT min(group_id) AS first, max(group_id) AS last FROM rollouts WHERE run_id = $1 AND step = $2",
            [run_id, step],
        ).iloc[0]
        if pd.isna(groups["last"]):
            raise InspectionError(f"run {run_id} has no step {step} stored ({_stored_steps(store, run_id)})")
        raise InspectionError(
            f"step {step} of run {run_id} has groups {int(groups['first'])}-{int(groups['last'])}, not {group_id}"
        )
    if sample_idx not in set(rows.sample_idx):
        raise InspectionError(f"group {group_id} of step {step} has completions 0-{len(rows) - 1}, not {sample_idx}")
    row = rows.set_index("sample_idx").loc[sample_idx]
    tokens = store.token_view(run_id, step, group_id, sample_idx)
    if tokens.empty:
        raise InspectionError(_why_no_tokens(store, run_id, step, group_id, bool(row.dropped)))
    reward = None if pd.isna(row.reward) else float(row.reward)
    return CompletionTokens(
        run_id, step, group_id, sample_idx, stored_prompt(row.prompt), row.completion, reward, row.advantage, tokens
    )


def _why_no_tokens(store: Store, run_id: str, step: int, group_id: int, dropped: bool) -> str:
    where = f"group {group_id} of step {step}"
    if dropped:
        return f"{where} was dropped by dynamic sampling: it was never trained on, so it has no token stats"
    if not store.run(run_id)["config"].get("log_token_stats", True):
        return f"run {run_id} stored no token stats: it ran with log_token_stats off"
    return f"run {run_id} stored no token stats for {where} (a watched TRL run stores none)"


# reading


def _check_run(store: Store, run_id: str) -> None:
    if store.run(run_id) is None:
        raise InspectionError(f"no run {run_id!r} in workspace {store.workspace}")


def _stored_steps(store: Store, run_id: str) -> str:
    """Which steps a run has stored, in words, for an error message."""
    first, last, count = store.query(
        "SELECT min(step), max(step), count(DISTINCT step) FROM rollouts WHERE run_id = $1", [run_id]
    ).iloc[0]
    if not count:
        return "it has none stored yet"
    return f"its steps: {int(first)}-{int(last)}" if count > 1 else f"its only step: {int(first)}"


def _with_values(store: Store, run_id: str, rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """`rows` (with step, group_id, sample_idx) and a column per reward function, in the order the run logged
    them, and their names; NaN where a function returned None (or was not in the reward at that step)."""
    values = store.query(  # the steps and groups of `rows`, and maybe more: the join keeps the right ones
        """SELECT step, group_id, sample_idx, name, value FROM reward_values
           WHERE run_id = $1 AND list_contains($2, step) AND list_contains($3, group_id)
           ORDER BY step, group_id, sample_idx, rowid""",
        [run_id, sorted(set(rows.step.tolist())), sorted(set(rows.group_id.tolist()))],
    )
    if values.empty:
        return rows, []
    names = list(dict.fromkeys(values.name))
    wide = values.pivot(index=["step", "group_id", "sample_idx"], columns="name", values="value")[names]
    return rows.join(wide, on=["step", "group_id", "sample_idx"]), names


def _flat(groups: list[Group]) -> pd.DataFrame:
    """Groups in memory as completion rows, like the store's: group_id, sample_idx, prompt, completion,
    reward, advantage, dropped, and a column per reward function."""
    rows = [
        {
            "group_id": group.group_id,
            "sample_idx": i,
            "prompt": group.prompt,
            "completion": completion,
            "reward": group.rewards[i],
            "advantage": group.advantages[i],
            "dropped": group.dropped,
            **{name: values[i] for name, values in group.reward_values.items()},
        }
        for group in groups
        for i, completion in enumerate(group.completions)
    ]
    if not rows:
        raise InspectionError("no groups to inspect")
    frame = pd.DataFrame(rows)
    scored = ["reward", *(name for group in groups for name in group.reward_values)]
    return frame.astype(dict.fromkeys(scored, "float64"))  # None (not scored) as NaN, as the store reads


def _list(values: pd.Series) -> list[float | None]:
    return [None if v != v else float(v) for v in values]  # NaN (the store's NULL) -> None, as in a Group
