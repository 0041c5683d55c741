"""What the app shows, checked against numbers worked out by hand: the advantage explanation, the
group view, the status line, the run form generated from Config, and the Runs and Explore tabs' pieces
(smoothing, the overlay of any metric, the runs table, token shading, SQL errors) (no browser needed)."""

import math
import re
import shlex
from dataclasses import replace

import pandas as pd
import pytest

from workbench.cli import build_parser, config_from_args
from workbench.commands import command_line, python_code
from workbench.config import Config, ConfigError
from workbench.engine import grpo
from workbench.engine.runner import Snapshot
from workbench.events import Group
from workbench.formatting import duration
from workbench.plots import RAW_OPACITY, available_metrics, compare_runs, ema, training_curves
from workbench.ui import advantages, config_form
from workbench.ui.explore_tab import error_html, readable
from workbench.ui.group_view import color, group_html
from workbench.ui.run_list import COLUMN_WIDTHS, COLUMNS, label, progress, run_choices, runs_table, significant
from workbench.ui.status import status
from workbench.ui.token_view import DEFAULT_SHADE, SHADE_CHOICES, SHADES, token_view_html
from workbench.variants import ESTIMATORS, SCALINGS


def group(rewards, config=None, values=None):
    config = config or Config()
    rewards_tensor = grpo.reward_tensor(rewards)
    advantages = grpo.group_advantages(
        rewards_tensor, len(rewards), config.scale_rewards, config.advantage_estimator
    ).tolist()
    n = len(rewards)
    values = values or {"correct": list(rewards)}
    return Group(0, "12+30=", [f"c{i}" for i in range(n)], rewards, values, advantages, [3] * n, [False] * n)


def test_the_explanation_works_the_advantage_out_from_the_group_mean_and_std():
    # rewards 1, 0, 0, 0: mean 0.25; sample std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5
    # A_0 = 0.75 / 0.5001 = +1.50, A_1..3 = -0.25 / 0.5001 = -0.50
    text = advantages.explain(group([1.0, 0.0, 0.0, 0.0]), Config())
    assert "with the group mean 0.25, divided by the group's std: A = (r - 0.25) / (0.50 + 0.0001)." in text
    assert "#0 got reward 1.00, so its advantage is +1.50: the update makes completions like it more likely" in text
    assert "#1 got 0.00: advantage -0.50, made less likely" in text
    assert advantages.group_stats([1.0, 0.0, 0.0, 0.0]) == (0.25, 0.5)


def test_without_scaling_the_advantage_is_the_reward_minus_the_mean():
    # rewards 2, 1, 0: mean 1, A = 1, 0, -1
    unscaled = Config(scale_rewards="none")
    text = advantages.explain(group([2.0, 1.0, 0.0], unscaled), unscaled)
    assert "A = r - 1.00." in text and "its advantage is +1.00" in text and "advantage -1.00" in text


def test_the_explanation_follows_the_estimator():
    # rloo on 1, 0, 0, 0: the 1 is compared with 0 (A = 1), each 0 with 1/3 (A = -1/3)
    rloo = Config(advantage_estimator="rloo", scale_rewards="none")
    text = advantages.explain(group([1.0, 0.0, 0.0, 0.0], rloo), rloo)
    assert "the mean of the other 3 rewards of its group (leave-one-out): A = r - (1.00 - r) / 3." in text
    assert "its advantage is +1.00" in text and "advantage -0.33, made less likely" in text
    # reinforce on 2, 1: no baseline, both pushed up, the smaller reward less
    reinforce = Config(advantage_estimator="reinforce", scale_rewards="none")
    text = advantages.explain(group([2.0, 1.0], reinforce), reinforce)
    assert "with nothing (no baseline" in text and "A = r." in text
    assert "#1 got 1.00: advantage +1.00, the update makes completions like it more likely" in text
    # equal rewards give a group baseline no signal, but not reinforce
    assert "no learning signal" in advantages.explain(group([1.0, 1.0]), Config())
    assert "no learning signal" not in advantages.explain(group([1.0, 1.0], reinforce), reinforce)
    batch = Config(advantage_estimator="reinforce_batch_mean", scale_rewards="batch")
    assert "the mean reward of the whole step" in advantages.explain(group([1.0, 0.0], batch), batch)


def test_the_explanation_names_the_variants_in_the_words_of_workbench_variants():
    for estimator, scale in [("grpo", "group"), ("rloo", "none"), ("reinforce_batch_mean", "batch")]:
        config = Config(advantage_estimator=estimator, scale_rewards=scale)
        text = advantages.explain(group([1.0, 0.0], config), config)
        assert f"advantage_estimator {estimator}: {ESTIMATORS[estimator]}." in text
        assert f"scale_rewards {scale}: {SCALINGS[scale]}." in text


