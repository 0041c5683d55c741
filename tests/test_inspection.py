"""Reading a run's groups (workbench.store.inspection), checked against the store's own rows on a real tiny-model run:
a step's groups with their spread, one prompt before and after, the reward buckets (in Python and from the
CLI), and bad inputs refused with errors that name the problem.

The run: the format_following task's reward (two functions, format_reward and correct) on six of its prompts,
4 prompts x 4 completions for 3 steps, so prompts recur across steps (12 draws from 6 prompts).
"""

import json
import shutil
import statistics

import pytest

from workbench import Config, GroupsScored, RunStarted, Store, load_task, train
from workbench.cli import main
from workbench.engine.dryrun import DryRun
from workbench.events import Group
from workbench.rewards.tasks import SAMPLE_TASKS
from workbench.store.inspection import (
    InspectionError,
    before_after,
    completion_tokens,
    group_buckets,
    groups_table,
    parse_steps,
    recurring_prompts,
    reward_buckets,
    step_groups,
)
from workbench.store.writer import rollout_rows
from workbench.ui import step_views
from workbench.ui.dry_run_view import dry_run_html

NAMES = ["format_reward", "correct"]


CONFIG = Config(prompts_per_step=4, group_size=4, steps=3)  # 48 new tokens: room for the tags


