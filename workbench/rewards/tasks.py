"""Tasks: a folder with a prompts file, a `reward.py`, and maybe held-out prompts; prompt sets in JSONL, CSV,
Parquet or TXT."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from workbench.rewards.scoring import RewardSource, columns_of

# The sample tasks are the top-level `sample_tasks/` of a source checkout (and of its editable install), where a
# teacher looks for them; a built wheel carries that folder inside the package (pyproject.toml maps one onto the other).
_CHECKOUT = Path(__file__).resolve().parents[2]
if (_CHECKOUT / "pyproject.toml").exists():
    SAMPLE_TASKS = _CHECKOUT / "sample_tasks"
else:
    SAMPLE_TASKS = Path(__file__).resolve().parents[1] / "sample_tasks"
PROMPT_FILES = ("prompts.jsonl", "prompts.csv", "prompts.parquet", "prompts.txt")
EVAL_FILES = tuple(name.replace("prompts", "eval") for name in PROMPT_FILES)  # held-out prompts, never trained on
# Limits on what users send; the server's environment may change them (`user_limit`).
UPLOAD_LIMIT_MB = 50  # an uploaded prompts file (a sample task's is under 100 kB)
# About 5,000 tokens of English: past what a workshop's models take with a completion (SmolLM2's context is
# 8,192 tokens), and the sample tasks' prompts are under 300 characters. A 1 MB prompt would fail at step 1.
MAX_PROMPT_CHARS = 20_000


class TaskError(ValueError):
    """A task folder or prompts file is unusable; the message names the file, line and problem."""


@dataclass(frozen=True)
class Task:
    name: str
    folder: str
    rows: list[dict]  # each has 'prompt' (str or chat messages) and any extra columns
    rewards: RewardSource
    eval_rows: list[dict] = field(default_factory=list)  # held-out prompts: evaluated on, never trained on

    @property
    def columns(self) -> list[str]:
        """The dataset columns reward functions receive as keyword lists."""
        return columns_of(self.rows)

    @property
    def reference(self) -> str:
        """What `load_task` takes to load this task again: a sample task's name, or its folder."""
        return self.name if Path(self.folder) == SAMPLE_TASKS / self.name else self.folder

    def with_rewards(self, rewards: RewardSource) -> Task:
        """The same prompts scored by another reward source (an edited file, the editor's text)."""
        return dataclasses.replace(self, rewards=rewards)

    def split(self, eval_split: float) -> Task:
        """The task with a fraction of its prompts held out for evaluation, when it has no eval file.

        The split is fixed (seeded by a constant, not the run's seed), so runs of every seed evaluate
        on the same prompts and never train on them. The held-out rows keep the shuffled order, so
        an evaluation's first N prompts are a random sample of them.
        """
        if self.eval_rows or eval_split == 0:
            return self
        order = list(range(len(self.rows)))
        random.Random("eval split").shuffle(order)
        held_out = order[: max(1, round(eval_split * len(self.rows)))]
        if len(held_out) == len(self.rows):
            raise TaskError(f"task {self.name}: eval_split {eval_split} holds out all {len(self.rows)} prompts")
        kept = set(range(len(self.rows))) - set(held_out)
        rows = [row for i, row in enumerate(self.rows) if i in kept]
        return dataclasses.replace(self, rows=rows, eval_rows=[self.rows[i] for i in held_out])

    def batch(self, step: int, prompts_per_step: int, seed: int, round: int = 0) -> list[dict]:
        """The P rows of a step: epochs of seeded shuffles, a pure function of (seed, step, round).

        Resuming at any step gives the same prompts as an uninterrupted run. Rounds after the first
        (dynamic sampling's extra prompts) come from shuffles of their own.
        """
        n = len(self.rows)
        start = (step - 1) * prompts_per_step
        key = str(seed) if round == 0 else f"{seed}/round {round}"
        return [self.rows[_shuffled(key, k // n, n)[k % n]] for k in range(start, start + prompts_per_step)]


@functools.lru_cache(maxsize=4)
def _shuffled(seed: str, epoch: int, n: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(f"{seed}/{epoch}").shuffle(order)
    return tuple(order)


def sample_task_names() -> list[str]:
    return sorted(p.name for p in SAMPLE_TASKS.iterdir() if (p / "reward.py").exists())


def workspace_task(workspace: str | Path, name: str) -> Task:
    """A task a user of the app may name: a sample task, or one of the workspace's uploads by its folder's name
    (`<workspace>/uploads/<name>`), never another path on the machine."""
    uploads = Path(workspace) / "uploads"
    if name in sample_task_names():
        return load_task(name)
    if "/" not in name and "\\" not in name and name not in ("", ".", "..") and (uploads / name).is_dir():
        return load_task(uploads / name)
    kept = sorted(p.name for p in uploads.iterdir()) if uploads.is_dir() else []
    raise TaskError(
        f"no task {name!r}: name a sample task ({', '.join(sample_task_names())})"
        + (f" or an upload ({', '.join(kept)})" if kept else "")
    )


def load_task(name_or_path: str | Path) -> Task:
    """A sample task by name (`arithmetic`) or a task folder by path."""
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        folder = SAMPLE_TASKS / str(name_or_path)
    if not folder.is_dir():
        raise TaskError(
            f"task {str(name_or_path)!r} is neither a folder nor a sample task "
            f"(sample tasks: {', '.join(sample_task_names())})"
        )
    prompt_files = [folder / f for f in PROMPT_FILES if (folder / f).exists()]
    if not prompt_files:
        raise TaskError(f"task folder {folder} has no prompts file ({' or '.join(PROMPT_FILES)})")
    reward_file = folder / "reward.py"
    if not reward_file.exists():
        raise TaskError(f"task folder {folder} has no reward.py")
    rows = load_prompts(prompt_files[0])
    eval_rows = _load_eval(folder, columns_of(rows))
    return Task(folder.name, str(folder.resolve()), rows, RewardSource.from_file(reward_file), eval_rows)


def _load_eval(folder: Path, columns: list[str]) -> list[dict]:
    """The folder's held-out prompts (an eval file), with the columns the prompts have: rewards need them."""
    eval_files = [folder / f for f in EVAL_FILES if (folder / f).exists()]
    if not eval_files:
        return []
    rows = load_prompts(eval_files[0])
    if set(columns_of(rows)) != set(columns):
        raise TaskError(
            f"{eval_files[0]}: its columns ({', '.join(columns_of(rows)) or 'none'}) differ from the prompts' "
            f"({', '.join(columns) or 'none'}): the reward functions score both"
        )
    return rows


def load_prompts(path: str | Path, max_prompt_chars: int | None = None) -> list[dict]:
    """Rows with a 'prompt' column (a string or a list of chat messages) and any other columns.

    A prompt longer than `max_prompt_chars` (default `MAX_PROMPT_CHARS`) is refused here, with its line,
    rather than at the first step that tries to fit it into the model.
    """
    path = Path(path)
    if not path.exists():
        raise TaskError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = _read_jsonl(path)
    elif suffix == ".txt":
        rows = [{"prompt": line} for line in _read_text(path).splitlines() if line.strip()]
    elif suffix in (".csv", ".parquet"):
        rows = _read_table(path, suffix)
    else:
        raise TaskError(f"{path}: unsupported prompts format {suffix!r}; use .jsonl, .csv, .parquet or .txt")
    if not rows:
        raise TaskError(f"{path}: no prompts (the file is empty)")
    unit = "line" if suffix in (".jsonl", ".txt") else "row"
    longest = max_prompt_chars or user_limit("WORKBENCH_MAX_PROMPT_CHARS", MAX_PROMPT_CHARS)
    for number, row in enumerate(rows, start=1):
        problem = _prompt_problem(row) or _length_problem(row["prompt"], longest)
        if problem:
            raise TaskError(f"{path}, {unit} {number}: {problem}")
    return rows


def upload_limit_mb() -> int:
    """The largest prompts file a user may upload, in MB."""
    return user_limit("WORKBENCH_UPLOAD_LIMIT_MB", UPLOAD_LIMIT_MB)


def user_limit(variable: str, default: int) -> int:
    """A limit on what users send, from the server's environment (`WORKBENCH_UPLOAD_LIMIT_MB`,
    `WORKBENCH_MAX_PROMPT_CHARS`) or its default."""
    value = os.environ.get(variable, "")
    if not value.strip():
        return default
    if not value.strip().isdigit() or int(value) < 1:
        raise TaskError(f"{variable} must be a whole number above 0, not {value!r}")
    return int(value)


def _read_text(path: Path) -> str:
    """The file's text, decoded as UTF-8 (a leading byte-order mark dropped); a byte that is not is named by line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - data.rfind(b"\n", 0, error.start)
        raise TaskError(
            f"{path}, line {line}: not UTF-8 (byte 0x{data[error.start]:02X} at column {column}); save it as UTF-8"
        ) from None


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise TaskError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
        except RecursionError:  # the decoder recurses once per [ or {
            raise TaskError(f"{path}, line {number}: nested too deep to be a prompt's row") from None
        if not isinstance(row, dict):
            raise TaskError(f'{path}, line {number}: expected a JSON object like {{"prompt": ...}}')
        rows.append(row)
    return rows


def _read_table(path: Path, suffix: str) -> list[dict]:
    import pandas as pd  # only here: a training process that reads JSON Lines never pays its memory

    text = _read_text(path) if suffix == ".csv" else None
    try:
        frame = pd.read_csv(io.StringIO(text)) if text is not None else pd.read_parquet(path)
    except pd.errors.ParserError as error:  # "Error tokenizing data. C error: Expected 2 fields in line 3, saw 3"
        found = re.search(r"[Ee]xpected (\d+) fields in line (\d+), saw (\d+)", str(error))
        if found:
            expected, line, saw = found.groups()
            raise TaskError(f"{path}, line {line}: {saw} fields where the header has {expected}") from None
        raise TaskError(f"{path}: could not read as CSV ({error})") from None
    except Exception as error:  # pandas raises many types for a malformed file
        raise TaskError(f"{path}: could not read as {suffix[1:].upper()} ({error})") from None
    if "prompt" not in frame.columns:
        raise TaskError(f"{path}: no 'prompt' column (columns: {', '.join(map(str, frame.columns))})")
    return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _plain(value):
    """numpy arrays from Parquet (chat messages) -> lists, so rows are plain Python."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _prompt_problem(row: dict) -> str | None:
    if "prompt" not in row:
        return "no 'prompt' field"
    prompt = row["prompt"]
    if isinstance(prompt, str):
        return None if prompt.strip() else "the prompt is empty"
    if isinstance(prompt, list) and prompt:
        for message in prompt:
            if not (isinstance(message, dict) and {"role", "content"} <= message.keys()):
                return 'a chat prompt must be a list of {"role": ..., "content": ...} messages'
        return None
    return f"the prompt must be a string or a list of chat messages, not {type(prompt).__name__}"


def keep_upload(
    workspace: str,
    path: Path,
    rewards: RewardSource,
    *,
    max_mb: int | None = None,
    max_prompt_chars: int | None = None,
) -> Task:
    """Check an uploaded prompts file, then keep it as a task folder in the workspace.

    A file over `max_mb` (default `UPLOAD_LIMIT_MB`; for Parquet, its data uncompressed too) is refused
    before it is read, and a prompt over `max_prompt_chars` as `load_prompts` does. The folder is named
    by the file's content, so a later upload never replaces the data of a run that trained on an earlier
    one, and a run on uploaded prompts can be resumed after a restart.
    """
    largest = max_mb or upload_limit_mb()
    size = path.stat().st_size if path.exists() else 0
    if size > largest << 20:
        raise TaskError(
            f"{path}: {size / (1 << 20):,.1f} MB is over the upload limit of {largest} MB (WORKBENCH_UPLOAD_LIMIT_MB)"
        )
    if path.suffix.lower() == ".parquet" and _parquet_over(path, largest << 20):
        raise TaskError(
            f"{path}: its data is over the upload limit of {largest} MB once uncompressed (WORKBENCH_UPLOAD_LIMIT_MB)"
        )
    rows = load_prompts(path, max_prompt_chars)  # raises TaskError naming the file, line and problem
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    folder = Path(workspace) / "uploads" / f"{path.stem}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, folder / f"prompts{path.suffix.lower()}")
    return Task(path.stem, str(folder.resolve()), rows, rewards)


def _parquet_over(path: Path, largest: int) -> bool:
    """Whether a Parquet file's data, uncompressed and decoded, holds more than `largest` bytes: a few kB of
    Parquet can hold gigabytes (compression, and a dictionary value repeated on every row). Read 16 rows at a
    time, so that finding out takes little memory itself."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        metadata = parquet.metadata
        chunks = (
            metadata.row_group(g).column(c) for g in range(metadata.num_row_groups) for c in range(metadata.num_columns)
        )
        if sum(chunk.total_uncompressed_size for chunk in chunks) > largest:
            return True
        total = 0
        for batch in parquet.iter_batches(batch_size=16):
            total += batch.nbytes
            if total > largest:
                return True
    except Exception:  # not Parquet after all: load_prompts says so
        return False
    return False


def _length_problem(prompt, longest: int) -> str | None:
    """Why a prompt is too long to train on, or None; a chat prompt counts its messages' contents."""
    if isinstance(prompt, str):
        length = len(prompt)
    else:
        length = sum(len(m["content"]) if isinstance(m["content"], str) else len(str(m["content"])) for m in prompt)
    if length <= longest:
        return None
    return f"the prompt is {length:,} characters, over the limit of {longest:,} (WORKBENCH_MAX_PROMPT_CHARS)"


def as_chat(task: Task, workspace: str | Path | None = None) -> Task:
    """The task with each plain-string prompt sent as one user message, `[{"role": "user", "content": prompt}]`.

    A model's chat template is applied to chat prompts only (as TRL templates conversational prompts, lists of
    messages, and passes strings as they are), so an instruct model given plain strings never sees its chat format.
    Chat prompts stay as they are. With `workspace`, the wrapped task is kept as a task folder in
    `<workspace>/uploads/` (its prompts and held-out prompts as JSONL, the task folder's other files copied), so that
    a run on it resumes, and repeats from the command line, with the same prompts.
    """

    def wrap(rows: list[dict]) -> list[dict]:
        return [
            row | {"prompt": [{"role": "user", "content": row["prompt"]}]} if isinstance(row["prompt"], str) else row
            for row in rows
        ]

    if not any(isinstance(row["prompt"], str) for row in task.rows + task.eval_rows):
        return task
    wrapped = dataclasses.replace(task, rows=wrap(task.rows), eval_rows=wrap(task.eval_rows))
    if workspace is None:
        return wrapped
    prompts, held_out = (
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) for rows in (wrapped.rows, wrapped.eval_rows)
    )
    digest = hashlib.sha256((prompts + held_out).encode()).hexdigest()[:8]
    folder = Path(workspace) / "uploads" / f"{Path(task.folder).name}-chat-{digest}"
    if not (folder / "prompts.jsonl").exists():  # written last: a folder that has it is whole
        skip = shutil.ignore_patterns("prompts.*", "eval.*", "__pycache__")
        shutil.copytree(task.folder, folder, ignore=skip, dirs_exist_ok=True)
        if held_out:
            (folder / "eval.jsonl").write_text(held_out)
        (folder / "prompts.jsonl").write_text(prompts)
    return dataclasses.replace(wrapped, folder=str(folder.resolve()))


def save_reward(workspace: str, task: Task) -> Path:
    """The run's reward as a file (`<workspace>/rewards/reward-<version>.py`), for the CLI command;
    an uploaded task's folder gets it as its reward.py when it has none, so the folder is a whole task."""
    path = Path(workspace) / "rewards" / f"reward-{task.rewards.version}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(task.rewards.text)
    task_reward = Path(task.folder) / "reward.py"
    if not task_reward.exists():
        task_reward.write_text(task.rewards.text)
    return path
