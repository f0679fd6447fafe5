"""CPU kernels of the layers: the compiled one (bars/models/layers/_kernels.c, optional, through ctypes) and its
torch fallback, which compute the same values bit for bit, so a run's numbers never depend on whether the extension
was built (tests/test_kernels.py compares both paths).

Dropout's mask (:func:`dropout_mask`): one 64-bit key drawn from torch's seeded generator per call, then
splitmix64 of a counter gives four signed 16-bit uniforms per 64-bit value: element ``4j + k`` reads bits
``16k..16k+15`` of ``z_j = mix(key + (j + 1) * GAMMA)``. It is kept when its uniform is ``>= threshold`` (and, for
ReLU + dropout, when ``x > 0``); ``mask = scale`` where kept, else 0, and ``out = x * mask``. The compiled kernel
does it in one pass over ``x``; the fallback (any dtype or device layout the kernel does not take) in torch ops."""

from __future__ import annotations

import ctypes
import os

import torch
from torch import Tensor

_GAMMA = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed 64-bit integer (torch's int64 arithmetic wraps)
_MIX1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_MIX2 = -7723592293110705685  # 0x94D049BB133111EB
_lib: ctypes.CDLL | None | bool = None


def _load() -> ctypes.CDLL | None:
    global _lib
    if _lib is None:
        try:
            from bars.models.layers import _kernels  # the optional compiled module
        except ImportError:
            _lib = False
        else:
            lib = ctypes.CDLL(_kernels.__file__)
            p = ctypes.c_void_p
            lib.bars_dropout_mask.argtypes = [p, p, p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_int32,
                                              ctypes.c_float, ctypes.c_int32]
            lib.bars_dropout_mask.restype = None
            _lib = lib
    return _lib or None


def available() -> bool:
    """Whether the compiled kernels are built and not turned off (``BARS_KERNELS=torch`` runs the fallbacks)."""
    mode = os.environ.get("BARS_KERNELS", "auto")
    if mode not in ("auto", "torch"):
        raise ValueError(f"BARS_KERNELS={mode!r}: expected auto or torch")
    return mode == "auto" and _load() is not None


def draw_key() -> int:
    """One 64-bit key from torch's global (seeded) CPU generator, as an unsigned integer."""
    return int(torch.empty((), dtype=torch.int64).random_(-(2**63), None)) & ((1 << 64) - 1)


def _lsr(z: Tensor, k: int) -> Tensor:  # logical right shift of int64 (torch's >> is arithmetic)
    return (z >> k) & ((1 << (64 - k)) - 1)


def uniform16(n: int, key: int) -> Tensor:
    """The ``n`` signed 16-bit uniforms of ``key`` (int16 [n]), as the kernel draws them."""
    signed = key - (1 << 64) if key >= 1 << 63 else key
    z = torch.arange(1, (n + 3) // 4 + 1, dtype=torch.int64).mul_(_GAMMA).add_(signed)
    z = (z ^ _lsr(z, 30)).mul_(_MIX1)
    z = (z ^ _lsr(z, 27)).mul_(_MIX2)
    z = z ^ _lsr(z, 31)
    return z.view(torch.int16)[:n]


def dropout_mask(x: Tensor, threshold: int, scale: float, relu: bool, key: int | None = None) -> tuple[Tensor, Tensor]:
    """``(x * mask, mask)`` for a CPU tensor ``x`` (no autograd: the caller's backward is ``grad * mask``)."""
    key = draw_key() if key is None else key
    x = x.detach()
    if x.dtype == torch.float32 and x.is_contiguous() and available():
        out, mask = torch.empty_like(x), torch.empty_like(x)
        lib = _load()
        assert lib is not None
        lib.bars_dropout_mask(x.data_ptr(), out.data_ptr(), mask.data_ptr(), x.numel(), key, threshold, scale,
                              int(relu))
        return out, mask
    keep = uniform16(x.numel(), key).view(x.shape) >= threshold
    if relu:
        keep.logical_and_(x > 0)
    mask = keep.to(x.dtype).mul_(scale)
    return x * mask, mask


class MaskedDropout(torch.autograd.Function):
    """``out = x * mask`` with the mask of :func:`dropout_mask`; backward ``grad * mask``."""

    @staticmethod
    def forward(ctx, x: Tensor, threshold: int, scale: float, relu: bool) -> Tensor:  # type: ignore[override]
        out, mask = dropout_mask(x, threshold, scale, relu)
        ctx.save_for_backward(mask)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None, None
