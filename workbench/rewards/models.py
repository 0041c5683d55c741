"""Rewards scored by models: reward models (sequence classifiers, as TRL's `reward_funcs` takes them) and an LLM judge.

They are not user code: they run in the training process, on the run's device, loaded once per run (when they
first score). A reward source declares them as constants that are read here without running the file (`ast`), so
they travel with its text (the editor, the store's reward versions, a swap mid-run, the TRL export):

    REWARD_MODELS = ["OpenAssistant/reward-model-deberta-v3-large-v2"]   # hub ids or local folders
    JUDGE_RUBRIC = "Is the reply polite?"   # the LLM judge's yes/no question (workbench.rewards.judge)
    JUDGE_TEMPLATE = "..."                  # optional: the judge's prompt, with {prompt}, {completion}, {rubric}

`Config.reward_models` (the CLI's --reward-model) adds more. A reward model's value is stored under its id's last
part (TRL's name for it), the judge's under `judge`; `reward_weights` weighs them as any reward function. A reward
model scores as TRL 1.16's GRPOTrainer does: the prompt + completion text (for chat prompts, the conversation
through the reward model's chat template) in one right-padded batch, without special tokens added, and the
reward is `logits[:, 0]` of its one-label head.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from workbench.config import Config
from workbench.rewards import scoring  # for RewardError; scoring imports this module too

JUDGE = "judge"  # the judge's name in reward_values and reward_weights
DECLARED = {"REWARD_MODELS": list, "JUDGE_RUBRIC": str, "JUDGE_TEMPLATE": str}  # the constants read, and their types
BATCH = 32  # texts per reward model forward pass


@dataclass(frozen=True)
class Declared:
    """What a reward source declares, with the config's reward models after its own."""

    reward_models: tuple[str, ...] = ()
    judge_rubric: str = ""
    judge_template: str = ""


def declared(text: str, filename: str = "reward.py", config: Config | None = None) -> Declared:
    """The source's REWARD_MODELS, JUDGE_RUBRIC and JUDGE_TEMPLATE, read without running it, plus the config's
    reward models. A source that does not parse declares nothing (the worker reports its syntax error)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        tree = ast.Module(body=[], type_ignores=[])
    values = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        target = node.target if isinstance(node, ast.AnnAssign) else target
        if isinstance(target, ast.Name) and target.id in DECLARED and node.value is not None:
            values[target.id] = _literal(node, target.id, filename)
    ids = [*values.get("REWARD_MODELS", []), *(config.reward_models if config else ())]
    return Declared(tuple(dict.fromkeys(ids)), values.get("JUDGE_RUBRIC", ""), values.get("JUDGE_TEMPLATE", ""))


def _literal(node: ast.stmt, name: str, filename: str):
    where = f"{filename}, line {node.lineno}: {name}"
    try:
        value = ast.literal_eval(node.value)
    except ValueError:
        raise scoring.RewardError(
            f"{where} must be written out as a literal: it is read without running the file"
        ) from None
    kind = DECLARED[name]
    if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) and v.strip() for v in value)):
        raise scoring.RewardError(f"{where} must be {'a list of hub ids or folders' if kind is list else 'a string'}")
    return value


def reward_model_name(name_or_path: str) -> str:
    """The name a reward model's values are stored under: its id's or folder's last part, as TRL names it."""
    return Path(name_or_path.rstrip("/")).name


def source_reward_models(text: str) -> list[str]:
    """The REWARD_MODELS a source's text declares (none where it does not parse or declares them wrongly)."""
    try:
        return list(declared(text).reward_models)
    except scoring.RewardError:
        return []


def with_reward_models(text: str, ids: list[str]) -> str:
    """The source's text with REWARD_MODELS set to `ids` (the line replaced, or added before the first function;
    removed when `ids` is empty): what the app's field beside the editor writes."""
    lines = text.splitlines(keepends=True)
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text
    line = f"REWARD_MODELS = {ids!r}  # reward models scored beside the functions (hub ids or folders)\n" if ids else ""
    for node in tree.body:
        names = [t.id for t in getattr(node, "targets", [getattr(node, "target", None)]) if isinstance(t, ast.Name)]
        if "REWARD_MODELS" in names:
            return "".join(lines[: node.lineno - 1]) + line + "".join(lines[node.end_lineno :])
    first = next((n.lineno for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))), len(lines) + 1)
    return "".join(lines[: first - 1]) + (line + "\n" if line else "") + "".join(lines[first - 1 :])


