"""Where the model runs and in which precision."""

from __future__ import annotations

import contextlib
import functools
import resource
import sys
from pathlib import Path

import torch


@functools.cache
def cpu_has_bf16() -> bool:
    """True where the CPU does bf16 matrix work natively (AVX512-BF16 or AMX).

    Elsewhere bf16 autocast is emulated and slower than fp32, so 'auto' precision stays in fp32.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device is 'cuda' but no CUDA GPU is available; use device='cpu' or 'auto'")
    return torch.device(name)


def uses_bf16(precision: str, device: torch.device) -> bool:
    if precision == "auto":
        return device.type == "cuda" or cpu_has_bf16()
    return precision == "bf16"


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast for matmuls (weights and the adapter stay fp32), or nothing."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, torch.bfloat16)


def reset_peak_memory(device: torch.device) -> None:
    """Measure the peak from now on: CUDA's peak statistics, or on Linux the process's RSS high-water
    mark (writing 5 to /proc/self/clear_refs), so a run in the app's process is not charged for an
    earlier one's peak."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mib(device: torch.device) -> float:
    """The run's peak memory in MiB, since `reset_peak_memory` or the process's start.

    On CUDA, torch.cuda.max_memory_allocated: the tensors on the GPU (weights, activations,
    optimizer state), not the CUDA context or the allocator's cache. Elsewhere the process's peak
    resident set: VmHWM in /proc/self/status on Linux, getrusage's ru_maxrss where there is no /proc.
    Not ru_maxrss on Linux: it carries the parent's peak into a child across fork and exec
    (measured: a child of an 800 MiB process read 813 MiB, its VmHWM 13 MiB), so a sweep's runs
    would all report the sweep process's or the app's size.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere
