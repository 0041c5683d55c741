"""Prompt files in every format, and errors that name the file, line and problem."""

import json

import pandas as pd
import pytest

from workbench.rewards.tasks import TaskError, load_prompts, load_task


def test_arithmetic_sample_task_loads():
    task = load_task("arithmetic")
    assert task.name == "arithmetic"
    assert task.rows[0].keys() == {"prompt", "answer"}
    assert "def correct(completions" in task.rewards.text
    assert task.columns == ["answer"]


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet", "txt"])
def test_each_format_reads_prompts_and_columns(tmp_path, suffix):
    rows = [{"prompt": "1+1=", "answer": "2"}, {"prompt": "2+2=", "answer": "4"}]
    path = tmp_path / f"prompts.{suffix}"
    if suffix == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    elif suffix == "txt":
        path.write_text("1+1=\n\n2+2=\n")
    else:
        frame = pd.DataFrame(rows, dtype=str)
        frame.to_csv(path, index=False) if suffix == "csv" else frame.to_parquet(path)
    loaded = load_prompts(path)
    assert [r["prompt"] for r in loaded] == ["1+1=", "2+2="]
    if suffix != "txt":
        assert [str(r["answer"]) for r in loaded] == ["2", "4"]


def test_chat_prompts_are_accepted(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"prompt": [{"role": "user", "content": "hi"}], "answer": "x"}) + "\n")
    assert load_prompts(path)[0]["prompt"][0]["content"] == "hi"


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("empty.jsonl", "", ["empty.jsonl", "no prompts"]),
        ("bad.jsonl", '{"prompt": "a"}\n{"prompt": \n', ["bad.jsonl", "line 2", "not valid JSON"]),
        ("noprompt.jsonl", '{"prompt": "a"}\n{"question": "b"}\n', ["line 2", "no 'prompt' field"]),
        ("blank.jsonl", '{"prompt": "  "}\n', ["line 1", "empty"]),
        ("messages.jsonl", '{"prompt": [{"text": "x"}]}\n', ["line 1", "role"]),
        ("nocolumn.csv", "question,answer\nq,a\n", ["nocolumn.csv", "no 'prompt' column"]),
        ("prompts.xlsx", "x", ["unsupported", ".xlsx"]),
    ],
)
def test_bad_prompt_files_name_the_problem(tmp_path, name, content, words):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(TaskError) as error:
        load_prompts(path)
    for word in words:
        assert word in str(error.value)


def test_unknown_task_lists_the_sample_tasks():
    with pytest.raises(TaskError, match="arithmetic"):
        load_task("no-such-task")


def test_task_folder_without_reward(tmp_path):
    (tmp_path / "prompts.txt").write_text("hello\n")
    with pytest.raises(TaskError, match="no reward.py"):
        load_task(tmp_path)


def test_batches_cover_each_prompt_once_per_epoch_and_depend_only_on_seed_and_step():
    task = load_task("arithmetic")
    n = len(task.rows)
    epoch = [row["prompt"] for step in range(1, n // 8 + 1) for row in task.batch(step, 8, seed=3)]
    assert sorted(epoch) == sorted(row["prompt"] for row in task.rows)
    assert task.batch(7, 8, seed=3) == task.batch(7, 8, seed=3)
    assert task.batch(7, 8, seed=3) != task.batch(7, 8, seed=4)


def _task_folder(folder, prompts: int, eval_text: str | None = None, eval_name: str = "eval.jsonl"):
    folder.mkdir(exist_ok=True)
    rows = [{"prompt": f"{k}+1=", "answer": str(k + 1)} for k in range(prompts)]
    (folder / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "reward.py").write_text("def correct(completions, answer, **kwargs):\n    return [0.0] * len(answer)\n")
    if eval_text is not None:
        (folder / eval_name).write_text(eval_text)
    return folder


@pytest.mark.parametrize("eval_name", ["eval.jsonl", "eval.csv", "eval.txt"])
def test_an_eval_file_holds_the_held_out_prompts(tmp_path, eval_name):
    text = {
        "eval.jsonl": '{"prompt": "7+7=", "answer": "14"}\n',
        "eval.csv": "prompt,answer\n7+7=,14\n",
        "eval.txt": "7+7=\n",
    }[eval_name]
    if eval_name == "eval.txt":  # a plain-text eval file has no answer column: the prompts must have none either
        (tmp_path / "prompts.txt").write_text("1+1=\n2+2=\n")
        (tmp_path / "reward.py").write_text("def r(completions, **kwargs):\n    return [0.0] * len(completions)\n")
        (tmp_path / eval_name).write_text(text)
    else:
        _task_folder(tmp_path, 4, text, eval_name)
    task = load_task(tmp_path)
    assert [row["prompt"] for row in task.eval_rows] == ["7+7="]
    assert task.split(0.5) is task  # an eval file is the held-out set: nothing more is held out


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"prompt": "7+7=", "answer": "14"}\n{"prompt": \n', ["eval.jsonl", "line 2", "not valid JSON"]),
        ('{"prompt": "7+7=", "answer": "14"}\n{"answer": "1"}\n', ["eval.jsonl", "line 2", "no 'prompt' field"]),
        ('{"prompt": "7+7="}\n', ["eval.jsonl", "columns", "answer"]),
    ],
)
def test_a_bad_eval_file_is_named_with_its_line_and_problem(tmp_path, text, words):
    _task_folder(tmp_path, 4, text)
    with pytest.raises(TaskError) as error:
        load_task(tmp_path)
    for word in words:
        assert word in str(error.value)


def test_the_split_holds_out_a_fixed_fraction_that_training_never_sees(tmp_path):
    task = load_task(_task_folder(tmp_path, 40))
    split = task.split(0.25)
    assert len(split.eval_rows) == 10 and len(split.rows) == 30
    held_out = {row["prompt"] for row in split.eval_rows}
    trained = {row["prompt"] for row in split.rows}
    assert not held_out & trained and held_out | trained == {row["prompt"] for row in task.rows}
    assert split.eval_rows == task.split(0.25).eval_rows  # fixed: the same for every run, whatever its seed
    batches = {row["prompt"] for seed in (0, 1) for step in range(1, 20) for row in split.batch(step, 8, seed)}
    assert batches == trained
    assert task.split(0.0) is task
    with pytest.raises(TaskError, match="holds out all"):
        load_task(_task_folder(tmp_path / "one", 1)).split(0.5)
