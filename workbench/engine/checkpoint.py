"""A run's folder and its checkpoint: the adapter (peft format), optimizer, step and RNG state; and the adapter
of every step a checkpoint was taken at, kept.

    <workspace>/runs/<run_id>/checkpoint/adapter_model.safetensors, adapter_config.json
                                         trainer_state.pt   (step, optimizer, RNG)
                                         critic/            (ppo: the critic's adapter, value head, optimizer)
                              adapters/step-<N>/adapter_model.safetensors, adapter_config.json

The checkpoint is replaced at each checkpoint (every `checkpoint_every` steps and as the run ends); the
adapter it holds is also copied to `adapters/step-<N>/`, which stays: the LoRA weights only (the tiny
model's are 0.5 MB, SmolLM2-135M's 7.4 MB at the default rank 16 on q, k, v, o), what the playground
(workbench.engine.playground) compares with the base model.
`PeftModel.from_pretrained(base_model, folder)` loads either anywhere.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

import torch

from workbench.engine.policy import Policy

if TYPE_CHECKING:
    from workbench.engine.ppo import Critic

CRITIC_FOLDER = "critic"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def run_folder(workspace: str | Path, run_id: str) -> Path:
    return Path(workspace) / "runs" / run_id


def checkpoint_folder(workspace: str | Path, run_id: str) -> Path:
    return run_folder(workspace, run_id) / "checkpoint"


class RunHeld(RuntimeError):
    """Another process trains this run now."""


def hold(workspace: str | Path, run_id: str) -> IO | None:
    """Hold the run's lock (`<run folder>/lock`) while this process trains it, so that a second process (a second
    resume, from the app and a terminal at once) is refused, naming the one that holds it; the lock goes with
    the returned file's closing, or with the process. None where the OS has no flock (Windows)."""
    try:
        import fcntl
    except ImportError:
        return None
    path = run_folder(workspace, run_id) / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise RunHeld(f"run {run_id} is being trained by {holder}: stop it there, or wait until it ends") from None
    lock.truncate(0)
    lock.write(f"process {os.getpid()} on {socket.gethostname()} since {datetime.now():%Y-%m-%d %H:%M:%S}")
    lock.flush()
    return lock


def adapter_folder(workspace: str | Path, run_id: str, step: int) -> Path:
    """Where the adapter of `step` is kept (when a checkpoint was taken at that step)."""
    return _kept(run_folder(workspace, run_id), step)


def _kept(run: Path, step: int) -> Path:
    return run / "adapters" / f"step-{step}"


def adapter_steps(workspace: str | Path, run_id: str) -> list[int]:
    """The steps whose adapter is kept, in order."""
    folder = run_folder(workspace, run_id) / "adapters"
    names = [p.name for p in folder.glob("step-*") if (p / ADAPTER_FILES[0]).exists()] if folder.is_dir() else []
    return sorted(int(name.removeprefix("step-")) for name in names if name.removeprefix("step-").isdigit())


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
    """Write to a staging folder, keep its adapter as the step's, then swap it in: a crash never leaves half a
    checkpoint (nor half a kept adapter)."""
    staging = folder.with_name(folder.name + ".saving")
    shutil.rmtree(staging, ignore_errors=True)
    policy.model.save_pretrained(staging)
    if step > 0:  # step 0's adapter is the base model's own behaviour (the adapter starts as a no-op)
        keep_adapter(staging, _kept(folder.parent, step))  # the checkpoint's folder is in the run's
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


def keep_adapter(checkpoint: Path, folder: Path) -> None:
    """Copy a checkpoint's adapter files to `folder` (replacing an older copy: a resumed run redoing that step)."""
    staging = folder.with_name(folder.name + ".saving")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ADAPTER_FILES:
        shutil.copy2(checkpoint / name, staging / name)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)


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