class RewardModel:
    """A sequence classifier with one label, scored as TRL scores a reward model."""

    def __init__(self, name_or_path: str, device, bf16: bool = False):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.name, self.device = reward_model_name(name_or_path), device
        path, cached = _where(name_or_path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=cached)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=1, dtype=torch.bfloat16 if bf16 else torch.float32, local_files_only=cached
            )
        except (OSError, ValueError) as error:
            raise scoring.RewardError(f"reward model {name_or_path!r} could not be loaded: {error}") from None
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # the head reads the last token that is not padding: the padding must be the tokenizer's (as TRL sets it)
        self.model.config.get_text_config().pad_token_id = self.tokenizer.pad_token_id
        self.model.to(device).eval()

    def texts(self, prompts: list, completions: list[str]) -> list[str]:
        """TRL's reward model inputs: prompt + completion, or the conversation through the chat template."""
        if not isinstance(prompts[0], list):
            return [prompt + completion for prompt, completion in zip(prompts, completions)]
        try:
            return [
                self.tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": c}], tokenize=False)
                for prompt, c in zip(prompts, completions)
            ]
        except ValueError as error:  # no chat template
            raise scoring.RewardError(
                f"reward model {self.name}: chat prompts need its chat template ({error})"
            ) from None

    def __call__(self, prompts: list, completions: list[str]) -> list[float]:
        """Each completion's reward: logits[:, 0] of its prompt + completion.  (B,)"""
        import torch

        texts, values = self.texts(prompts, completions), []
        for start in range(0, len(texts), BATCH):
            inputs = self.tokenizer(
                text=texts[start : start + BATCH],
                return_tensors="pt",
                padding=True,
                padding_side="right",
                add_special_tokens=False,
            ).to(self.device)
            with torch.inference_mode():
                values += self.model(**inputs).logits[:, 0].float().tolist()
        return values


def _where(name_or_path: str) -> tuple[str, bool]:
    """A local folder, or a hub id; and whether the hub's cache holds it (then nothing is asked of the hub)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return str(path), False
    if name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1:
        raise scoring.RewardError(f"reward model folder {name_or_path} does not exist")
    from huggingface_hub import try_to_load_from_cache

    return name_or_path, isinstance(try_to_load_from_cache(name_or_path, "config.json"), str)


class ModelRewards:
    """A Scorer's rewards scored by models, in this process: the source's reward models and judge, and the config's.

    The judge asks `use_policy`'s base model (its adapter off) unless `config.judge_model` names another; with
    neither (a reward tried on text, outside a run) its values are None, "not scored". Reward models run on the
    policy's device. `timing(step)` charges the judge's seconds to a step (`step_seconds`).
    """

    def __init__(self, config: Config):
        self.config = config
        self.declared = Declared(tuple(config.reward_models))
        self.loaded: dict[str, RewardModel] = {}  # by id, loaded once when they first score
        self.judge = None  # a workbench.rewards.judge.Judge, made again when the rubric or template changes
        self.judge_model = None  # config.judge_model's, loaded when the judge first scores
        self.policy = None
        self.step: int | None = None
        self.step_seconds: dict[int, float] = {}

    def declare(self, source, functions: Iterable[str]) -> None:
        """Take a (new) source's declarations; refuse names that clash with its functions or each other."""
        found = declared(source.text, source.filename, self.config)
        names = [reward_model_name(i) for i in found.reward_models] + ([JUDGE] if found.judge_rubric else [])
        clash = sorted({n for n in names if names.count(n) > 1 or n in set(functions)})
        if clash:
            raise scoring.RewardError(
                f"{source.filename}: reward models and the judge are stored under {', '.join(clash)}, "
                "a name another reward function has: rename the function or the model's folder"
            )
        asked = (found.judge_rubric, found.judge_template)
        if not found.judge_rubric:
            self.judge = None
        elif self.judge is None or (self.judge.rubric, self.judge.given_template) != asked:  # a new cache too
            from workbench.rewards.judge import Judge

            self.judge = Judge(found.judge_rubric, found.judge_template, source.filename)
        self.loaded = {i: model for i, model in self.loaded.items() if i in found.reward_models}
        self.declared = found

    @property
    def names(self) -> list[str]:
        return [reward_model_name(i) for i in self.declared.reward_models] + ([JUDGE] if self.judge else [])

    def use_policy(self, policy) -> None:
        """The run's policy (workbench.engine.policy.Policy): its device, and the judge's model by default."""
        self.policy = policy

    @property
    def device(self):
        import torch

        if self.policy is not None:
            return self.policy.device
        return torch.device("cuda" if self.config.device != "cpu" and torch.cuda.is_available() else "cpu")

    def score(self, prompts: list, completions: list[str]) -> dict[str, list[float | None]]:
        """Each model reward's value per completion, by name."""
        values = {}
        for name_or_path in self.declared.reward_models:
            if name_or_path not in self.loaded:
                bf16 = self.device.type == "cuda" and self.config.precision != "fp32"
                self.loaded[name_or_path] = RewardModel(name_or_path, self.device, bf16)
            values[reward_model_name(name_or_path)] = self.loaded[name_or_path](prompts, completions)
        if self.judge is not None:
            started, model = time.perf_counter(), self._judge_model()
            values[JUDGE] = (
                [None] * len(completions) if model is None else self.judge.score(model, prompts, completions)
            )
            if self.step is not None:
                self.step_seconds[self.step] = self.step_seconds.get(self.step, 0.0) + time.perf_counter() - started
        return values

    @contextmanager
    def timing(self, step: int):
        """Charge the judge's seconds while in this block to `step`."""
        self.step = step
        try:
            yield
        finally:
            self.step = None

    def _judge_model(self):
        from workbench.rewards.judge import load_judge_model, policy_judge_model

        if self.config.judge_model:
            self.judge_model = self.judge_model or load_judge_model(self.config.judge_model, self.device)
            return self.judge_model
        # outside a run and a dry run no model is loaded (a reward tried on text): the judge scores nothing, None
        return None if self.policy is None else policy_judge_model(self.policy)
