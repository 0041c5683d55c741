"""The CLI as a user runs it: train, query, help, and errors on bad input; commands that neither train nor
sample answer without loading torch."""

import subprocess
import sys

import pytest

from workbench.store.database import Store


def cli(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_help_lists_the_commands():
    out = cli("--help").stdout
    assert "train" in out and "query" in out
    train_help = cli("train", "--help").stdout
    assert "--max-new-tokens" in train_help and "GRPO compares" not in train_help
    assert "completions sampled per prompt" in train_help  # the field's docstring is its help


@pytest.mark.slow
def test_train_then_query(tmp_path):
    result = cli(
        "train",
        "--task",
        "arithmetic",
        "--steps",
        "2",
        "--workspace",
        str(tmp_path),
        "--group-size",
        "4",
        "--prompts-per-step",
        "2",
        "--max-new-tokens",
        "8",
    )
    assert "finished at step 2" in result.stderr
    csv = cli(
        "query",
        "--workspace",
        str(tmp_path),
        "--format",
        "csv",
        "SELECT step, count(*) AS n FROM rollouts GROUP BY step ORDER BY step",
    ).stdout
    assert csv.splitlines() == ["step,n", "1,8", "2,8"]


@pytest.mark.slow
def test_bad_input_exits_2_with_a_message(tmp_path):
    bad_config = cli("train", "--task", "arithmetic", "--group-size", "1", "--workspace", str(tmp_path), check=False)
    assert bad_config.returncode == 2 and "group_size must be" in bad_config.stderr
    bad_task = cli("train", "--task", "nope", "--workspace", str(tmp_path), check=False)
    assert bad_task.returncode == 2 and "sample tasks: arithmetic" in bad_task.stderr
    bad_sql = cli("query", "--workspace", str(tmp_path), "SELEC 1", check=False)
    assert bad_sql.returncode == 2 and "syntax error" in bad_sql.stderr.lower()
    no_store = cli("query", "--workspace", str(tmp_path / "empty"), "SELECT 1", check=False)
    assert no_store.returncode == 2 and "no store" in no_store.stderr


@pytest.mark.slow
def test_validate_dry_run_a_paused_run_resumed_with_a_fixed_reward_and_rescore(tmp_path):
    valid = cli("validate", "--task", "arithmetic").stdout
    assert "reward functions correct" in valid and "'' for '" in valid
    broken = tmp_path / "broken.py"
    broken.write_text("def correct(completions, answer):\n    return [0.0] * len(completions)\n")
    refused = cli("validate", "--task", "arithmetic", "--reward", str(broken), check=False)
    assert refused.returncode == 2 and "broken.py, line 1): its signature has no **kwargs" in refused.stderr

    dry = cli("dry-run", "--task", "arithmetic", "--prompts", "2", "--group-size", "3").stdout
    assert "2 groups of 3 completions" in dry and "groups without signal" in dry

    failing = tmp_path / "failing.py"
    failing.write_text(
        "def correct(completions, answer, trainer_state, **kwargs):\n"
        "    if trainer_state.global_step == 1:\n"
        "        raise RuntimeError('step two')\n"
        "    return [float(c.strip() == a) for c, a in zip(completions, answer)]\n"
    )
    workspace = str(tmp_path / "runs")
    small = ("--group-size", "3", "--prompts-per-step", "2", "--max-new-tokens", "6", "--workspace", workspace)
    paused = cli("train", "--task", "arithmetic", "--steps", "3", "--reward", str(failing), *small, check=False)
    assert paused.returncode == 3
    assert "paused at step 2: reward function correct (" in paused.stderr and "RuntimeError: step two" in paused.stderr
    run_id = paused.stderr.split("--resume ")[1].split()[0]
    resumed = cli("train", "--workspace", workspace, "--resume", run_id)  # the task's own reward.py
    assert f"run {run_id} finished at step 3" in resumed.stderr

    rescored = cli("rescore", run_id, "--workspace", workspace, "--reward", str(failing), "--step", "1").stdout
    assert "0 of 6 rewards change" in rescored
    weights = cli("train", "--task", "arithmetic", "--reward-weights", "nope=1", *small, check=False)
    assert weights.returncode == 2 and "reward_weights names nope" in weights.stderr


def test_a_step_with_no_scored_completion_is_reported(tmp_path, capsys):
    from workbench.cli import main

    folder = tmp_path / "task"
    folder.mkdir()
    (folder / "prompts.txt").write_text("1+1=\n2+2=\n")
    (folder / "reward.py").write_text("def unscored(completions, **kwargs):\n    return [None] * len(completions)\n")
    flags = ["--steps", "1", "--group-size", "2", "--prompts-per-step", "2", "--max-new-tokens", "4"]
    assert main(["train", "--task", str(folder), "--workspace", str(tmp_path / "w"), *flags]) == 0
    assert "step 1: no reward function scored any completion" in capsys.readouterr().err


HEAVY = {"torch", "transformers", "peft", "gradio"}  # ~3 s and ~320 MiB before a command did anything
COMMANDS = [
    *("train", "sweep", "build-tiny"),
    *("validate", "dry-run", "rescore"),
    *("query", "buckets", "tokens", "doctor", "export"),
    "app",
]
IN_ONE_PROCESS = """
import contextlib, io, sys
from workbench.cli import main
for argv, expected in {calls!r}:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
    assert code == expected, (argv, code)
print(sorted({{name.split(".")[0] for name in sys.modules}} & {heavy!r}))
"""


def imported_by(*args, code=0) -> set[str]:
    """The top-level packages `python -m workbench ARGS` imports, as -X importtime lists them."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "workbench", *args], capture_output=True, text=True
    )
    assert result.returncode == code, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in lines}


@pytest.mark.slow
def test_commands_that_neither_train_nor_sample_load_no_torch(tmp_path):
    """--help, every command's --help, query, validate, and buckets, tokens and doctor (here on a run that
    is not there: they import all they read with) answer at once: torch, transformers, peft and gradio load
    in the functions of the commands that train, sample, export or serve, never when the CLI is imported."""
    Store(tmp_path)  # an empty store to query
    assert "torch" in imported_by("train", "--task", "arithmetic", "--group-size", "1", code=2)  # it sees torch
    assert imported_by("--help") & HEAVY == set()
    assert imported_by("query", "--workspace", str(tmp_path), "select 1") & HEAVY == set()

    workspace = ["--workspace", str(tmp_path)]
    calls = [([command, "--help"], 0) for command in COMMANDS]
    calls += [(["validate", "--task", "arithmetic"], 0), (["query", *workspace, "SELECT 1"], 0)]
    calls += [([command, "nope", *workspace], 2) for command in ("buckets", "tokens", "doctor")]
    script = IN_ONE_PROCESS.format(calls=calls, heavy=HEAVY)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
