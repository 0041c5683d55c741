"""Examples of each sample task: (prompt, best completion, the row's other columns).

Each generator draws one example from a seeded `random.Random`: the prompt as the task's prompts
file has it, a completion the task's reward scores highest, and the row's other columns. The tiny
model's warm start (`workbench/engine/tiny.py`) draws its supervised examples from them.

The sample tasks' files (`python -m workbench.engine.tiny_corpus sample_tasks` writes them again):
`prompts.jsonl` to train on and `eval.jsonl`, held-out prompts that no run trains on. Where a
generator's space is large they are its draws; coding, length_target and format_following have
small ones (20 functions, 17 lengths, 81 sums), so their files are a seeded split of a wider set
(WIDER: more functions, lengths, phrasings and operands) that holds the warm start's prompts.
"""

from __future__ import annotations

import json
import random
import string
import sys
from collections.abc import Callable
from pathlib import Path

Example = tuple[str, str, dict]


def arithmetic(rng: random.Random) -> Example:
    """Two-digit addition: '23+58=' -> '81'."""
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return f"{a}+{b}=", str(a + b), {"answer": str(a + b)}


def format_following(rng: random.Random) -> Example:
    """One-digit addition answered in <think>/<answer> tags: 'tags 3+5=' -> '<think>3+5</think><answer>8</answer>'."""
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return f"tags {a}+{b}=", f"<think>{a}+{b}</think><answer>{a + b}</answer>", {"answer": str(a + b)}


def reversal(rng: random.Random) -> Example:
    """A word of 3 to 6 letters, reversed: 'reverse abcd:' -> 'dcba'."""
    word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 6)))
    return f"reverse {word}:", word[::-1], {"answer": word[::-1]}


def length_target(rng: random.Random) -> Example:
    """As many letters as asked: 'write 12 letters:' -> 12 letters."""
    target = rng.randint(4, 20)
    text = "".join(rng.choice(string.ascii_lowercase) for _ in range(target))
    return f"write {target} letters:", text, {"target": target}


def countdown(rng: random.Random) -> Example:
    """Three numbers and + - * to reach a target: 'use 3 5 2 make 13:' -> '3*5-2'.

    The numbers are shown in an order that reaches the target, so a small model that has learned to
    copy them with two operators between is often near: a game of choosing operators."""
    while True:
        numbers = [rng.randint(1, 9) for _ in range(3)]
        first, second = rng.choice("+-*"), rng.choice("+-*")
        expression = f"{numbers[0]}{first}{numbers[1]}{second}{numbers[2]}"
        target = eval(expression)  # digits and + - * only
        if target > 0:
            prompt = f"use {' '.join(map(str, numbers))} make {target}:"
            return prompt, expression, {"numbers": numbers, "target": target}


