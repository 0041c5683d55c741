"""Every sample task: its prompts load, its reward imports nothing from the workbench, and it scores
a right and a wrong completion as worked out by hand (through the reward worker, as in training)."""

import ast
import random

import pytest

from workbench.engine.tiny_corpus import TASKS, WIDER
from workbench.rewards.scoring import Scorer
from workbench.rewards.tasks import SAMPLE_TASKS, load_task, sample_task_names

# task -> (row, [(completion, {reward function: value})])
CASES = {
    "arithmetic": ({"prompt": "23+58=", "answer": "81"}, [(" 81", {"correct": 1.0}), ("18", {"correct": 0.0})]),
    "format_following": (
        {"prompt": "tags 3+5=", "answer": "8"},
        [
            ("<think>3+5</think><answer>8</answer>", {"format_reward": 1.0, "correct": 1.0}),
            ("<think>3+5</think><answer>9</answer>", {"format_reward": 1.0, "correct": 0.0}),
            ("8", {"format_reward": 0.0, "correct": 0.0}),
        ],
    ),
    "reversal": (
        {"prompt": "reverse abcd:", "answer": "dcba"},
        [
            ("dcba", {"reversed_letters": 1.0}),
            ("dcbx", {"reversed_letters": 0.75}),
            ("dc", {"reversed_letters": 0.5}),
            ("abcd", {"reversed_letters": 0.0}),
            ("dcbaaa", {"reversed_letters": 4 / 6}),
        ],
    ),  # fmt: skip
    "length_target": (
        {"prompt": "write 5 letters:", "target": 5},
        [("abcde", {"length_reward": 0.0}), ("abc", {"length_reward": -2.0}), ("abcdefg", {"length_reward": -2.0})],
    ),
    "countdown": (
        {"prompt": "use 2 3 5 make 13:", "numbers": [2, 3, 5], "target": 13},
        [
            ("3*5-2", {"countdown_reward": 1.0}),
            ("2+3+5", {"countdown_reward": 0.1}),
            ("3*5", {"countdown_reward": 0.0}),
            ("13", {"countdown_reward": 0.0}),
            ("__import__('os')", {"countdown_reward": 0.0}),
            ("3*(5-", {"countdown_reward": 0.0}),
        ],
    ),  # fmt: skip
    "word_problems": (
        {"prompt": "Ann has 3 apples and gets 4 more. How many apples now? ", "answer": "7"},
        [("7", {"correct": 1.0}), ("7 apples", {"correct": 1.0}), ("6", {"correct": 0.0}), ("", {"correct": 0.0})],
    ),
    "coding": (
        {"prompt": "# return x doubled\ndef f(x): return ", "tests": [[0, 0], [1, 2], [2, 4], [5, 10]]},
        [
            ("x*2", {"tests_passed": 1.0}),
            ("x*x", {"tests_passed": 0.5}),  # x*x is right for 0 and 2
            ("x+", {"tests_passed": 0.0}),
            ("1//(x-1)", {"tests_passed": 0.0}),  # (0 -> -1, 1 -> error, 2 -> 1, 5 -> 0)
            ("9**9**9", {"tests_passed": 0.0}),
            ("open('/etc/passwd')", {"tests_passed": 0.0}),
        ],
    ),  # fmt: skip
    "short_answers": (
        {
            "prompt": [{"role": "user", "content": "In at most 3 words: what is the capital of Peru?"}],
            "answer": "Lima",
            "max_words": 3,
        },
        [
            ("Lima.", {"within_word_limit": 1.0, "names_the_capital": 1.0}),
            ("It is Lima, Peru.", {"within_word_limit": 0.75, "names_the_capital": 1.0}),
            ("Cusco", {"within_word_limit": 1.0, "names_the_capital": 0.0}),
            ("Limassol", {"within_word_limit": 1.0, "names_the_capital": 0.0}),
        ],
    ),  # fmt: skip
    "polite_reply": (  # its judge asks the run's model: outside a run it scores nothing (None)
        {"prompt": [{"role": "user", "content": "Answer this complaint briefly: The plant I ordered arrived dead."}]},
        [
            ("I am so sorry! We will send you a new plant today.", {"brief": 1.0, "judge": None}),
            (" ".join(["sorry"] * 80), {"brief": 0.5, "judge": None}),
        ],
    ),
}
# Tasks for a real instruct model (chat prompts): the tiny model is not warm-started on them.
CHAT_TASKS = {"short_answers", "polite_reply"}


