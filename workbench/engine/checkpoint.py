"""A run's folder and its checkpoint: the adapter (peft format), optimizer, step and RNG state.

    <workspace>/runs/<run_id>/checkpoint/adapter_model.safetensors, adapter_config.json
                                         trainer_state.pt   (step, optimizer, RNG)
                                         critic/            (ppo: the critic's adapter, value head, optimizer)

`PeftModel.from_pretrained(base_model, checkpoint_folder)` loads the adapter anywhere.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from workbench.engine.policy import Policy

if TYPE_CHECKING:
    from workbench.engine.ppo import Critic

CRITIC_FOLDER = "critic"


def run_folder(workspace: str | Path, run_id: str) -> Path:
    return Path(workspace) / "runs" / run_id


def checkpoint_folder(workspace: str | Path, run_id: str) -> Path:
    return run_folder(workspace, run_id) / "checkpoint"


@dataclass
class TrainerState:
    step: int  # the last step whose update is in the adapter
    optimizer: dict
    rng: dict  # torch's RNG states at the start of step + 1 (see rng_state)


def rng_state() -> dict:
    """The RNG states sampling draws from: torch's CPU generator, and CUDA's when there is one."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(
    folder: Path, policy: Policy, optimizer: torch.optim.Optimizer, step: int, rng: dict, critic: Critic | None = None
) -> None:
    """Write to a staging folder, then swap it in: a crash never leaves half a checkpoint."""
    staging = folder.with_name(folder.name + ".saving")
    shutil.rmtree(staging, ignore_errors=True)
    policy.model.save_pretrained(staging)
    if critic is not None:
        critic.save(staging / CRITIC_FOLDER)
    state = {"step": step, "optimizer": optimizer.state_dict(), "rng": rng}
    torch.save(state, staging / "trainer_state.pt")
    previous = folder.with_name(folder.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    if folder.exists():
        folder.rename(previous)
    staging.rename(folder)
    shutil.rmtree(previous, ignore_errors=True)


def load_checkpoint(
    folder: Path, policy: Policy, optimizer: torch.optim.Optimizer, critic: Critic | None = None
) -> TrainerState:
    """Restore the adapter and optimizer (and a critic) in place; the caller restores the RNG when it resumes."""
    if not (folder / "trainer_state.pt").exists():
        previous = folder.with_name(folder.name + ".previous")  # a crash during the swap
        if not (previous / "trainer_state.pt").exists():
            raise FileNotFoundError(f"no checkpoint in {folder}: the run never finished a step")
        folder = previous
    policy.load_adapter(folder)
    state = torch.load(folder / "trainer_state.pt", map_location=policy.device, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    if critic is not None:
        critic.load(folder / CRITIC_FOLDER)
    rng = {name: value.cpu() for name, value in state["rng"].items()}
    return TrainerState(state["step"], state["optimizer"], rng)
