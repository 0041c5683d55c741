"""Sweeps: the grid parsed and typed by hand, bad grids refused by name, a real 2 x 2 sweep stored with
its grid values and measured costs, a failed run that does not stop the others, the band plot, and a
sweep started from the app."""

import json
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest
from chromium import CHROMIUM, FLAGS, choose
from gradio_client import Client

from workbench.config import Config, ConfigError
from workbench.engine.sweep import grid_from_text, parse_grid, parse_seeds, plan, summary
from workbench.plots import sweep_curves
from workbench.rewards.tasks import load_task
from workbench.store.database import Store
from workbench.ui import config_form

TINY = ["--task", "arithmetic", "--steps", "2", "--prompts-per-step", "2", "--max-new-tokens", "8"]


def sweep(*args):
    return subprocess.run([sys.executable, "-m", "workbench", "sweep", *args], capture_output=True, text=True)


def test_grid_values_take_their_fields_types():
    grid = parse_grid(["group_size=2,4", "beta=0, 0.04", "dynamic-sampling=on,false", "loss_type=grpo,dapo"])
    assert grid == {
        "group_size": [2, 4],
        "beta": [0.0, 0.04],
        "dynamic_sampling": [True, False],
        "loss_type": ["grpo", "dapo"],
    }
    assert [type(v) for v in grid["group_size"] + grid["beta"]] == [int, int, float, float]
    assert grid_from_text("group_size=2,4; beta=0,0.04\nlr_scheduler_type=linear") == {
        "group_size": [2, 4],
        "beta": [0.0, 0.04],
        "lr_scheduler_type": ["linear"],
    }
    assert parse_seeds("0,1, 2") == [0, 1, 2] and parse_seeds("3 4") == [3, 4]


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["groupsize=2,4"], "grid: 'groupsize' is not a config field (did you mean group_size?)"),
        (["group_size=2,2.5"], "grid: group_size='2.5' is not a whole number, as group_size must be"),
        (["beta=0,high"], "grid: beta='high' is not a number, as beta must be"),
        (["dynamic_sampling=maybe"], "grid: dynamic_sampling='maybe' is not true or false"),
        (["beta="], "grid: beta lists no values; give them as beta=V1,V2"),
        (["beta= , "], "grid: beta lists no values"),
        (["beta"], "grid 'beta' is not FIELD=V1,V2,..."),
        (["beta=0", "beta=0.1"], "grid: beta is given twice"),
        (["beta=0,0.0"], "grid: beta lists a value twice (0,0.0)"),
        (["seed=0,1"], "grid: seed is swept by the seeds (--seeds 0,1,2)"),
        (["lora_target_modules=q_proj"], "grid: lora_target_modules holds a list or a mapping"),
    ],
)
def test_a_bad_grid_names_the_field_and_the_value(specs, message):
    with pytest.raises(ConfigError) as error:
        parse_grid(specs)
    assert message in str(error.value)


def test_bad_seeds_and_grid_points_that_config_refuses():
    for text in ("", "0,a", "1.5", "-1"):
        with pytest.raises(ConfigError, match="seeds must be whole numbers"):
            parse_seeds(text)
    with pytest.raises(ConfigError, match="seeds list a seed twice"):
        parse_seeds("0,0")
    with pytest.raises(ConfigError, match="grid point group_size=1: group_size must be an integer of at least 2"):
        plan(Config(), {"group_size": [1, 2]}, [0])


def test_the_plan_is_the_cartesian_product_for_each_seed_seed_by_seed():
    runs = plan(Config(steps=3), {"group_size": [2, 4], "beta": [0.0, 0.04]}, [0, 1, 2])
    assert len(runs) == 12
    assert [(r.grid, r.seed) for r in runs[:4]] == [
        ({"group_size": 2, "beta": 0.0}, 0),
        ({"group_size": 2, "beta": 0.04}, 0),
        ({"group_size": 4, "beta": 0.0}, 0),
        ({"group_size": 4, "beta": 0.04}, 0),
    ]
    last = runs[-1].config
    assert (last.group_size, last.beta, last.seed, last.steps) == (4, 0.04, 2, 3)
    assert runs[-1].label == "group_size=4 beta=0.04 seed=2"