def test_a_group_with_equal_rewards_is_said_to_give_no_signal():
    text = advantages.explain(group([1.0, 1.0, 1.0, 1.0]), Config())
    assert "All 4 completions got reward 1.00, so every advantage is 0" in text


def test_unscored_completions_are_shown_as_none_and_left_out_of_the_mean():
    # scored rewards 1, 0, 0: mean 1/3, std sqrt(1/3) = 0.58; the unscored one gets advantage 0
    shown = group([1.0, None, 0.0, 0.0])
    assert shown.advantages[1] == 0.0
    assert "group mean reward <b>0.33</b> · std <b>0.58</b>" in group_html(shown, 1, Config())
    assert "reward <b>None</b>" in group_html(shown, 1, Config())
    assert "scored by no reward function" in advantages.explain(group([None, None, 2.0, None]), Config())
    snapshot = Snapshot(run_id="r", status="running", step=1, steps=5)
    snapshot.history.append({"step": 1, "seconds": 0.1, "reward_mean": None})
    assert "no completion scored: nothing trained" in status(snapshot)


def test_the_group_view_shows_each_reward_function_the_mean_std_and_colored_advantages():
    shown = group([1.0, 0.0], values={"correct": [1.0, 0.0], "short": [None, -0.5]})
    page = group_html(shown, step=7, config=Config(), scored_at=12.5)
    assert "data-step='7'" in page and "data-scored-at='12500'" in page
    assert "group mean reward <b>0.50</b> · std <b>0.71</b>" in page  # std of (1, 0) = sqrt(0.5)
    assert "left out of the update" not in page
    assert "left out of the update by dynamic sampling" in group_html(replace(shown, dropped=True), 7, Config())
    assert "correct 1.00 · short None" in page and "correct 0.00 · short -0.50" in page
    assert color(0.71) == "rgba(0,160,0,0.35)" and color(-3.0) == "rgba(210,0,0,1.00)"
    assert "prompt <code>system: be brief / user: 1+1=</code>" in group_html(
        Group(
            0,
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "1+1="}],
            ["2", "3"],
            [1.0, 0.0],
            {},
            [0.7, -0.7],
            [1, 1],
            [False, True],
        ),
        step=1,
        config=Config(),
    )


def test_the_status_line_gives_pace_and_eta_from_the_median_step():
    history = [{"step": s, "seconds": t, "reward_mean": 0.5} for s, t in [(1, 1.0), (2, 3.0), (3, 2.0)]]
    snapshot = Snapshot(run_id="r", status="running", step=3, steps=10, history=history)
    line = status(snapshot)  # median 2 s, 7 steps left: 14 s
    assert "step 3/10 · 2.00 s/step · ETA 14 s · reward 0.500" in line
    assert duration(75) == "1 min 15 s"
    paused = status(Snapshot(run_id="r", status="paused", error="correct raised KeyError"))
    assert "correct raised KeyError" in paused and "press **Resume**" in paused


CHANGED = Config(
    model="/models/qwen",
    steps=5,
    group_size=4,
    learning_rate=1e-3,
    scale_rewards="none",
    advantage_estimator="rloo",
    epsilon_high=0.28,
    loss_type="dapo",
    lora_target_modules=("q_proj", "v_proj"),
    reward_weights={"correct": 1.0, "format_reward": 0.2},
)


def test_the_form_has_every_config_field_and_gives_the_config_back():
    values = config_form.values(CHANGED)
    assert len(values) == len(config_form.FIELDS) == len(Config().to_dict())
    assert values[config_form.FIELDS.index("reward_weights")] == "correct=1, format_reward=0.2"
    assert config_form.to_config(values) == CHANGED
    assert config_form.to_config(config_form.values(Config())) == Config()  # empty weights: every weight 1


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("steps", None, "steps must be given"),
        ("group_size", 2.5, "group_size must be a whole number"),
        ("group_size", 1, "group_size must be an integer of at least 2"),
        ("reward_weights", "correct:1", "reward_weights: 'correct:1' is not name=weight"),
        ("loss_type", "ppo", "loss_type must be one of grpo, bnpo, dr_grpo, dapo"),
        ("scale_rewards", "True", "scale_rewards must be one of group, batch, none"),
    ],
)
def test_a_bad_form_value_names_its_field(field, value, message):
    values = config_form.values(Config())
    values[config_form.FIELDS.index(field)] = value
    with pytest.raises(ConfigError, match=message):
        config_form.to_config(values)


