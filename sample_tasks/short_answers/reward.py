"""Rewards for short, right answers from a chat model. TRL's signature; imports nothing from the workbench.

Prompts are chat messages, so each completion arrives as TRL gives it for chat prompts: a list
holding one assistant message, `[{"role": "assistant", "content": "..."}]`.
"""

import re


def within_word_limit(completions, max_words, **kwargs):
    """1.0 for at most max_words words; past the limit, max_words / words (4 words of a 3-word limit: 0.75)."""
    counts = [len(_text(completion).split()) for completion in completions]
    return [1.0 if n <= limit else limit / n for n, limit in zip(counts, max_words)]


def names_the_capital(completions, answer, **kwargs):
    """1.0 when the reply names the capital (case and accents aside, as a whole word), else 0.0."""
    return [1.0 if _mentions(_text(completion), capital) else 0.0 for completion, capital in zip(completions, answer)]


def _text(completion):
    return completion if isinstance(completion, str) else completion[0]["content"]


def _mentions(text, capital):
    words = re.sub(r"[^a-z ]", " ", _plain(text).lower())
    return f" {_plain(capital).lower()} " in f" {' '.join(words.split())} "


def _plain(text):
    return text.translate(str.maketrans("áéíóúãâçñ", "aeiouaacn"))
