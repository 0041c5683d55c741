"""Data-parallel training: `torchrun --nproc-per-node N -m workbench train ...` (or `accelerate launch`).

Each process (a rank) samples, scores and differentiates its share of the step's P groups, P / N each:
1. A group's completions are drawn from its own generator, seeded by (seed, step, group), so the step's
   groups are the same on one process or N (`rollout.group_uniforms`).
2. Advantages are computed over every rank's rewards (gathered), as one process computes them.
3. The loss of each rank's micro-batches is normalised by the whole batch's counts (summed over ranks),
   and the adapter's gradients are summed over ranks before clipping and the optimizer step: every rank
   then takes the one process's step, and the adapters stay equal.
4. Rank 0 gathers every rank's groups, writes the store, evaluates and checkpoints.

The gradient sum is written out here rather than by wrapping the model in torch's DDP: the update runs
several forward passes per step (reference, old policy, micro-batches) through the adapter, and one
explicit all-reduce of a LoRA adapter's few tensors after them is the whole of what DDP would add.
Without torchrun (WORLD_SIZE unset or 1) every function here is the identity.
"""

from __future__ import annotations

import os
import pickle
import signal

import torch
import torch.distributed as dist

from workbench.config import Config, ConfigError


def setup() -> None:
    """Join the process group torchrun (or accelerate launch) set up in the environment: NCCL on GPUs, else gloo."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    signal.signal(signal.SIGTERM, _stop)


def teardown(together: bool) -> None:
    """Leave the process group once the run is over on this rank: a process that exits without it, or
    leaves while another still works in the group, can be aborted by gloo's threads (SIGABRT), and
    torchrun then reports a failure. `together`: every rank finished, so wait for all before leaving
    (after a failure a rank may be gone, and the wait would never end)."""
    if not dist.is_initialized():
        return
    if together:
        dist.barrier()
    dist.destroy_process_group()


class ProcessStopped(Exception):
    """torchrun stopped this process because another of the run's processes failed."""


def _stop(signum, frame) -> None:
    """When one process fails torchrun sends the others SIGTERM: raise where this one is, so that the
    run's `finally` stores what it has (rank 0: the status and a checkpoint); later ones are ignored."""
    ignore_sigterm()
    raise ProcessStopped("torchrun stopped this process: another process of the run failed")


def ignore_sigterm() -> None:
    """Once a run is ending (it reports why, stores what it has): a SIGTERM raising then would cut that short,
    and torchrun sends SIGKILL 30 s after its SIGTERM anyway."""
    if signal.getsignal(signal.SIGTERM) is _stop:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def describe(exception: Exception) -> str:
    """The error a run stores; for a process stopped because another failed, what happened and where to look."""
    text = f"{type(exception).__name__}: {exception}"
    lost = isinstance(exception, (dist.DistError, ProcessStopped)) or "gloo" in str(exception)
    if world_size() == 1 or not lost:
        return text
    return (
        f"another process of this {world_size()}-process run stopped, so rank {rank()} stopped too; torchrun's "
        f"output names the rank and its error ({text.splitlines()[0][:200]})"
    )


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def launcher() -> str:
    """How this process was started, for the commands a run prints (resume with ...)."""
    n = world_size()
    return "python -m workbench" if n == 1 else f"torchrun --nproc-per-node {n} -m workbench"


def check(config: Config) -> None:
    """Refuse what does not split across processes, naming the field."""
    n = world_size()
    if n == 1:
        return
    if config.prompts_per_step % n:
        raise ConfigError(
            f"prompts_per_step ({config.prompts_per_step}) must divide among the {n} processes: each samples "
            f"an equal share of the step's groups"
        )
    if config.dynamic_sampling:
        raise ConfigError("dynamic_sampling runs in one process: its extra rounds would differ between processes")
    if config.advantage_estimator == "ppo":
        raise ConfigError("advantage_estimator 'ppo' runs in one process: its critic is not data-parallel")


def share(items: list) -> tuple[int, list]:
    """This rank's contiguous share of a list that divides evenly: (index of its first item, its items)."""
    size = len(items) // world_size()
    first = rank() * size
    return first, items[first : first + size]


def own_part(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's rows of a tensor gathered from every rank in rank order (`all_gather`)."""
    return tensor.chunk(world_size())[rank()]


def all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's equal-sized tensor, concatenated in rank order along dim 0."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Each value summed over ranks."""
    return _all_reduce(values, device, dist.ReduceOp.SUM)


def all_max(values: list[float], device: torch.device) -> list[float]:
    return _all_reduce(values, device, dist.ReduceOp.MAX)


def _all_reduce(values: list[float], device: torch.device, op) -> list[float]:
    if world_size() == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on any."""
    return bool(all_max([float(flag)], device)[0])


def sum_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """Sum the gradients over ranks, in one all-reduce of their concatenation."""
    if world_size() == 1:
        return
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    for p, part in zip(parameters, flat.split([g.numel() for g in grads])):
        p.grad = part.view_as(p).clone()


def broadcast_parameters(parameters: list[torch.nn.Parameter]) -> None:
    """Rank 0's values on every rank (the adapter starts equal however each rank initialised it)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for p in parameters:
            dist.broadcast(p.data, src=0)


def broadcast(obj):
    """Rank 0's object on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(obj) -> list:
    """Every rank's object, in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    objects = [None] * world_size()
    dist.all_gather_object(objects, obj)
    return objects


def gather_objects(obj) -> list | None:
    """Every rank's object, in rank order, on rank 0 (None elsewhere)."""
    if world_size() == 1:
        return [obj]
    objects = [None] * world_size() if is_main() else None
    dist.gather_object(obj, objects, dst=0)
    return objects


def agree(work, *arguments):
    """work(*arguments) on every rank; when it raises on any rank, it raises on every rank (so none waits for a
    step the others left): the lowest failing rank's exception, or a RuntimeError naming it where that
    exception cannot travel."""
    if world_size() == 1:
        return work(*arguments)
    try:
        result, error = work(*arguments), None
    except Exception as exception:
        result, error = None, exception
    failures = [(r, e) for r, e in enumerate(all_gather_objects(_portable(error))) if e is not None]
    if failures:
        raise failures[0][1]
    return result


def _portable(error: Exception | None) -> Exception | None:
    """The exception itself where it pickles, else a RuntimeError with its type and message, and the rank."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"rank {rank()}: {type(error).__name__}: {error}")