def test_the_command_line_and_the_python_code_give_the_same_config():
    line = command_line(CHANGED, "arithmetic", "runs", "runs/rewards/reward-abc.py")
    assert line.startswith("python -m workbench train --task arithmetic --workspace runs --reward runs/rewards/")
    assert config_from_args(build_parser().parse_args(shlex.split(line)[3:])) == CHANGED
    code = python_code(CHANGED, "arithmetic", "runs", "runs/rewards/reward-abc.py")
    compile(code, "run.py", "exec")
    config_line = next(line for line in code.splitlines() if line.startswith("config = "))
    assert eval(config_line.removeprefix("config = "), {"Config": Config}) == CHANGED


# the Runs and Explore tabs' pieces: smoothing, the overlay of any metric, the runs table, token shading, SQL errors


def test_smoothing_is_tensorboards_debiased_ema():
    # w = 0.5 on 1, 0: s1 = 0.5 / (1 - 0.5) = 1; s2 = (0.25 + 0) / (1 - 0.25) = 1/3. A gap stays a gap.
    assert ema([1.0, 0.0], 0.5) == pytest.approx([1.0, 1 / 3])
    assert ema([1.0, None, 0.0], 0.5)[::2] == pytest.approx([1.0, 1 / 3]) and math.isnan(ema([1.0, None], 0.5)[1])
    assert ema([2.0, 4.0, 8.0], 0.0) == [2.0, 4.0, 8.0]
    assert ema([3.0] * 5, 0.99) == pytest.approx([3.0] * 5)  # debiased: a constant stays itself from the start


def steps_frame(rewards, kl=None, functions=None):
    n = len(rewards)
    return pd.DataFrame(
        {
            "run_id": ["r"] * n,
            "step": list(range(1, n + 1)),
            "reward_mean": rewards,
            "reward_std": [0.1] * n,
            "kl": kl or [0.0] * n,
            "loss": [0.0] * n,
            "reward_function_means": functions or [{}] * n,
        }
    )


def test_every_curve_is_smoothed_with_the_raw_one_faint_behind_it():
    steps = steps_frame([1.0, 0.0, 1.0], functions=[{"correct": 1.0}, {"correct": 0.0}, {"correct": 0.5}])
    figure = training_curves(steps, smoothing=0.5)
    raw, smoothed = [t for t in figure.data if t.name == "reward mean"]  # the raw one first: drawn behind
    assert (raw.meta, raw.opacity, raw.showlegend, smoothed.meta) == ("raw", RAW_OPACITY, False, "smoothed")
    assert list(raw.y) == [1.0, 0.0, 1.0] and list(smoothed.y) == pytest.approx(ema([1.0, 0.0, 1.0], 0.5))
    correct = [t for t in figure.data if t.name == "correct"]
    assert [t.meta for t in correct] == ["raw", "smoothed"] and correct[0].line.color == correct[1].line.color
    assert training_curves(steps).data[3].meta == "smoothed"  # smoothed by default (SMOOTHING), as in the Train tab
    unsmoothed = training_curves(steps, smoothing=0)
    assert [list(t.y) for t in unsmoothed.data if t.name == "reward mean"] == [[1.0, 0.0, 1.0]]


def test_compare_overlays_any_metric_of_several_runs():
    a = steps_frame([0.0, 1.0], kl=[0.1, 0.2], functions=[{"correct": 0.0}, {"correct": 1.0}])
    b = steps_frame([1.0, 1.0, 1.0])
    evals = {
        "a": pd.DataFrame({"step": [0, 2], "num_prompts": [4, 4], "num_generations": [2, 2], "pass_at_k": [0.5, 1.0]})
    }
    assert list(available_metrics(a, evals["a"])) == [
        "reward_mean", "reward_std", "kl", "loss", "reward/correct", "eval/pass_at_k",
    ]  # fmt: skip
    figure = compare_runs({"a": a, "b": b}, ["reward/correct", "eval/pass_at_k", "kl"], 0.0, evals, {"a": "baseline"})
    assert [annotation.text for annotation in figure.layout.annotations] == [
        "correct (reward function's mean)", "held-out pass_at_k", "KL to the reference",
    ]  # fmt: skip
    drawn = [(t.name, t.xaxis, list(t.y)) for t in figure.data]
    assert drawn == [
        (
            "baseline",
            "x",
            [0.0, 1.0],
        ),  # a's reward function, its held-out pass@k, its KL; b has neither of the first two
        ("baseline", "x2", [0.5, 1.0]),
        ("baseline", "x3", [0.1, 0.2]),
        ("b", "x3", [0.0, 0.0, 0.0]),
    ]
    assert [t.showlegend for t in figure.data] == [True, False, False, True]  # a run's legend entry once
    assert figure.data[1].mode == "lines+markers"  # held-out points as measured
    smoothed = compare_runs({"a": a}, ["reward_mean"], 0.5)
    assert [t.meta for t in smoothed.data] == ["raw", "smoothed"]


