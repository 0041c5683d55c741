"""Prompt files in every format, and errors that name the file, line and problem; Hugging Face datasets as tasks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import serve_app

from workbench.rewards.scoring import RewardSource
from workbench.rewards.tasks import TaskError, keep_upload, load_prompts, load_task
from workbench.store.database import Store


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


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("latin.jsonl", '{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n', "line 2: not UTF-8 (byte 0xE9 at column 16)"),
        ("latin.csv", "prompt,answer\nok,1\ncaf\xe9,2\n", "line 3: not UTF-8 (byte 0xE9 at column 4)"),
        ("latin.txt", "ok\ncaf\xe9\n", "line 2: not UTF-8 (byte 0xE9 at column 4)"),
        (
            "deep.jsonl",
            '{"prompt": "ok"}\n{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
            "line 2: nested too deep",
        ),
        ("fields.csv", "prompt,answer\na,1\nb,2,3\n", "line 3: 3 fields where the header has 2"),
    ],
)
def test_undecodable_and_unparsable_files_name_the_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1"))  # a latin-1 é is the byte 0xE9, which UTF-8 never starts with
    with pytest.raises(TaskError) as error:
        load_prompts(path)
    assert str(error.value).startswith(f"{path}, {message}")


def test_a_byte_order_mark_is_not_part_of_the_first_row(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "hi"}\n')
    assert load_prompts(path) == [{"prompt": "hi"}]


def test_an_upload_over_the_size_limit_is_refused_with_its_name_and_the_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.jsonl"
    path.write_text('{"prompt": "1+1="}\n' * 120_000)  # 2.2 MB
    with pytest.raises(TaskError, match=r"big.jsonl: 2.2 MB is over the upload limit of 1 MB"):
        keep_upload(str(tmp_path / "ws"), path, RewardSource(""), max_mb=1)
    monkeypatch.setenv("WORKBENCH_UPLOAD_LIMIT_MB", "2")
    with pytest.raises(TaskError, match=r"over the upload limit of 2 MB \(WORKBENCH_UPLOAD_LIMIT_MB\)"):
        keep_upload(str(tmp_path / "ws"), path, RewardSource(""))
    assert not (tmp_path / "ws").exists()
    monkeypatch.setenv("WORKBENCH_UPLOAD_LIMIT_MB", "3")
    assert len(keep_upload(str(tmp_path / "ws"), path, RewardSource("")).rows) == 120_000


def test_a_parquet_upload_is_measured_uncompressed(tmp_path):
    path = tmp_path / "zipped.parquet"
    pd.DataFrame({"prompt": ["x" * 1000] * 3000}).to_parquet(path)  # 3 MB of text in a few kB
    assert path.stat().st_size < 100_000
    with pytest.raises(TaskError, match=r"zipped.parquet: its data is over the upload limit of 1 MB once uncompressed"):
        keep_upload(str(tmp_path / "ws"), path, RewardSource(""), max_mb=1)
    assert len(keep_upload(str(tmp_path / "ws"), path, RewardSource(""), max_mb=4).rows) == 3000


def test_a_prompt_over_the_length_limit_is_refused_at_upload(tmp_path, monkeypatch):
    path = tmp_path / "long.jsonl"
    rows = [{"prompt": "1+1="}, {"prompt": "x" * 1_000_000}]  # would be 1 MB of context at step 1
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(TaskError) as error:
        keep_upload(str(tmp_path / "ws"), path, RewardSource(""))
    assert str(error.value) == (
        f"{path}, line 2: the prompt is 1,000,000 characters, over the limit of 20,000 (WORKBENCH_MAX_PROMPT_CHARS)"
    )
    chat = tmp_path / "chat.jsonl"
    messages = [{"role": "system", "content": "y" * 60}, {"role": "user", "content": "z" * 60}]
    chat.write_text(json.dumps({"prompt": messages}) + "\n")
    with pytest.raises(TaskError, match="line 1: the prompt is 120 characters, over the limit of 100"):
        load_prompts(chat, max_prompt_chars=100)
    monkeypatch.setenv("WORKBENCH_MAX_PROMPT_CHARS", "120")
    assert load_prompts(chat)[0]["prompt"] == messages


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


# Hugging Face datasets (hub_task, --task hf:ID): built here, offline, as a saved folder, a folder of data files,
# and a dataset in a temporary `datasets` cache that `load_dataset("someone/tiny-math")` resolves from.

REWARD = (
    "def correct(completions, answer, **kwargs):\n    return [float(c == a) for c, a in zip(completions, answer)]\n"
)
QUESTIONS = [{"question": f"{k}+1=", "answer": str(k + 1), "level": k % 2} for k in range(6)]


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """A `datasets` cache of its own, offline, holding someone/tiny-math (train: 6 rows, test: 2) as a download
    leaves it: `<cache>/someone___tiny-math/default/0.0.0/<hash>/`."""
    datasets = pytest.importorskip("datasets")
    from datasets.packaged_modules.json.json import Json

    cache = tmp_path / "hf" / "datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    files = {"train": tmp_path / "train.jsonl", "test": tmp_path / "test.jsonl"}
    for split, rows in (("train", QUESTIONS), ("test", QUESTIONS[:2])):
        files[split].write_text("".join(json.dumps(row) + "\n" for row in rows))
    build = tmp_path / "build"
    data_files = {split: str(path) for split, path in files.items()}
    builder = Json(
        cache_dir=str(build), dataset_name="tiny-math", hash="0" * 16, config_id="default", data_files=data_files
    )
    builder.download_and_prepare()
    cache.mkdir(parents=True)
    (build / "tiny-math").rename(cache / "someone___tiny-math")  # a hub id's folder: namespace___name
    return tmp_path / "hf"


def hub(path: str, *args, **kwargs):
    from workbench.rewards.hf_datasets import hub_task
    from workbench.rewards.scoring import RewardSource

    return hub_task(path, *args, reward=RewardSource(REWARD, "reward.py"), **kwargs)


def test_a_hub_id_loads_from_the_cache_offline_with_columns_renamed_and_kept_as_a_task_folder(hf_cache, tmp_path):
    task = hub("someone/tiny-math", columns="question=prompt,answer", workspace=tmp_path / "ws")
    assert task.rows == [{"prompt": q["question"], "answer": q["answer"]} for q in QUESTIONS]
    assert task.name == "someone/tiny-math" and task.columns == ["answer"]
    folder = Path(task.folder)
    assert folder.parent == (tmp_path / "ws" / "uploads").resolve()  # where the app names uploads
    assert (folder / "reward.py").read_text() == REWARD
    assert load_task(folder).rows == task.rows  # what a resume and an export load again
    every_column = hub("someone/tiny-math", "default", split="test", columns={"question": "prompt"})
    assert every_column.rows == [{"prompt": "0+1="}, {"prompt": "1+1="}]


@pytest.mark.parametrize(
    ("split", "answers"),
    [("train", ["1", "2", "3"]), ("test", ["9"]), ("train[:2]", ["1", "2"]), ("train[-1:]+test", ["3", "9"])],
)
def test_a_saved_dataset_folder_gives_the_split_load_dataset_would(tmp_path, split, answers):
    datasets = pytest.importorskip("datasets")
    train = datasets.Dataset.from_list([{"prompt": f"{k}+1=", "answer": str(k + 1)} for k in range(3)])
    test = datasets.Dataset.from_list([{"prompt": "8+1=", "answer": "9"}])
    datasets.DatasetDict(train=train, test=test).save_to_disk(tmp_path / "saved")
    assert [row["answer"] for row in hub(str(tmp_path / "saved"), split=split).rows] == answers


def test_a_saved_dataset_keeps_chat_prompts_as_chat(tmp_path):
    datasets = pytest.importorskip("datasets")
    chat = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "2+2="}]
    datasets.Dataset.from_list([{"prompt": chat, "answer": "4"}]).save_to_disk(tmp_path / "chat")
    task = hub(str(tmp_path / "chat"))
    assert task.rows == [{"prompt": chat, "answer": "4"}]


def test_a_folder_of_data_files_is_a_dataset_with_its_splits(hf_cache, tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    pd.DataFrame(QUESTIONS).to_parquet(folder / "train.parquet")
    pd.DataFrame(QUESTIONS[:1]).to_parquet(folder / "test.parquet")
    task = hub(str(folder), split="test", columns="question=prompt,answer")
    assert task.rows == [{"prompt": "0+1=", "answer": "1"}]


def test_dataset_rows_meet_the_upload_checks_and_limits_naming_the_dataset_and_row(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([{"prompt": "1+1="}, {"prompt": "  "}]).save_to_disk(tmp_path / "blank")
    with pytest.raises(TaskError) as error:
        hub(str(tmp_path / "blank"))
    assert str(error.value) == f"dataset {tmp_path / 'blank'} (train), row 2: the prompt is empty"
    datasets.Dataset.from_list([{"prompt": "1+1="}, {"prompt": "x" * 101}]).save_to_disk(tmp_path / "long")
    monkeypatch.setenv("WORKBENCH_MAX_PROMPT_CHARS", "100")
    with pytest.raises(TaskError, match=r"\(train\), row 2: the prompt is 101 characters, over the limit of 100"):
        hub(str(tmp_path / "long"))
    rows = [{"prompt": "y" * 1000} for _ in range(2000)]  # 2 MB
    datasets.Dataset.from_list(rows).save_to_disk(tmp_path / "big")
    monkeypatch.delenv("WORKBENCH_MAX_PROMPT_CHARS")
    monkeypatch.setenv("WORKBENCH_UPLOAD_LIMIT_MB", "1")
    with pytest.raises(TaskError, match=r"\(train\): 1.9 MB of data is over the upload limit of 1 MB"):
        hub(str(tmp_path / "big"))
    assert len(hub(str(tmp_path / "big"), split="train[:500]").rows) == 500  # a slice is its share of the data


@pytest.mark.parametrize(
    ("args", "kwargs", "words"),
    [
        (["someone/missing"], {}, ["'someone/missing'", "not in the local datasets cache", "offline"]),
        (["someone/tiny-math", "other"], {}, ["'someone/tiny-math:other'", "config 'other'", "default"]),
        (["someone/tiny-math"], {"split": "validation"}, ["no split 'validation'", "splits: train, test"]),
        (["someone/tiny-math"], {"columns": "q=prompt"}, ["no column 'q'", "columns: question, answer, level"]),
        (["someone/tiny-math"], {}, ["no 'prompt' column", "question=prompt"]),
        (["someone/tiny-math"], {"columns": "question=prompt,level=prompt"}, ["renamed to the same name"]),
        (["someone/tiny-math"], {"columns": "question=,answer"}, ["SOURCE=TARGET"]),
        (["./no-such-folder"], {}, ["./no-such-folder: no such dataset folder"]),
        (["json"], {}, ["'json' is a datasets builder, not a dataset"]),  # it would read the current folder's files
    ],
)
def test_a_dataset_that_cannot_be_loaded_says_why_and_what_there_is(hf_cache, args, kwargs, words):
    with pytest.raises(TaskError) as error:
        hub(*args, **kwargs)
    for word in words:
        assert word in str(error.value)


def test_the_app_loads_hub_ids_only_never_a_folder_of_the_server(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([{"prompt": "1+1="}]).save_to_disk(tmp_path / "saved")
    with pytest.raises(TaskError, match="folder on the server: the app loads datasets by hub id only"):
        hub(str(tmp_path / "saved"), paths=False)


def cli(*args, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args], env=os.environ | env, cwd=cwd, capture_output=True, text=True
    )


@pytest.mark.slow
def test_the_cli_trains_on_a_hub_dataset_from_the_cache_and_refuses_what_it_cannot_load(hf_cache, tmp_path):
    """`--task hf:ID --columns ... --reward FILE` in a process whose HF_HOME is the test's cache, offline."""
    (tmp_path / "reward.py").write_text(REWARD)
    env = {"HF_HOME": str(hf_cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    dataset = ["--task", "hf:someone/tiny-math", "--columns", "question=prompt,answer", "--reward", "reward.py"]
    small = "--steps 1 --group-size 2 --prompts-per-step 2 --max-new-tokens 4 --device cpu".split()
    trained = cli("train", *dataset, "--split", "train[:4]", "--workspace", "ws", *small, env=env, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run = Store(tmp_path / "ws").runs().iloc[0]
    kept = load_task(Store(tmp_path / "ws").run(run.run_id)["task_path"])  # what --resume and export load
    assert [row["prompt"] for row in kept.rows] == ["0+1=", "1+1=", "2+1=", "3+1="]
    missing = cli("validate", "--task", "hf:someone/missing", "--reward", "reward.py", env=env, cwd=tmp_path)
    assert missing.returncode == 2 and "'someone/missing' is not in the local datasets cache" in missing.stderr
    no_reward = cli("validate", "--task", "hf:someone/tiny-math", env=env, cwd=tmp_path)
    assert no_reward.returncode == 2 and "needs --reward FILE" in no_reward.stderr
    stray = cli("validate", "--task", "arithmetic", "--split", "test", env=env, cwd=tmp_path)
    assert stray.returncode == 2 and "use them with --task hf:ID" in stray.stderr


@pytest.mark.slow
def test_the_app_loads_a_hub_dataset_scored_by_the_editors_reward(hf_cache, tmp_path, monkeypatch):
    from gradio_client import Client

    monkeypatch.setenv("HF_HOME", str(hf_cache))  # the app's process reads the test's cache
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with serve_app(tmp_path / "ws") as url:
        client = Client(url, verbose=False)
        message, preview = client.predict(
            "someone/tiny-math", "test", "question=prompt,answer", REWARD, api_name="/load_hub_dataset"
        )
        assert "**someone/tiny-math**: 2 prompts" in message and preview["headers"] == ["prompt", "answer"]
        refused, _ = client.predict("someone/missing", "train", "", REWARD, api_name="/load_hub_dataset")
        assert refused.startswith("**Dataset refused:**") and "not in the local datasets cache" in refused
    (kept,) = (tmp_path / "ws" / "uploads").iterdir()
    assert (kept / "reward.py").read_text() == REWARD
