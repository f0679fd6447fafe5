"""The precision of a run's forward passes and matmuls: ``train.precision`` (fp32 | bf16) and ``train.tf32``.

Both are off by default (FuxiCTR trains in float32 with torch's defaults); docs/performance.md "Multi-process
training and precision switches" has their measured speed and effect on AUC, docs/fidelity.md section 35.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

PRECISIONS = ("fp32", "bf16")


def autocast(device: torch.device, precision: str, cache: bool = True) -> Any:
    """The forward passes' precision: ``fp32`` (nothing changes: the default, as FuxiCTR) or ``bf16`` (torch's
    autocast to bfloat16 on ``device``: matmuls, convolutions and the like in bfloat16, reductions and the rest in
    float32). The loss is always computed in float32, outside it."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":  # cache=False inside a CUDA graph capture (cast weights must not be cached)
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache)
    raise ValueError(f"precision {precision!r} is not one of {list(PRECISIONS)}")


def bf16_fast(device: torch.device | str) -> bool:
    """Whether ``device`` has bfloat16 arithmetic of its own, so that autocast's bfloat16 products beat float32's:
    a CUDA GPU that supports bfloat16, or a CPU with AVX512-BF16 or AMX (x86) or BF16 (Arm). On any other CPU
    (AVX2, or AVX-512 without BF16) oneDNN emulates bfloat16, several times slower than float32."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return True  # nothing known against it
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(bool(p()) for p in probes if p is not None)
    if machine in ("aarch64", "arm64"):
        return "bf16" in _cpu_features()
    return False


def _cpu_features() -> set[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (``flags`` on x86, ``Features`` on Arm); empty where
    there is no such file."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.split(":")[0].strip() in ("flags", "Features")
            for f in line.split(":", 1)[1].split()}


def warn_if_slow(device: torch.device, precision: str) -> None:
    """A warning when ``train.precision=bf16`` runs on a device without a fast bfloat16 path (:func:`bf16_fast`):
    the run is valid, only slower than in float32."""
    if precision == "bf16" and not bf16_fast(device):
        import warnings

        warnings.warn(f"train.precision=bf16 on {device.type} without bfloat16 instructions (AVX512-BF16 or AMX on "
                      "x86, BF16 on Arm): its bfloat16 products are emulated, slower than in float32; "
                      "train.precision=fp32 is faster here", RuntimeWarning, stacklevel=3)


def set_tf32(on: bool) -> None:
    """``train.tf32``: TF32 for CUDA float32 matmuls and cuDNN convolutions (on Ampere and later GPUs), or neither
    (strict float32, the default; torch's own default runs cuDNN convolutions in TF32). No effect on the CPU."""
    torch.backends.cuda.matmul.allow_tf32 = bool(on)
    torch.backends.cudnn.allow_tf32 = bool(on)


def float_outputs(outputs: Tensor | Mapping[str, Tensor]) -> Tensor | Mapping[str, Tensor]:
    """A model's outputs in float32 (what autocast left in bfloat16), for the loss and the scores."""
    if isinstance(outputs, Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, Mapping):
        return {k: float_outputs(v) for k, v in outputs.items()}
    return outputs


__all__ = ["PRECISIONS", "autocast", "bf16_fast", "float_outputs", "set_tf32", "warn_if_slow"]