def six_prompts(folder):
    """format_following's reward on its first six prompts, as a task folder: a 3-step run samples each twice."""
    source = SAMPLE_TASKS / "format_following"
    (folder / "prompts.jsonl").write_text("".join((source / "prompts.jsonl").read_text().splitlines(True)[:6]))
    shutil.copy(source / "reward.py", folder / "reward.py")
    return load_task(folder)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run, its store, and the groups train() yielded for each step."""
    task = six_prompts(tmp_path_factory.mktemp("six_prompts"))
    workspace = tmp_path_factory.mktemp("workspace")
    scored = {}
    for event in train(CONFIG, task, workspace):
        if isinstance(event, RunStarted):
            run_id = event.run_id
        elif isinstance(event, GroupsScored):
            scored[event.step] = event.groups
    return run_id, Store(workspace, create=False), scored


def rollouts(store, run_id, where="TRUE", parameters=()):
    return store.query(
        f"SELECT * FROM rollouts WHERE run_id = $1 AND {where} ORDER BY step, group_id, sample_idx",
        [run_id, *parameters],
    )


def test_a_steps_groups_carry_the_stores_rewards_advantages_and_spread(run):
    run_id, store, scored = run
    for step in (1, 2, 3):
        frame = step_groups(store, run_id, step)
        rows = rollouts(store, run_id, "step = $2", [step])
        assert frame.group_id.tolist() == [0, 1, 2, 3]
        for group in frame.itertuples():
            mine = rows[rows.group_id == group.group_id]
            assert group.rewards == mine.reward.tolist() and group.advantages == mine.advantage.tolist()
            assert group.prompt == mine.prompt.iloc[0] and len(group.rewards) == 4
            assert group.spread == max(group.rewards) - min(group.rewards)
            assert group.mean == pytest.approx(statistics.mean(group.rewards))
            assert group.std == pytest.approx(statistics.stdev(group.rewards))  # n - 1, as the advantages use
        # the live groups train() yielded give the same table as the store's
        live = groups_table(scored[step])
        exact = ["group_id", "prompt", "rewards", "advantages", "spread", "dropped"]
        assert live[exact].to_dict("list") == frame[exact].to_dict("list")
        assert live["mean"].tolist() == pytest.approx(frame["mean"].tolist())

    by_spread = step_groups(store, run_id, 3, sort_by="spread")
    assert sorted(by_spread.group_id) == [0, 1, 2, 3]
    assert by_spread.spread.is_monotonic_decreasing
    by_std = step_groups(store, run_id, 3, sort_by="std")
    assert by_std["std"].fillna(-1).is_monotonic_decreasing


def test_before_and_after_shows_a_recurring_prompts_first_and_latest_step(run):
    run_id, store, _ = run
    steps_of = rollouts(store, run_id).groupby("prompt").step.agg(lambda s: sorted(set(s)))
    recurring = recurring_prompts(store, run_id)
    assert not recurring.empty
    assert dict(zip(recurring.prompt, recurring.steps)) == {p: s for p, s in steps_of.items() if len(s) >= 2}
    assert (recurring.first_step == recurring.steps.map(min)).all()
    assert (recurring.last_step == recurring.steps.map(max)).all()

    prompt = recurring.prompt.iloc[0]
    pair = before_after(store, run_id, prompt)
    assert (pair.first_step, pair.last_step) == (pair.steps[0], pair.steps[-1]) and pair.first_step < pair.last_step
    values = store.query(
        "SELECT step, group_id, sample_idx, name, value FROM reward_values WHERE run_id = $1", [run_id]
    ).pivot(index=["step", "group_id", "sample_idx"], columns="name", values="value")
    for step, side in ((pair.first_step, pair.before), (pair.last_step, pair.after)):
        rows = rollouts(store, run_id, "step = $2 AND prompt = $3", [step, prompt])
        assert side.completion.tolist() == rows.completion.tolist()
        assert side.reward.tolist() == rows.reward.tolist() and side.advantage.tolist() == rows.advantage.tolist()
        for name in NAMES:
            expected = [values.loc[(step, g, i), name] for g, i in zip(rows.group_id, rows.sample_idx)]
            assert side[name].tolist() == expected

    explicit = before_after(store, run_id, prompt, first_step=pair.last_step, last_step=pair.first_step)
    assert explicit.before.equals(pair.after) and explicit.after.equals(pair.before)  # any two steps, any order
    page = step_views.before_after_html(pair)
    assert f"data-before='{pair.first_step}' data-after='{pair.last_step}'" in page
    assert page.count("class='before-after-completion'") == len(pair.before) + len(pair.after)


def bucket_counts_from_sql(store, run_id, first=1, last=99):
    """(format_reward, correct) -> completions, counted by SQL independently of the engine."""
    frame = store.query(
        """SELECT f.value AS f, c.value AS c, count(*) AS n FROM reward_values f JOIN reward_values c
           USING (run_id, step, group_id, sample_idx)
           WHERE run_id = $1 AND f.name = 'format_reward' AND c.name = 'correct' AND step BETWEEN $2 AND $3
           GROUP BY ALL""",
        [run_id, first, last],
    )
    return {(row.f, row.c): row.n for row in frame.itertuples()}


def test_reward_buckets_count_the_completions_by_their_reward_values(run):
    run_id, store, scored = run
    buckets = reward_buckets(store, run_id, examples=2)
    assert list(buckets.columns) == [*NAMES, "count", "share", "reward_mean", "examples"]
    assert dict(zip(zip(buckets.format_reward, buckets.correct), buckets["count"])) == bucket_counts_from_sql(
        store, run_id
    )
    assert buckets["count"].sum() == 48 and buckets.share.tolist() == pytest.approx((buckets["count"] / 48).tolist())
    assert buckets["count"].is_monotonic_decreasing
    assert len(buckets) >= 2  # the seeded run has tagged and untagged completions: the counts are worth checking
    everything = rollouts(store, run_id)
    for bucket in buckets.itertuples():
        assert 1 <= len(bucket.examples) <= 2 and set(bucket.examples) <= set(everything.completion)

    later = reward_buckets(store, run_id, steps=(2, 3), examples=0)
    assert later["count"].sum() == 32 and all(e == [] for e in later.examples)
    assert dict(zip(zip(later.format_reward, later.correct), later["count"])) == bucket_counts_from_sql(
        store, run_id, 2, 3
    )
    # a step's groups in memory (a dry-run's, a live step's) bucket as the store's do
    first = group_buckets(scored[1])
    stored = reward_buckets(store, run_id, steps=(1, 1))
    assert first.drop(columns="examples").to_dict("list") == stored.drop(columns="examples").to_dict("list")
    report = dry_run_html(DryRun(scored[1], 0.5))
    assert "class='reward-buckets'" in report and "data-completions='16'" in report


def test_the_buckets_command_prints_the_table(run, capsys):
    run_id, store, _ = run
    assert main(["buckets", run_id, "--workspace", str(store.workspace), "--steps", "2-3", "--examples", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"run {run_id}, steps 2-3: 32 completions in ")
    assert out[0].endswith("buckets of format_reward, correct")
    header = out[1].split()
    assert header[:5] == [*NAMES, "count", "share", "reward_mean"]
    expected = reward_buckets(store, run_id, steps=(2, 3))
    assert [int(line.split()[2]) for line in out[2:]] == expected["count"].tolist()


@pytest.mark.parametrize(
    "arguments, problem",
    [
        (["nope-123"], "no run 'nope-123' in workspace"),
        (["RUN", "--steps", "3-2"], "the step range '3-2' runs backwards"),
        (["RUN", "--steps", "two"], "a step range is A-B (e.g. 3-10) or one step (e.g. 7), not 'two'"),
        (["RUN", "--steps", "0-2"], "steps start at 1"),
        (["RUN", "--steps", "7-9"], "has no completions stored in steps 7-9 (its steps: 1-3)"),
        (["RUN", "--steps", "7"], "has no completions stored in step 7 (its steps: 1-3)"),
        (["RUN", "--examples", "-1"], "examples must be 0 or more, not -1"),
    ],
)
def test_the_buckets_command_refuses_bad_input_naming_the_problem(run, capsys, arguments, problem):
    run_id, store, _ = run
    arguments = [run_id if word == "RUN" else word for word in arguments]
    assert main(["buckets", *arguments, "--workspace", str(store.workspace)]) == 2
    assert problem in capsys.readouterr().err


def test_bad_inputs_get_errors_that_name_the_problem(run):
    run_id, store, _ = run
    for read in (step_groups, recurring_prompts, before_after, reward_buckets):
        arguments = {step_groups: (1,), before_after: ("1+1=",)}.get(read, ())
        with pytest.raises(InspectionError, match="no run 'nope' in workspace"):
            read(store, "nope", *arguments)
    with pytest.raises(InspectionError, match=rf"run {run_id} has no step 9 stored \(its steps: 1-3\)"):
        step_groups(store, run_id, 9)
    with pytest.raises(InspectionError, match="sort_by must be one of group, spread, std, mean, not 'size'"):
        step_groups(store, run_id, 1, sort_by="size")
    with pytest.raises(InspectionError, match=rf"run {run_id} never sampled the prompt 'tags 1\+1='"):
        before_after(store, run_id, "tags 1+1=")
    prompt, steps = recurring_prompts(store, run_id).iloc[0][["prompt", "steps"]]
    listed = ", ".join(map(str, steps))
    with pytest.raises(InspectionError, match=f"did not sample the prompt .* at step 9; it did at steps {listed}"):
        before_after(store, run_id, prompt, last_step=9)
    with pytest.raises(InspectionError, match="has no completions stored in steps 4-5"):
        reward_buckets(store, run_id, steps=(4, 5))
    with pytest.raises(InspectionError, match="runs backwards"):
        reward_buckets(store, run_id, steps=(3, 1))
    assert parse_steps("2-3") == (2, 3) and parse_steps(" 4 ") == (4, 4) and parse_steps("1 - 10") == (1, 10)


def test_the_step_view_renders_each_groups_numbers(run):
    run_id, store, _ = run
    frame = step_groups(store, run_id, 2, sort_by="spread")
    page = step_views.step_groups_html(frame, 2, "spread")
    assert "data-step='2' data-groups='4' data-sort='spread'" in page and "sorted by reward spread" in page
    rows = page.split("<tr data-group=")[1:]
    assert [int(row.split("'")[1]) for row in rows] == frame.group_id.tolist()
    for row, group in zip(rows, frame.itertuples()):
        rewards = json.loads(row.split("data-rewards='")[1].split("'")[0])
        assert rewards == group.rewards and row.count("class='completion-cell'") == 4


def test_chat_prompts_and_unscored_completions_read_back(tmp_path):
    """A chat prompt (stored as JSON) is found by its messages; a completion no function scored (None) is left
    out of its group's mean, std and spread, and has a bucket of its own."""
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "1+1="}]
    store = Store(tmp_path)
    store.create_run("chat", "task", str(tmp_path), "tiny", Config().to_dict(), "")
    for step, rewards in ((1, [1.0, None, 0.0]), (2, [1.0, 1.0, None])):
        values = {"correct": rewards, "short": [0.5, None, 0.5]}
        group = Group(0, chat, ["2", "", "3"], rewards, values, [0.5, 0.0, -0.5], [1, 0, 1], [False] * 3)
        store.write_steps([rollout_rows("chat", step, [group], [{}], [None] * 3, "v1")])

    first = step_groups(store, "chat", 1).iloc[0]
    assert first.prompt == chat and first.rewards == [1.0, None, 0.0]
    assert (first["mean"], first.spread) == (0.5, 1.0) and first["std"] == pytest.approx(2**-0.5)
    pair = before_after(store, "chat", chat)
    assert (pair.first_step, pair.last_step, pair.prompt) == (1, 2, chat)
    assert pair.after.reward.isna().tolist() == [False, False, True]
    buckets = reward_buckets(store, "chat")
    assert buckets[["correct", "short", "count"]].fillna(-1).values.tolist() == [
        [1.0, 0.5, 2],
        [-1, -1, 1],  # None: not scored
        [0.0, 0.5, 1],
        [1.0, -1, 1],
        [-1, 0.5, 1],
    ]
    assert (
        step_views.prompt_choices(recurring_prompts(store, "chat"))[0][0]
        == "system: be brief / user: 1+1= (steps 1, 2)"
    )


