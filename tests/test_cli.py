"""The CLI as a user runs it: train, query, help, and errors on bad input."""

import subprocess
import sys


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


def test_bad_input_exits_2_with_a_message(tmp_path):
    bad_config = cli("train", "--task", "arithmetic", "--group-size", "1", "--workspace", str(tmp_path), check=False)
    assert bad_config.returncode == 2 and "group_size must be" in bad_config.stderr
    bad_task = cli("train", "--task", "nope", "--workspace", str(tmp_path), check=False)
    assert bad_task.returncode == 2 and "sample tasks: arithmetic" in bad_task.stderr
    bad_sql = cli("query", "--workspace", str(tmp_path), "SELEC 1", check=False)
    assert bad_sql.returncode == 2 and "syntax error" in bad_sql.stderr.lower()
    no_store = cli("query", "--workspace", str(tmp_path / "empty"), "SELECT 1", check=False)
    assert no_store.returncode == 2 and "no store" in no_store.stderr
