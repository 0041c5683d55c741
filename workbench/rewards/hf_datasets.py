"""Tasks from Hugging Face datasets, as TRL loads them: `load_dataset(path, name, split=split)`, the columns
renamed to the workbench's (a `prompt` column; the others reach the reward functions).

A hub id loads from the `datasets` cache when the machine is offline; a local folder is one `save_to_disk` wrote
or one of data files. The rows are kept as a task folder like an upload's (`tasks.keep_upload`), so that the
upload checks apply to them and a run on them resumes, sweeps and exports like any task's. `datasets` is imported
inside the loader: the app and the CLI start without it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tempfile
from pathlib import Path

from workbench.rewards.scoring import RewardSource
from workbench.rewards.tasks import UPLOAD_LIMIT_MB, Task, TaskError, keep_upload, user_limit

SAVED_DATASET_FILES = ("dataset_dict.json", "state.json")  # what `save_to_disk` leaves in its folder


def hub_task(
    path: str,
    name: str | None = None,
    *,
    split: str = "train",
    columns: str | dict[str, str] | None = None,
    reward: RewardSource | str | Path,
    workspace: str | Path | None = None,
    paths: bool = True,
) -> Task:
    """A task from a Hugging Face dataset: a hub id (from the `datasets` cache when offline), or a local folder
    (saved with `save_to_disk`, or of parquet/json/csv files); `name` its config, `split` as `load_dataset` takes
    it (`train`, `train[:500]`, `train+test`); `columns` keeps and renames columns, `{"question": "prompt",
    "answer": "answer"}` or `"question=prompt,answer"` (all of them kept when None; a `prompt` column is needed).

    A dataset has no reward.py: `reward` (a RewardSource or a reward file) scores it, and is kept in the folder.
    The rows are kept in `<workspace>/uploads/` (a temporary folder without `workspace`) and checked as an
    upload's are. `paths=False` (the app) refuses local folders: a user names hub ids only.
    """
    rewards = reward if isinstance(reward, RewardSource) else RewardSource.from_file(reward)
    described = path + (f":{name}" if name else "")
    rows = _dataset_rows(path, name, split, parse_columns(columns) if isinstance(columns, str) else columns, paths)
    workspace = Path(workspace) if workspace is not None else Path(tempfile.mkdtemp(prefix="workbench-dataset-"))
    stem = re.sub(r"[^\w.-]+", "_", Path(path).name if Path(path).expanduser().is_dir() else described)
    staged = Path(tempfile.mkdtemp(prefix="workbench-dataset-")) / f"{stem}.jsonl"
    staged.write_text("".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows))
    try:
        task = keep_upload(str(workspace), staged, rewards)  # the upload checks and limits, by line
    except TaskError as error:  # named by the dataset and its row, not by the staged file
        message = str(error).replace(str(staged), f"dataset {described} ({split})").replace(", line ", ", row ")
        raise TaskError(message) from None
    finally:
        shutil.rmtree(staged.parent)
    kept = Path(task.folder) / "reward.py"  # the folder is a whole task: the CLI resumes and exports it
    if not kept.exists():
        kept.write_text(rewards.text)
    return dataclasses.replace(task, name=described)


def parse_hub_name(text: str) -> tuple[str, str | None]:
    """`openai/gsm8k:main` -> ('openai/gsm8k', 'main'): a dataset and its config, as `--task hf:...` names them."""
    path, _, name = text.partition(":")
    if not path:
        raise TaskError(f"{text!r} names no dataset: give a hub id or a folder, e.g. hf:openai/gsm8k:main")
    return path, name or None


def parse_columns(text: str) -> dict[str, str]:
    """`question=prompt,answer` -> {'question': 'prompt', 'answer': 'answer'}: the columns kept, each renamed."""
    mapping = {}
    for part in text.split(","):
        source, _, target = (word.strip() for word in part.partition("="))
        if not source or ("=" in part and not target):
            raise TaskError(f"columns {text!r}: each must be SOURCE=TARGET or a name, e.g. question=prompt,answer")
        mapping[source] = target or source
    return mapping


def _dataset_rows(path: str, name: str | None, split: str, columns: dict[str, str] | None, paths: bool) -> list[dict]:
    """The split's rows, columns kept and renamed; errors name the dataset and list what it has."""
    try:
        import datasets
    except ImportError:
        raise TaskError("a Hugging Face dataset needs the datasets package: pip install datasets") from None
    described = path + (f":{name}" if name else "")
    folder = Path(path).expanduser()
    if folder.exists() and not paths:
        raise TaskError(f"{path!r} is a folder on the server: the app loads datasets by hub id only")
    if not folder.exists() and path in _builders():  # it would read data files of the current folder
        raise TaskError(f"{path!r} is a datasets builder, not a dataset: give a hub id or a folder of data files")
    if not folder.exists() and path.startswith((".", "/", "~")):
        raise TaskError(f"{path}: no such dataset folder")
    if folder.exists() and not folder.is_dir():
        raise TaskError(f"{path}: not a folder; a dataset is a hub id or a folder (save_to_disk, or data files)")
    try:
        if any((folder / saved).exists() for saved in SAVED_DATASET_FILES):
            splits = datasets.load_from_disk(str(folder))
            splits = splits if isinstance(splits, datasets.DatasetDict) else {"train": splits}
        else:
            splits = datasets.load_dataset(str(folder) if folder.is_dir() else path, name)
    except datasets.exceptions.DatasetNotFoundError as error:  # online: the hub has no such dataset for us
        raise TaskError(f"dataset {described!r} is neither a folder nor in the local cache: {error}") from None
    except (ConnectionError, FileNotFoundError) as error:  # offline, or the hub unreachable, and not cached
        offline = "the machine is offline (HF_HUB_OFFLINE=1)" if datasets.config.HF_HUB_OFFLINE else "the hub failed"
        raise TaskError(
            f"dataset {described!r} is not in the local datasets cache ({datasets.config.HF_DATASETS_CACHE}) and "
            f"{offline}: load it once with network, or name a local dataset folder ({error})"
        ) from None
    except (ValueError, datasets.exceptions.DatasetGenerationError) as error:  # no such config; unreadable files
        raise TaskError(f"dataset {described!r}: {str(error).replace(chr(10), '; ')}") from None
    where = f"dataset {described} ({split})"
    dataset = _renamed(_select_split(datasets, splits, split, described), columns, where)
    limit = user_limit("WORKBENCH_UPLOAD_LIMIT_MB", UPLOAD_LIMIT_MB)
    size = dataset.data.nbytes * len(dataset) / max(1, dataset.data.num_rows)  # a slice's share of its table
    if size > limit << 20:  # refused before its rows are made Python objects: a hub dataset can be huge
        raise TaskError(
            f"{where}: {size / (1 << 20):,.1f} MB of data is over the upload limit of {limit} MB "
            "(WORKBENCH_UPLOAD_LIMIT_MB): take a slice, e.g. train[:1000]"
        )
    return dataset.to_list()


