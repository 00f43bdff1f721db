"""Which device a run uses, and the arithmetic it runs in there (autocast on CUDA, fp32 on CPU)."""

from __future__ import annotations

import torch

from vidtune.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; a clear error for anything else."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError("device", f"{name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", f"{name}: CUDA is not available on this machine; use cpu or auto")
    return dev


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Autocast dtype on ``device``: bf16 where the GPU has it natively, else fp16; None on CPU.

    (``is_bf16_supported()`` also says yes for emulated bf16 on V100/T4, which is slow.)
    """
    if device.type != "cuda":
        return None
    with torch.cuda.device(device):
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.bfloat16 if native else torch.float16


def precision(device: torch.device) -> str:
    """The arithmetic :func:`autocast` uses on ``device`` (features differ slightly between them)."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype(device)]


def autocast(device: torch.device):
    dtype = amp_dtype(device)
    if dtype is not None:
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)