def test_every_sample_task_has_a_case_and_the_tiny_model_knows_the_others():
    assert sorted(CASES) == sample_task_names() == sorted(set(TASKS) | CHAT_TASKS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_prompts_file_loads_with_datasets_as_trl_reads_it(name):
    """TRL's GRPOTrainer takes a datasets.Dataset: every column must have one type across rows."""
    datasets = pytest.importorskip("datasets")
    task = load_task(name)
    dataset = datasets.load_dataset("json", data_files=str(SAMPLE_TASKS / name / "prompts.jsonl"), split="train")
    assert len(dataset) == len(task.rows)
    assert set(dataset.column_names) == {"prompt", *task.columns}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_reward_scores_right_and_wrong_completions_as_worked_out_by_hand(name):
    task = load_task(name)
    row, cases = CASES[name]
    assert set(row) - {"prompt"} <= set(task.columns)
    with Scorer(task.rewards, task.columns) as scorer:
        scores = scorer.score([row] * len(cases), [completion for completion, _ in cases])
    for k, (completion, expected) in enumerate(cases):
        got = {function: values[k] for function, values in scores.values.items()}
        assert got == pytest.approx(expected), completion


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_reward_imports_nothing_from_the_workbench_and_the_folder_is_documented(name):
    folder = SAMPLE_TASKS / name
    tree = ast.parse((folder / "reward.py").read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not any(module.split(".")[0] == "workbench" for module in imported)
    assert "What a learner should see" in (folder / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(TASKS))
def test_the_warm_start_completions_get_the_best_reward(name):
    """The generator's completion for each of 20 rows scores the task's best (so the corpus teaches the task)."""
    rng = random.Random(0)
    examples = [TASKS[name](rng) for _ in range(20)]
    task = load_task(name)
    rows = [{"prompt": prompt, **columns} for prompt, _, columns in examples]
    with Scorer(task.rewards, list(examples[0][2])) as scorer:
        scores = scorer.score(rows, [completion for _, completion, _ in examples])
    best = 0.0 if name == "length_target" else float(len(scores.values))
    assert scores.rewards == [best] * 20


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_sample_task_holds_out_prompts_it_never_trains_on(name):
    task = load_task(name)
    assert len(task.rows) >= 200 and 50 <= len(task.eval_rows) <= 100
    held_out = {str(row["prompt"]) for row in task.eval_rows}
    assert len(held_out) == len(task.eval_rows)
    assert not held_out & {str(row["prompt"]) for row in task.rows}
    datasets = pytest.importorskip("datasets")  # TRL's eval_dataset reads it too
    dataset = datasets.load_dataset("json", data_files=str(SAMPLE_TASKS / name / "eval.jsonl"), split="train")
    assert len(dataset) == len(task.eval_rows)


@pytest.mark.parametrize("name", sorted(WIDER))
def test_the_wider_sets_best_completions_get_the_best_reward(name):
    """The prompts files of coding, length_target and format_following come from wider sets than the warm start."""
    examples = WIDER[name]()
    rows = [{"prompt": prompt, **columns} for prompt, _, columns in examples]
    with Scorer(load_task(name).rewards, list(examples[0][2])) as scorer:
        scores = scorer.score(rows, [completion for _, completion, _ in examples])
    best = 0.0 if name == "length_target" else float(len(scores.values))
    assert scores.rewards == [best] * len(examples)
