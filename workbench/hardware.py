"""Where the model runs and in which precision."""

from __future__ import annotations

import contextlib
import functools
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