def test_the_store_keeps_a_sweeps_runs_and_their_costs(tmp_path):
    store = Store(tmp_path)
    for run_id, beta, rewards in [("a", 0.0, [1, 2, 3, 4, 5, 6, 7]), ("b", 0.04, [0.5])]:
        store.create_run(run_id, "t", "t", "tiny", Config(beta=beta).to_dict(), "", "sweep-1", {"beta": beta})
        store.write_steps(
            [{"steps": [{"run_id": run_id, "step": k + 1, "reward_mean": r}]} for k, r in enumerate(rewards)]
        )
    store.create_run("alone", "t", "t", "tiny", Config().to_dict(), "")
    store.set_run_stats("a", 512.5, 2.0)
    runs = store.sweep("sweep-1")
    assert runs.run_id.tolist() == ["a", "b"] and runs.beta.tolist() == [0.0, 0.04]
    assert runs.final_reward.tolist() == [5.0, 0.5]  # the mean of the last 5 steps: (3 + 4 + 5 + 6 + 7) / 5
    assert runs.point.tolist() == ["beta=0.0", "beta=0.04"] and runs.last_step.tolist() == [7, 1]
    assert (runs.peak_memory_mib[0], runs.steps_per_second[0]) == (512.5, 2.0)
    assert store.sweeps()[["sweep_id", "runs", "finished"]].values.tolist() == [["sweep-1", 2, 0]]
    assert store.runs().set_index("run_id").grid.to_dict() == {"alone": None, "a": {"beta": 0.0}, "b": {"beta": 0.04}}
    assert len(store.sweep_steps("sweep-1")) == 8


PEAK_MEMORY_CHECK = """
import sys, torch
from workbench.engine.hardware import peak_memory_mib, reset_peak_memory
cpu = torch.device("cpu")
reset_peak_memory(cpu)
before = peak_memory_mib(cpu)
block = torch.ones(64 * 2**20 // 4)  # 64 MiB
with_block = peak_memory_mib(cpu)
del block
reset_peak_memory(cpu)
print(before, with_block, peak_memory_mib(cpu))
"""


