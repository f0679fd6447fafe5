"""The precision of a run's forward passes and matmuls: ``train.precision`` (fp32 | bf16) and ``train.tf32``.

Both are off by default (FuxiCTR trains in float32 with torch's defaults); docs/performance.md "Multi-process
training and precision switches" has their measured speed and effect on AUC, docs/fidelity.md section 35.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
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


__all__ = ["PRECISIONS", "autocast", "float_outputs", "set_tf32"]
