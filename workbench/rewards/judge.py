"""An LLM judge: a reward function that asks a causal LM a yes/no rubric question about each completion.

    judge(q, o) = P(yes) / (P(yes) + P(no))

read from the model's next-token logits at the answer position: after the question (the template filled with the
prompt, the completion and the rubric), sent through the chat template as a user turn with the assistant's turn
opened where the model has one. P(yes) sums the first tokens of "Yes", "yes", " Yes", " yes" and P(no) those of
"No", ...; a first token both words share (a character vocabulary's " ") counts for neither. It is computed as
sigmoid(logsumexp(yes logits) - logsumexp(no logits)), which is the ratio above and never divides 0 by 0.

By default the judge is the run's own base model with the adapter off (`Policy.adapter_off`), so no second copy is
loaded; `judge_model` names another. Questions go through the model in left-padded batches (one forward each, the
last position's logits alone computed), and answers are cached per (prompt, completion): GRPO samples the same
short completion many times. A judge can be gamed by what it reads: docs/lab.md measures completions that answer
its question themselves.
"""

from __future__ import annotations

import contextlib
import json
import string
from collections.abc import Callable
from dataclasses import dataclass

import torch

from workbench.rewards.scoring import RewardError

TEMPLATE = (
    "Here is a request and a reply to it.\n\nRequest: {prompt}\n\nReply: {completion}\n\n{rubric}\nAnswer (Yes or No):"
)
FIELDS = {"prompt", "completion", "rubric"}  # what a template may name
YES, NO = ("Yes", "yes", " Yes", " yes"), ("No", "no", " No", " no")
BATCH = 16  # questions per forward pass


@dataclass
class JudgeModel:
    """What the judge asks: a causal LM, its tokenizer, its device, and the context its forward runs in."""

    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


def policy_judge_model(policy) -> JudgeModel:
    """The base model of a workbench.engine.policy.Policy: its weights with the adapter off, under its autocast."""

    @contextlib.contextmanager
    def base_model():
        with policy.adapter_off(), policy.autocast():
            yield

    return JudgeModel(policy.model, policy.tokenizer, policy.device, base_model)


def load_judge_model(name_or_path: str, device: torch.device) -> JudgeModel:
    """A causal LM of its own for the judge (`judge_model`): a hub id (from its cache offline) or a local folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.rewards.models import _where

    path, cached = _where(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=cached)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=cached)
    except (OSError, ValueError) as error:
        raise RewardError(f"judge_model {name_or_path!r} could not be loaded: {error}") from None
    return JudgeModel(model.to(device).eval(), tokenizer, device)


class Judge:
    """The judge of one rubric and template, with its cache of answers."""

    def __init__(self, rubric: str, template: str = "", filename: str = "reward.py", batch_size: int = BATCH):
        self.rubric, self.given_template = rubric, template
        self.template = template or TEMPLATE
        check_template(self.template, filename)
        self.batch_size = batch_size
        self.cache: dict[tuple[str, str], float] = {}
        self.forwards = 0  # batches sent through the model

    def question(self, prompt: str | list[dict], completion: str) -> str:
        return self.template.format(prompt=prompt_text(prompt), completion=completion, rubric=self.rubric)

    def score(self, model: JudgeModel, prompts: list, completions: list[str]) -> list[float]:
        """judge(q, o) for each (prompt, completion); pairs asked before come from the cache.  (B,)"""
        keys = [(_key(p), c) for p, c in zip(prompts, completions)]
        new = {key: (p, c) for key, p, c in zip(keys, prompts, completions) if key not in self.cache}
        asked = sorted(
            ((key, question_ids(model.tokenizer, self.question(*pair))) for key, pair in new.items()),
            key=lambda item: len(item[1]),  # batches of similar lengths pad less
        )
        yes, no = answer_tokens(model.tokenizer)
        for start in range(0, len(asked), self.batch_size):
            part = asked[start : start + self.batch_size]
            self.cache.update(zip([key for key, _ in part], yes_probability(model, [ids for _, ids in part], yes, no)))
            self.forwards += 1
        return [self.cache[key] for key in keys]


def yes_probability(model: JudgeModel, questions: list[list[int]], yes: list[int], no: list[int]) -> list[float]:
    """P(yes) / (P(yes) + P(no)) at the position after each question, in one left-padded forward pass.  (n,)"""
    width = max(map(len, questions))
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (width - len(q)) + q for q in questions], device=model.device)  # (n, L)
    mask = torch.tensor([[0] * (width - len(q)) + [1] * len(q) for q in questions], device=model.device)  # (n, L)
    with torch.no_grad(), model.context():
        logits = (
            model.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(dim=1) - 1).clamp(min=0),  # left padding skipped, as generate counts
                logits_to_keep=1,
                use_cache=False,
            )
            .logits[:, -1]
            .float()
        )  # (n, V)
    return torch.sigmoid(logits[:, yes].logsumexp(dim=-1) - logits[:, no].logsumexp(dim=-1)).tolist()


def answer_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The first token ids of the yes words and of the no words, those both share left out."""
    yes, no = ({tokenizer.encode(word, add_special_tokens=False)[0] for word in words} for words in (YES, NO))
    if not yes - no or not no - yes:
        raise RewardError("the judge's tokenizer starts 'Yes' and 'No' with the same token: it cannot tell them apart")
    return sorted(yes - no), sorted(no - yes)


def question_ids(tokenizer, question: str) -> list[int]:
    """The question as the model reads it: a user turn with the assistant's turn opened, or plain text."""
    if tokenizer.chat_template:
        message = [{"role": "user", "content": question}]
        return list(
            tokenizer.apply_chat_template(message, add_generation_prompt=True, tokenize=True, return_dict=False)
        )
    return tokenizer.encode(question, add_special_tokens=True)


def prompt_text(prompt: str | list[dict]) -> str:
    """A chat prompt's messages (but the system's) as text, one after another."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(str(m["content"]) for m in prompt if m["role"] != "system")


def check_template(template: str, filename: str = "reward.py") -> None:
    """Refuse a template that names other fields than {prompt}, {completion}, {rubric}, or lacks {completion}."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise RewardError(
            f"{filename}: JUDGE_TEMPLATE is not a template ({error}); double a brace meant as text"
        ) from None
    if "completion" not in fields or not fields <= FIELDS:
        raise RewardError(
            f"{filename}: JUDGE_TEMPLATE must hold {{completion}}, and may hold {{prompt}} and {{rubric}}; "
            f"it holds {', '.join(sorted(fields)) or 'no field'}"
        )


def _key(prompt: str | list[dict]) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