def test_peak_memory_follows_an_allocation_and_resets():
    """In a process of its own: the suite's other threads (app servers, runs) move this one's RSS."""
    result = subprocess.run([sys.executable, "-c", PEAK_MEMORY_CHECK], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    before, with_block, after = map(float, result.stdout.split())
    assert with_block > before + 50
    if sys.platform == "linux":  # /proc/self/clear_refs
        assert after < before + 50


@pytest.mark.slow
def test_a_2_by_2_sweep_stores_4_runs_with_their_grid_values(tmp_path):
    result = sweep(
        *TINY, "--grid", "group_size=2,4", "--grid", "beta=0,0.04", "--parallel", "2", "--workspace", str(tmp_path)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[4/4] " in result.stdout and "4 of 4 runs finished" in result.stdout
    store = Store(tmp_path, create=False)
    (sweep_id,) = store.sweeps().sweep_id
    runs = store.sweep(sweep_id)
    assert len(runs) == 4 and set(runs.status) == {"finished"} and set(runs.seed) == {0}
    assert runs.grid.tolist() == [
        {"group_size": 2, "beta": 0.0},
        {"group_size": 2, "beta": 0.04},
        {"group_size": 4, "beta": 0.0},
        {"group_size": 4, "beta": 0.04},
    ]
    assert runs.group_size.tolist() == [2, 2, 4, 4] and runs.beta.tolist() == [0.0, 0.04, 0.0, 0.04]
    stored = store.runs()
    assert set(stored.sweep_id) == {sweep_id} and (stored.peak_memory_mib > 0).all()
    assert (stored.steps_per_second > 0).all()
    for run in stored.itertuples():  # each run trained with its grid values
        assert {name: run.config[name] for name in run.grid} == run.grid
    assert (runs.last_step == 2).all() and runs.final_reward.notna().all()
    table = summary(runs)
    assert table[["group_size", "beta", "seeds", "finished"]].values.tolist() == [
        [2, 0.0, "0", "1/1"],
        [2, 0.04, "0", "1/1"],
        [4, 0.0, "0", "1/1"],
        [4, 0.04, "0", "1/1"],
    ]
    figure = sweep_curves(runs, store.sweep_steps(sweep_id))
    assert sum(trace.fill == "tonexty" for trace in figure.data) == 4


@pytest.mark.slow
def test_a_failed_run_is_reported_and_the_sweep_goes_on(tmp_path):
    result = sweep(*TINY, "--steps", "1", "--grid", "model=tiny,/no/such/model", "--workspace", str(tmp_path))
    assert result.returncode == 1
    assert "model=/no/such/model seed=0: failed (exit 2)" in result.stdout and "run-02.log" in result.stdout
    assert "model=tiny seed=0: finished" in result.stdout and "1 of 2 runs finished" in result.stdout


def test_the_curves_band_each_grid_points_seeds():
    runs = pd.DataFrame(
        {
            "run_id": ["a0", "a1", "b0", "b1"],
            "point": ["beta=0", "beta=0", "beta=0.1", "beta=0.1"],
        }
    )
    rewards = {"a0": [0.0, 0.2], "a1": [0.2, 0.6], "b0": [0.1, 0.1], "b1": [0.3, 0.5]}
    steps = pd.DataFrame(
        [{"run_id": r, "step": s + 1, "reward_mean": v} for r, values in rewards.items() for s, v in enumerate(values)]
    )
    figure = sweep_curves(runs, steps)
    bands = [trace for trace in figure.data if trace.fill == "tonexty"]
    assert len(bands) == 2  # one band per grid point
    upper, lower, mean = figure.data[0], figure.data[1], figure.data[2]
    assert list(upper.y) == [0.2, 0.6] and list(lower.y) == [0.0, 0.2] and list(mean.y) == pytest.approx([0.1, 0.4])
    assert mean.name == "beta=0 (2 seeds)"


@pytest.mark.slow
def test_a_sweep_started_from_the_app(app_url, tmp_path):
    client = Client(app_url, verbose=False)
    reward = load_task("arithmetic").rewards.text
    form = config_form.values(Config(steps=2, group_size=2, prompts_per_step=2, max_new_tokens=8))
    message, _, _ = client.predict(reward, "group_size=2,x", "0", 1, *form, api_name="/start_sweep")
    assert "Sweep not started" in message and "group_size=&#x27;x&#x27; is not a whole number" in message
    message, command, _ = client.predict(reward, "beta=0,0.04", "0", 2, *form, api_name="/start_sweep")
    assert message.startswith("Sweep `sweep-arithmetic-") and "2 runs" in message
    assert "--grid beta=0.0,0.04" in command and "--parallel 2" in command
    sweep_id = message.split("`")[1]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        table, plot = client.predict(sweep_id, api_name="/open_sweep")
        if table and [row[1:3] for row in table["data"]] == [["0", "1/1"], ["0", "1/1"]]:
            break
        time.sleep(2)
    assert table["headers"][:4] == ["beta", "seeds", "finished", "final_reward"]
    assert [row[1:3] for row in table["data"]] == [["0", "1/1"], ["0", "1/1"]]
    assert sum(trace.get("fill") == "tonexty" for trace in json.loads(plot["plot"])["data"]) == 2


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"browser tests need Debian's chromium at {CHROMIUM}")
def test_the_runs_tab_shows_a_sweep_in_the_browser(app_url, tmp_path):
    from playwright.sync_api import sync_playwright

    store = Store(tmp_path)  # two grid points, two seeds each, stored as a sweep's runs are
    for beta in (0.0, 0.04):
        for seed in (0, 1):
            run_id = f"beta{beta}-seed{seed}"
            config = Config(beta=beta, seed=seed).to_dict()
            store.create_run(run_id, "t", "t", "tiny", config, "", "sweep-b", {"beta": beta})
            store.write_steps([{"steps": [{"run_id": run_id, "step": k, "reward_mean": k * seed}]} for k in (1, 2, 3)])
            store.set_status(run_id, "finished")
            store.set_run_stats(run_id, 600.0 + seed, 4.0)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(app_url)
        page.get_by_role("tab", name="Runs").click()
        page.get_by_role("tab", name="Sweeps", exact=True).click()
        choose(page, "sweep-open", "sweep-b")
        page.wait_for_selector("#sweep-table [role=gridcell]")
        headers = page.locator("#sweep-table [role=columnheader]").all_inner_texts()
        assert [h.strip() for h in headers][:3] == ["beta", "seeds", "finished"]
        assert "peak_memory_mib" in page.inner_text("#sweep-table") and "0,1" in page.inner_text("#sweep-table")
        plot = page.locator("#sweep-plot .js-plotly-plot")
        plot.wait_for()
        assert plot.evaluate("el => el.data.filter(t => t.fill === 'tonexty').length") == 2
        browser.close()