def test_the_runs_table_fits_and_formats_its_numbers():
    runs = pd.DataFrame(
        {
            "run_id": ["arithmetic-20261206-081416-1957"],
            "name": ["baseline"],
            "tags": [["beta", "seed0"]],
            "task": ["arithmetic"],
            "model": ["tiny"],
            "status": ["running"],
            "last_step": [12.0],
            "steps": [60],
            "reward_mean": [0.31249999],
            "created_at": [pd.Timestamp("2026-12-06 08:14:16.123456")],
            "config": [Config(steps=60, beta=0.0).to_dict()],
        }
    )
    table = runs_table(runs)
    assert table.columns.tolist() == COLUMNS
    assert table.iloc[0].tolist() == [
        "arithmetic-20261206-081416-1957", "baseline", "beta, seed0", "arithmetic", "tiny", "running", "12/60",
        "0.312", "2026-12-06 08:14", "beta=0.0",
    ]  # fmt: skip
    assert progress(pd.NA, 60) == "0/60" and significant(1234.5) == "1.23e+03" and significant(None) == ""
    assert run_choices(runs) == [("baseline · arithmetic-20261206-081416-1957", "arithmetic-20261206-081416-1957")]
    assert label("r", None) == label("r", float("nan")) == "r"  # pandas 3 reads a missing name as NaN
    assert sum(COLUMN_WIDTHS) <= 1280 - 2 * 32 - 16  # the page's margins and the grid's border at 1280 px


def tokens_frame(logprob, kl, entropy, advantage=0.87):
    return pd.DataFrame(
        {
            "token": [f"t{i}" for i in range(len(logprob))],
            "logprob": logprob,
            "ref_logprob": logprob,
            "ratio": [1.0] * len(logprob),
            "clipped": [False] * len(logprob),
            "kl": kl,
            "entropy": entropy,
            "contribution": [advantage] * len(logprob),
        }
    )


def shades(page: str) -> list[str]:
    return re.findall(r"class='token' style='background:([^;']+)", page)


def test_the_token_view_shades_by_log_prob_by_default_and_says_what_the_shade_means():
    tokens = tokens_frame([-0.002, -0.9, -0.3], [0.0, 0.16, 0.02], [0.02, 0.77, 0.75])
    page = token_view_html(tokens, "r", 3, 1, 2)
    # log p -0.9 is the darkest (0.8), -0.3 a third of it, -0.002 nearly white
    assert "data-shade='logprob'" in page and shades(page) == [
        "rgba(70,60,200,0.00)", "rgba(70,60,200,0.80)", "rgba(70,60,200,0.27)",
    ]  # fmt: skip
    assert "the less likely the policy found the token" in page and "darkest log p = -0.9" in page
    assert shades(token_view_html(tokens, "r", 3, 1, 2, "entropy"))[1] == "rgba(70,60,200,0.80)"
    # one update per batch: the push is A on every token, flat, and the view says so
    pushed = token_view_html(tokens, "r", 3, 1, 2, "contribution")
    assert set(shades(pushed)) == {color(0.87)} and "Every token here has the same push (+0.87)" in pushed
    no_reference = tokens_frame([-0.5, -0.1], [None, None], [0.1, 0.2])
    assert "stored none for these tokens (beta 0: no reference pass)" in token_view_html(
        no_reference, "r", 1, 0, 0, "kl"
    )
    assert set(shade for _, shade in SHADE_CHOICES) == set(SHADES) and DEFAULT_SHADE == "logprob"


def test_a_sql_error_keeps_its_caret_under_the_column_and_the_grid_rounds_decimals():
    message = 'Parser Error: syntax error at or near "FROM"\n\nLINE 1: SELECT FROM FROM t\n                    ^^^^'
    page = error_html(message)
    shown = re.search(r"<pre class='sql-error'>(.*)</pre>", page, re.S).group(1)
    line, caret = shown.splitlines()[-2:]
    assert line.index("FROM FROM") + len("FROM ") == caret.index("^")  # the second FROM, as DuckDB points
    assert "white-space: pre" in page and "monospace" in page
    frame = pd.DataFrame({"step": [1, 2], "kl": [0.00010116185460771834, float("nan")], "x": [0.5, 0.25]})
    shown_frame, rounded = readable(frame)
    assert shown_frame.kl[0] == 0.0001012 and math.isnan(shown_frame.kl[1]) and rounded
    assert shown_frame.step.tolist() == [1, 2] and not readable(frame[["step", "x"]])[1]
