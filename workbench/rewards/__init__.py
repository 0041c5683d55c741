"""Rewards: the built-in reward functions, how reward code is run and scored, and the tasks.

library (the built-in rewards, re-exported here: `from workbench.rewards import format_reward`),
scoring (`RewardSource`: a reward file checked and scored in a worker process), worker (that
process), tasks (prompt sets with their rewards; the sample tasks).

Standard library only at import: the reward worker imports this package, and it must stay free of torch.
"""

from workbench.rewards.library import (
    exact_match_reward,
    format_reward,
    get_length_reward,
    get_repetition_penalty_reward,
    numeric_match_reward,
)

__all__ = [
    "exact_match_reward",
    "format_reward",
    "get_length_reward",
    "get_repetition_penalty_reward",
    "numeric_match_reward",
]
