"""Reward for reversing a word. TRL's signature; imports nothing from the workbench."""


def reversed_letters(completions, answer, **kwargs):
    """The share of positions holding the right letter, over the longer of completion and answer: 1.0 when exact.

    Partial credit gives GRPO a signal long before whole words come out right."""
    scores = []
    for completion, target in zip(completions, answer):
        text = completion.strip()
        right = sum(a == b for a, b in zip(text, target))
        scores.append(right / max(len(text), len(target)))
    return scores
