"""PPO's critic (`advantage_estimator='ppo'`), the value network GRPO does without: its values, the GAE
advantages and returns they give, its clipped value loss and its update, in one place.

A second copy of the base model, loaded beside the policy's, with its own LoRA adapter and a scalar
value head on its last hidden state: V_t = head(h_t), the value of the prefix q, o_<t. As in
InstructGPT and TRL's PPOTrainer, it starts from the same pretrained weights as the policy and
trains on its own (here with its own AdamW, at the policy's learning rate). Its memory is real: one
more model's weights, so `bench/lab.py` measures what GRPO saves rather than estimating it.

The head starts at zero, so a run's first step values every prefix 0 (GAE then gives A_t =
lambda^(|o| - 1 - t) r); LoRA's B starts at zero too, so only the head learns at the first step.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import Tensor

from workbench.config import Config
from workbench.engine import grpo
from workbench.engine.batches import Round, loss_mask
from workbench.engine.policy import Policy, load_policy
from workbench.engine.rollout import Rollouts, micro_batch_parts

CRITIC_STATE = "critic_state.pt"  # the value head and the critic's optimizer


@dataclasses.dataclass
class Critic:
    backbone: Policy  # the base model's second copy, with the critic's own adapter
    head: torch.nn.Linear  # hidden size -> 1, fp32
    optimizer: torch.optim.Optimizer

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.backbone.trainable_parameters(), *self.head.parameters()]

    def values(self, rollouts: Rollouts, group_size: int) -> Tensor:
        """V_t for every completion token's prefix, 0 on padding.  (B, T)"""
        with self.backbone.autocast():
            hidden = self.backbone.completion_hidden(*rollouts.model_inputs(), group_size)  # (B, T, H)
        return self.head(hidden.float()).squeeze(-1) * rollouts.completion_mask

    def save(self, folder: Path) -> None:
        """The adapter in peft's format, the head and the optimizer beside it."""
        self.backbone.model.save_pretrained(folder)
        torch.save({"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}, folder / CRITIC_STATE)

    def load(self, folder: Path) -> None:
        self.backbone.load_adapter(folder)
        state = torch.load(folder / CRITIC_STATE, map_location=self.backbone.device, weights_only=True)
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])


def load_critic(config: Config) -> Critic:
    """The base model loaded again, with a fresh adapter and a zero value head."""
    backbone = load_policy(config)
    hidden_size = backbone.model.get_base_model().config.hidden_size
    head = torch.nn.Linear(hidden_size, 1, device=backbone.device)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    parameters = [*backbone.trainable_parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    return Critic(backbone, head, optimizer)


def update_critic(critic: Critic, batches: list[tuple[Rollouts, Tensor, Tensor, Tensor]], config: Config) -> dict:
    """num_iterations optimizer steps on the clipped value loss, micro-batched as the policy's update.

    batches: (rollouts, loss mask, values at sampling, returns), the last three (B, T).
    -> value_loss, and explained_variance: how much of the returns' variance the values at sampling explained
    """
    G = config.group_size
    batch_tokens = sum(int(mask.sum()) for _, mask, _, _ in batches)
    parts = [
        part
        for rollouts, *targets in batches
        for part in micro_batch_parts(rollouts, tuple(targets), G, config.micro_batch_tokens)
    ]
    total = 0.0
    with critic.backbone.training():
        for _ in range(config.num_iterations):
            critic.optimizer.zero_grad(set_to_none=True)
            for part, mask, old, returns in parts:
                loss = grpo.value_loss(critic.values(part, G), old, returns, mask, config.cliprange_value, batch_tokens)
                loss.backward()
                total += loss.item()
            torch.nn.utils.clip_grad_norm_(critic.trainable_parameters(), config.max_grad_norm or float("inf"))
            critic.optimizer.step()
    trained = [mask.bool() for _, mask, _, _ in batches]
    old = torch.cat([old[where] for (_, _, old, _), where in zip(batches, trained)])
    returns = torch.cat([returns[where] for (_, _, _, returns), where in zip(batches, trained)])
    return {"value_loss": total / config.num_iterations, "explained_variance": grpo.explained_variance(old, returns)}


@torch.no_grad()
def gae_advantages(rounds: list[Round], config: Config, critic: Critic | None) -> list[Tensor]:
    """Per-token advantages by GAE on the critic's values at sampling, which each round keeps with the
    returns for the critic's update; 0 for groups left out.  -> (B, T) per round

    Without a critic (a dry run), the values are 0: what a run's first step sees, its head starting at 0.
    'batch' scaling divides by the std of the trained tokens' advantages."""
    advantages, trained_tokens = [], []
    for one in rounds:
        completion_mask = one.rollouts.completion_mask.cpu()
        if critic is None:
            one.values = torch.zeros(completion_mask.shape)
        else:
            one.values = critic.values(one.rollouts, config.group_size).float().cpu()
        a, one.returns = grpo.gae(one.rewards, one.values, completion_mask, config.gae_lambda)
        in_batch = one.trained.repeat_interleave(config.group_size).unsqueeze(1)  # (B, 1)
        advantages.append(a * in_batch)
        trained_tokens.append(a[in_batch & loss_mask(one.rollouts, config).bool().cpu()])
    tokens = torch.cat(trained_tokens)
    if config.scale_rewards == "batch" and tokens.numel() > 1:
        advantages = [a / (tokens.std() + 1e-4) for a in advantages]
    return advantages


def critic_batches(rounds: list[Round], config: Config) -> list[tuple]:
    """What the critic trains on: each round's trained groups with their loss mask, values at sampling and returns."""
    batches = []
    for one in rounds:
        rows = one.trained_rows
        if rows.numel():
            scored = ~one.rewards[rows].isnan().unsqueeze(1)  # an unscored completion has no return to learn
            tokens = loss_mask(one.rollouts, config)[rows].cpu() * scored
            device = one.rollouts.completion_mask.device
            targets = (tokens, one.values[rows], one.returns[rows])
            batches.append((one.rollouts.select(rows), *(t.float().to(device) for t in targets)))
    return batches