def _builders() -> set[str]:
    """`load_dataset`'s own builders (json, parquet, csv, ...): names that are no dataset."""
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    return {*_PACKAGED_DATASETS_MODULES, "cache"}


def _select_split(datasets, splits, split: str, described: str):
    """The rows `split` names in `load_dataset`'s syntax (train, train[:10%], train+test), from any dataset."""
    sizes = {key: len(rows) for key, rows in splits.items()}
    try:
        parts = datasets.ReadInstruction.from_spec(split).to_absolute(sizes)
    except ValueError:
        raise TaskError(f"dataset {described!r} has no split {split!r} (splits: {', '.join(sizes)})") from None
    chosen = [splits[part.splitname].select(range(part.from_, part.to)) for part in parts]
    return chosen[0] if len(chosen) == 1 else datasets.concatenate_datasets(chosen)


def _renamed(dataset, columns: dict[str, str] | None, where: str):
    """The dataset with only the mapped columns, renamed; every column when there is no mapping."""
    have = ", ".join(dataset.column_names)
    if columns:
        missing = [source for source in columns if source not in dataset.column_names]
        if missing:
            raise TaskError(f"{where}: no column {missing[0]!r} (columns: {have})")
        targets = list(columns.values())
        if len(set(targets)) < len(targets):
            raise TaskError(f"{where}: two columns are renamed to the same name ({', '.join(targets)})")
        dataset = dataset.select_columns(list(columns))
        dataset = dataset.rename_columns({s: t for s, t in columns.items() if s != t})
    if "prompt" not in dataset.column_names:
        raise TaskError(f"{where}: no 'prompt' column (columns: {have}): map one, e.g. question=prompt")
    return dataset