NAMES = ["Ann", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jun", "Kim", "Lea"]
THINGS = ["apples", "books", "coins", "eggs", "pens", "shells", "stamps", "marbles"]
WORD_PROBLEMS = [
    ("{n} has {a} {t} and gets {b} more. How many {t} now?", lambda a, b: a + b),
    ("{n} had {a} {t} and gave away {b}. How many {t} are left?", lambda a, b: a - b),
    ("{n} buys {a} bags of {b} {t}. How many {t} in all?", lambda a, b: a * b),
    ("{n} has {a} {t}. A friend has {b} more. How many does the friend have?", lambda a, b: a + b),
    ("{n} packs {a} {t} into boxes of {b}. How many full boxes?", lambda a, b: a // b),
    ("{n} reads {a} pages a day for {b} days. How many pages?", lambda a, b: a * b),
]


def word_problem(rng: random.Random) -> Example:
    """A one-step word problem with a whole-number answer: '... How many apples now?' -> '7'."""
    template, solve = rng.choice(WORD_PROBLEMS)
    a, b = rng.randint(2, 12), rng.randint(2, 9)
    if solve(a, b) <= 0:
        a, b = b + a, min(a, b)
    answer = solve(a, b)
    prompt = template.format(n=rng.choice(NAMES), t=rng.choice(THINGS), a=a, b=b) + " "
    return prompt, str(answer), {"answer": str(answer)}


FUNCTIONS = {  # description -> expression in x, for one-line Python functions
    "x doubled": "x*2",
    "x tripled": "x*3",
    "x squared": "x*x",
    "x cubed": "x*x*x",
    "x negated": "-x",
    "half of x": "x//2",
    "x plus one": "x+1",
    "x minus one": "x-1",
    "x plus two": "x+2",
    "x minus two": "x-2",
    "x plus ten": "x+10",
    "x times ten": "x*10",
    "the last digit of x": "x%10",
    "x is even": "x%2==0",
    "x is odd": "x%2==1",
    "x is positive": "x>0",
    "the absolute value of x": "abs(x)",
    "x squared plus one": "x*x+1",
    "twice x plus one": "2*x+1",
    "x mod three": "x%3",
}
TEST_INPUTS = [0, 1, 2, 5, 7, 12, 31, 100]


def coding(rng: random.Random) -> Example:
    """A one-line Python function body, checked by unit tests: '# return x doubled\\ndef f(x): return ' -> 'x*2'."""
    return _function(*rng.choice(sorted(FUNCTIONS.items())))


def _function(description: str, expression: str) -> Example:
    # expected outputs as numbers (True as 1: equal in Python), so that every row of the column has one
    # type and `datasets` loads the file (it refuses a column that mixes booleans and integers)
    tests = [[x, int(eval(expression, {"abs": abs}, {"x": x}))] for x in TEST_INPUTS]
    return f"# return {description}\ndef f(x): return ", expression, {"tests": tests}


TASKS: dict[str, Callable[[random.Random], Example]] = {
    "arithmetic": arithmetic,
    "format_following": format_following,
    "reversal": reversal,
    "length_target": length_target,
    "countdown": countdown,
    "word_problems": word_problem,
    "coding": coding,
}


# The wider sets of the tasks whose generators draw from few prompts: every prompt of each.
NUMBER_WORDS = (
    "two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty"
).split()
FUNCTION_FAMILIES = {  # description of n -> expression of k, for n = two .. twenty
    "x plus {n}": "x+{k}",
    "x minus {n}": "x-{k}",
    "x times {n}": "x*{k}",
    "x times {n} plus one": "x*{k}+1",
    "x times {n} minus one": "x*{k}-1",
    "x mod {n}": "x%{k}",
    "x divided by {n}, rounded down": "x//{k}",
    "x squared plus {n}": "x*x+{k}",
    "x squared minus {n}": "x*x-{k}",
    "twice x plus {n}": "2*x+{k}",
    "{n} minus x": "{k}-x",
    "x plus {n}, doubled": "(x+{k})*2",
    "x is greater than {n}": "x>{k}",
    "x is less than {n}": "x<{k}",
    "x is divisible by {n}": "x%{k}==0",
    "the distance from x to {n}": "abs(x-{k})",
    "the last digit of x times {n}": "x*{k}%10",
}
LENGTH_PHRASINGS = [
    "write {n} letters:",
    "write exactly {n} letters:",
    "type {n} letters:",
    "{n} letters:",
    "give {n} letters:",
    "letters, {n} of them:",
    "write a string of {n} letters:",
    "a word of {n} letters:",
    "print {n} letters:",
    "now {n} letters:",
]


def coding_set() -> list[Example]:
    """The warm start's 20 functions and FUNCTION_FAMILIES' ('x plus seven' -> 'x+7')."""
    functions = dict(FUNCTIONS)
    for description, expression in FUNCTION_FAMILIES.items():
        for k, word in enumerate(NUMBER_WORDS, start=2):
            functions.setdefault(description.format(n=word), expression.format(k=k))
    return [_function(description, expression) for description, expression in functions.items()]


def length_target_set() -> list[Example]:
    """Lengths 1 to 30 in ten phrasings; the warm start knows 'write N letters:' for N = 4 .. 20."""
    rng = random.Random("length_target set")
    return [
        (phrasing.format(n=n), "".join(rng.choice(string.ascii_lowercase) for _ in range(n)), {"target": n})
        for n in range(1, 31)
        for phrasing in LENGTH_PHRASINGS
    ]


def format_following_set() -> list[Example]:
    """Sums of two numbers from 1 to 19 in tags; the warm start knows one-digit ones."""
    return [
        (f"tags {a}+{b}=", f"<think>{a}+{b}</think><answer>{a + b}</answer>", {"answer": str(a + b)})
        for a in range(1, 20)
        for b in range(1, 20)
    ]


WIDER: dict[str, Callable[[], list[Example]]] = {
    "coding": coding_set,
    "length_target": length_target_set,
    "format_following": format_following_set,
}


def write_prompts(folder: Path, task: str, count: int, seed: int = 0) -> None:
    """The task's prompts file: `count` distinct prompts with their columns."""
    rng, rows = random.Random(f"{task}/{seed}"), {}
    while len(rows) < count:
        prompt, _, columns = TASKS[task](rng)
        rows.setdefault(prompt, {"prompt": prompt, **columns})
    _write(folder / task / "prompts.jsonl", rows.values())


def write_eval(folder: Path, task: str, count: int, seed: int = 0) -> None:
    """The task's eval file: `count` distinct prompts that its prompts file does not hold."""
    trained = {json.loads(line)["prompt"] for line in (folder / task / "prompts.jsonl").read_text().splitlines()}
    rng, rows = random.Random(f"{task}/eval/{seed}"), {}
    while len(rows) < count:
        prompt, _, columns = TASKS[task](rng)
        if prompt not in trained:
            rows.setdefault(prompt, {"prompt": prompt, **columns})
    _write(folder / task / "eval.jsonl", rows.values())


def write_split(folder: Path, task: str, eval_count: int) -> None:
    """Both files of a task with a WIDER set: a seeded shuffle of it, the first `eval_count` held out."""
    rows = [{"prompt": prompt, **columns} for prompt, _, columns in WIDER[task]()]
    random.Random(f"{task}/split").shuffle(rows)
    _write(folder / task / "eval.jsonl", rows[:eval_count])
    _write(folder / task / "prompts.jsonl", rows[eval_count:])


def _write(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    root = Path(sys.argv[1])
    for name, count in dict(reversal=500, countdown=400, word_problems=400).items():
        write_prompts(root, name, count)  # arithmetic's 1000 prompts were drawn by an earlier generator: kept
    for name in ("arithmetic", "reversal", "countdown", "word_problems"):
        write_eval(root, name, 100)
    for name, count in dict(coding=80, length_target=75, format_following=81).items():
        write_split(root, name, count)
