"""Rewards for a polite, on-topic reply to a customer: an LLM judge, and a function that keeps replies short.

JUDGE_RUBRIC is the judge's question about each reply. The workbench reads it without running this file and asks
the run's own base model (SmolLM2 with its adapter off): the reward `judge` is P(yes) / (P(yes) + P(no)) at the
answer position. TRL ignores the constant; TRL's signature otherwise, and nothing imported from the workbench.
Completions arrive as TRL gives them for chat prompts: `[{"role": "assistant", "content": "..."}]`.
"""

JUDGE_RUBRIC = "Is this reply polite, and does it respond to what the customer wrote?"
MAX_WORDS = 40


def brief(completions, **kwargs):
    """1.0 for a reply of at most 40 words, else 40 / words: the judge reads whatever it is given, so length is
    kept in check here (and the judge's time with it)."""
    counts = [len(_text(completion).split()) for completion in completions]
    return [1.0 if n <= MAX_WORDS else MAX_WORDS / n for n in counts]


def _text(completion):
    return completion if isinstance(completion, str) else completion[0]["content"]
