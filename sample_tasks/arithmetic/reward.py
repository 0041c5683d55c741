"""Rewards for two-digit addition. TRL's signature; imports nothing from the workbench."""


def correct(completions, answer, **kwargs):
    """1.0 when the completion is exactly the sum (surrounding spaces ignored), else 0.0."""
    return [1.0 if completion.strip() == str(a) else 0.0 for completion, a in zip(completions, answer)]