def test_completion_tokens_says_why_a_stored_completion_has_none(tmp_path):
    """A group dynamic sampling dropped was never trained on; a run with log_token_stats off stored none."""
    store = Store(tmp_path)
    for run_id, config in (("dropping", Config(dynamic_sampling=True)), ("quiet", Config(log_token_stats=False))):
        store.create_run(run_id, "task", str(tmp_path), "tiny", config.to_dict(), "")
        kept = Group(0, "1+1=", ["2", "3"], [1.0, 0.0], {"correct": [1.0, 0.0]}, [0.7, -0.7], [1, 1], [False] * 2)
        dropped = Group(
            1, "2+2=", ["4", "4"], [1.0, 1.0], {"correct": [1.0, 1.0]}, [0.0, 0.0], [1, 1], [False] * 2, True
        )
        store.write_steps([rollout_rows(run_id, 1, [kept, dropped], [{}, {}], [None] * 4, "v1")])
    with pytest.raises(
        InspectionError, match="group 1 of step 1 was dropped by dynamic sampling: it was never trained"
    ):
        completion_tokens(store, "dropping", 1, 1, 0)
    with pytest.raises(InspectionError, match="run quiet stored no token stats: it ran with log_token_stats off"):
        completion_tokens(store, "quiet", group_id=0, sample_idx=1)
    with pytest.raises(InspectionError, match="no run 'nope' in workspace"):
        completion_tokens(store, "nope")
