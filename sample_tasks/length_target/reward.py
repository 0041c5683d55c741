"""Reward for writing exactly as many letters as asked. TRL's signature; imports nothing from the workbench."""


def length_reward(completions, target, **kwargs):
    """-|target - length|: 0 at the asked length, one point lost per letter too many or too few."""
    return [-float(abs(t - len(completion.strip()))) for completion, t in zip(completions, target)]
