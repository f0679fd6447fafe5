"""CPU kernels of the layers: the compiled one (bars/models/layers/_kernels.c, optional, through ctypes) and its
torch fallback, which compute the same values bit for bit, so a run's numbers never depend on whether the extension
was built (tests/test_kernels.py compares both paths).

Dropout's mask (:func:`dropout_mask`): one 64-bit key drawn from torch's seeded generator per call, then
splitmix64 of a counter gives four signed 16-bit uniforms per 64-bit value: element ``4j + k`` reads bits
``16k..16k+15`` of ``z_j = mix(key + (j + 1) * GAMMA)``. It is kept when its uniform is ``>= threshold`` (and, for
ReLU + dropout, when ``x > 0``); ``mask = scale`` where kept, else 0, and ``out = x * mask``. The compiled kernel
does it in one pass over ``x``; the fallback (any dtype or device layout the kernel does not take) in torch ops.

LayerNorm over a narrow axis (:class:`SmallLayerNorm`; bars.models.layers.LayerNorm uses it for widths up to
:data:`SMALL_NORM_MAX` that are not multiples of 8): torch's own backward spends ~27 ms on WuKong's [4096, 80, 10]
(a vector loop over 10 values per row). Over the last axis the forward is torch's (``native_layer_norm``, whose
mean and rstd the backward reads) and the backward one pass per row, 16 rows at a time; over a middle axis
(``[outer, d, inner]``) forward and backward run along the contiguous ``inner`` axis, the ``outer`` rows split
between torch's OpenMP threads above 65,536 values (each row's bits do not depend on the split; EulerNet's two
[4096, 16, 52] norms: 3.5 ms forward and 5 ms backward each on one thread). Each row's sums are taken in
sequence; the fallback loops over the axis in torch ops in the same order, so both give the same bits.

FFM's pairwise term (:class:`PairDotSum`): ``sum_q <x[left_q], x[right_q]>`` per row over the slot embeddings,
read in place from the tables holding them (FFM's F - 1 separate ``[B, F, D]`` outputs, not stacked; FFMv2's one
``[B, F * (F - 1), D]``), each slot in at most one pair: one pass over the row forward and backward (the backward
writes each slot's gradient once), float32 and float64; the fallback takes the same products and sums in the same sequence.

ONN's DNN input (:class:`SelectPairDots`): the copy slots beside every pair's dot product, read in place from the
tables holding the slots (ONN's F separate ``[B, F, D]`` outputs, not stacked; ONNv2's one ``[B, F * F, D]``); its
backward writes each table's gradient once. Same rules and the same dot-product order as :class:`PairDotSum`.

FiBiNET's bilinear pairs (:class:`PairProducts`): ``h[left_q] * e[right_q]`` for every pair of one or more
``(h, e)`` couples, written straight into the MLP's input; the backward accumulates each field's gradient over its
pairs in pair order, as the fallback's ``index_add_`` does.

GDCN's gated cross layer (:class:`GatedCrossMix`): the element-wise part ``((x0 * (z_w + b)) * sigmoid(z_g)) + x``
of a layer whose matrix product ``z = [z_w | z_g]`` is done, in one pass forward and one backward (which writes
``z``'s gradient, both halves, where autograd's ops made eight passes and a cat), in the order of autograd's own
backward of those ops (torch's ``sigmoid_backward`` included), so the same values.

EulerNet's element-wise work around its matrix products: three autograd nodes whose passes are kernels of this
library (``bars_euler_*``), kept beside the layer in :mod:`bars.models.layers.euler`; FCN's and ECN's self-mask
cross layer likewise (``bars_self_mask_cross_*``, :class:`bars.models.layers.exponential_cross.SelfMaskMix`).

CCPM's k-max pooling index (:func:`kmax_index`): the positions of the ``k`` largest values along the last axis,
ascending, as ``topk(k).indices.sort()``: the kernel ranks each row's values (``#{j : x_j > x_i}``, no branches on
the data) where the ``k`` largest are one set, and leaves the rows where they are not (a tie at the boundary, or a
NaN) to ``topk``, so the result is topk's in every case. ``topk`` and the sort were 30 % of a CCPM training step at
the Frappe shape (two layers of 122,880 rows, of 12 and 7 values); the kernel takes a third to a half of their time
(docs/performance.md)."""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Sequence

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
            lib.bars_dropout_grad.argtypes = [p, p, p, ctypes.c_int64, ctypes.c_float]
            lib.bars_dropout_grad.restype = None
            lib.bars_dropout_mask_bf16.argtypes = lib.bars_dropout_mask.argtypes
            lib.bars_dropout_mask_bf16.restype = None
            lib.bars_dropout_grad_bf16.argtypes = lib.bars_dropout_grad.argtypes
            lib.bars_dropout_grad_bf16.restype = None
            i64 = ctypes.c_int64
            lib.bars_layer_norm_bwd.argtypes = [p, p, p, p, p, p, p, i64, i64]
            lib.bars_layer_norm_bwd.restype = None
            lib.bars_layer_norm_mid_fwd.argtypes = [p, p, p, p, p, p, i64, i64, i64, ctypes.c_float, p,
                                                    ctypes.c_int32]
            lib.bars_layer_norm_mid_fwd.restype = None
            lib.bars_layer_norm_mid_bwd.argtypes = [p, p, p, p, p, p, p, i64, i64, i64, p, ctypes.c_int32]
            lib.bars_layer_norm_mid_bwd.restype = None
            for t in ("f32", "f64"):
                fwd, bwd = getattr(lib, f"bars_pair_dot_sum_{t}"), getattr(lib, f"bars_pair_scatter_{t}")
                fwd.argtypes = [p, i64, p, p, i64, i64, i64, p, p]
                fwd.restype = None
                bwd.argtypes = [p, i64, i64, p, p, p, i64, i64, i64, ctypes.c_int32, p, p]
                bwd.restype = None
                fwd, bwd = getattr(lib, f"bars_pair_products_{t}"), getattr(lib, f"bars_pair_products_bwd_{t}")
                fwd.argtypes = [p, p, i64, p, p, i64, i64, i64, i64, p]
                fwd.restype = None
                bwd.argtypes = [p, p, i64, p, p, p, i64, i64, i64, i64, p, p]
                bwd.restype = None
                fwd, bwd = getattr(lib, f"bars_select_pair_dots_{t}"), getattr(lib, f"bars_select_pair_scatter_{t}")
                fwd.argtypes = [p, i64, p, i64, p, p, i64, i64, i64, p, p]
                fwd.restype = None
                bwd.argtypes = [p, i64, i64, p, p, i64, p, p, i64, i64, i64, ctypes.c_int32, p, p]
                bwd.restype = None
                kmax = getattr(lib, f"bars_kmax_index_{t}")
                kmax.argtypes = [p, i64, i64, i64, p, p]
                kmax.restype = None
            lib.bars_gated_cross_fwd.argtypes = [p, p, p, p, p, p, i64, i64]
            lib.bars_gated_cross_fwd.restype = None
            lib.bars_gated_cross_bwd.argtypes = [p, p, p, p, p, p, p, i64, i64]
            lib.bars_gated_cross_bwd.restype = None
            lib.bars_euler_polar_fwd.argtypes = [p, p, p, i64, i64]
            lib.bars_euler_polar_bwd.argtypes = [p, p, p, p, p, i64, i64]
            lib.bars_euler_combine_pre.argtypes = [p, p, p, p, p, i64, i64]
            lib.bars_euler_combine_fwd.argtypes = [p, p, p, p, p, i64, i64]
            lib.bars_euler_combine_bwd.argtypes = [p, p, p, p, p, p, p, i64, i64]
            lib.bars_euler_embed_fwd.argtypes = [p, p, p, p, p, i64, i64, i64]
            lib.bars_euler_embed_bwd.argtypes = [p, p, p, p, p, p, p, i64, i64, i64]
            for f in ("polar_fwd", "polar_bwd", "combine_pre", "combine_fwd", "combine_bwd", "embed_fwd", "embed_bwd"):
                getattr(lib, f"bars_euler_{f}").restype = None
            lib.bars_self_mask_cross_fwd.argtypes = [p] * 6 + [i64] * 2
            lib.bars_self_mask_cross_bwd.argtypes = [p] * 9 + [i64] * 2
            lib.bars_self_mask_cross_fwd.restype = lib.bars_self_mask_cross_bwd.restype = None
            lib.bars_lookup_grad_f32.argtypes = [p, i64, p, p, ctypes.c_float, p, p, i64]
            lib.bars_lookup_grad_f32.restype = None
            _lib = lib
    return _lib or None


def available() -> bool:
    """Whether the compiled kernels are built and not turned off (``BARS_KERNELS=torch`` runs the fallbacks)."""
    mode = os.environ.get("BARS_KERNELS", "auto")
    if mode not in ("auto", "torch"):
        raise ValueError(f"BARS_KERNELS={mode!r}: expected auto or torch")
    return mode == "auto" and _load() is not None


def traced() -> bool:
    """Whether torch is tracing or scripting a graph (export): the layers then keep torch's own ops, which every
    exporter knows, instead of these kernels and the other eager-only shortcuts."""
    return torch.jit.is_tracing() or torch.jit.is_scripting()


def intel_avx512_cpu() -> bool:
    """Whether this host takes the layers' AVX-512 paths: ATen's CPU kernels run with AVX-512 here
    (``torch.backends.cpu.get_cpu_capability()``: fixed per machine; ``ATEN_CPU_CAPABILITY`` can lower it) and the
    CPU is an Intel one (``vendor_id`` GenuineIntel). A few layers pick between two ways of computing the same
    function by it: AutoInt's attention (bars.models.layers.attention), BST's and DMIN's masked attentions
    (bars.models.layers.behavior_transformer.scaled_attention) and CCPM's convolutions
    (bars.models.layers.convolution). Torch's fused attention and CCPM's unfolded-window product were the faster
    ways on Intel Xeons with AVX-512, where they were first measured; the others on AMD EPYCs, both with AVX2 only
    (Zen 2/3) and with AVX-512 (Zen 4, whose 512-bit operations take two passes of its 256-bit units: AutoInt
    0.71x FuxiCTR's step with the fused attention against 1.04x without, CCPM 0.81x against 0.99x, BST 0.89x
    against 1.25x, DMIN 0.89x against 1.10x). The two ways differ only in float32 rounding; the host's CPU model
    is a tag of every run (``hardware``). ``_CAPABILITY`` caches the choice: "AVX512" for these paths, else the
    capability ATen reports (with the vendor where AVX-512 is not Intel's)."""
    global _CAPABILITY
    if _CAPABILITY is None:
        cap = str(torch.backends.cpu.get_cpu_capability())
        vendor = _cpu_vendor()
        _CAPABILITY = cap if not cap.startswith("AVX512") or vendor == "GenuineIntel" else f"{vendor} {cap}"
    return _CAPABILITY.startswith("AVX512")


def _cpu_vendor() -> str:
    """The CPU's ``vendor_id`` (Linux ``/proc/cpuinfo``; ``platform.processor()`` elsewhere, "" when unknown)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    proc = platform.processor()
    return "GenuineIntel" if "Intel" in proc else proc


_CAPABILITY: str | None = None


def autocast_on(device_type: str = "cpu") -> bool:
    """Whether autocast (``train.precision=bf16``) is on for ``device_type``: its per-op casts apply to torch's ops
    only, so the layers' custom autograd Functions (which compute in their inputs' dtype) then give way to them."""
    return torch.is_autocast_enabled(device_type)


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


def dropout_keep(x: Tensor, threshold: int, scale: float, relu: bool, key: int | None = None) -> tuple[Tensor, Tensor]:
    """``(x * mask, keep)`` for a CPU tensor ``x``: ``keep`` (uint8, 1 where kept) gives the mask ``keep ? scale :
    0``; no autograd (the backward is :func:`dropout_grad`)."""
    key = draw_key() if key is None else key
    x = x.detach()
    if _kernel_ok(x) or _bf16_kernel_ok(x):
        out, keep = torch.empty_like(x), torch.empty_like(x, dtype=torch.uint8)
        lib = _load()
        assert lib is not None
        fn, m = ((lib.bars_dropout_mask, scale) if x.dtype == torch.float32
                 else (lib.bars_dropout_mask_bf16, _bf16_value(scale)))
        fn(x.data_ptr(), out.data_ptr(), keep.data_ptr(), x.numel(), key, threshold, m, int(relu))
        return out, keep
    kept = uniform16(x.numel(), key).view(x.shape) >= threshold
    if relu:
        kept.logical_and_(x > 0)
    return x * kept.to(x.dtype).mul_(scale), kept.view(torch.uint8)


def dropout_grad(grad: Tensor, keep: Tensor, scale: float) -> Tensor:
    """``grad * (keep ? scale : 0)``: the same bits as the product with the float mask. An expanded gradient (a
    sum's backward: QNN-alpha's rows) is copied once for the kernel, where the fallback took three passes."""
    grad = grad.detach() if grad.is_contiguous() or grad.shape != keep.shape else grad.detach().contiguous()
    if (_kernel_ok(grad) or _bf16_kernel_ok(grad)) and grad.shape == keep.shape and keep.is_contiguous():
        dx = torch.empty_like(grad)
        lib = _load()
        assert lib is not None
        fn, m = ((lib.bars_dropout_grad, scale) if grad.dtype == torch.float32
                 else (lib.bars_dropout_grad_bf16, _bf16_value(scale)))
        fn(grad.data_ptr(), keep.data_ptr(), dx.data_ptr(), grad.numel(), m)
        return dx
    return grad * keep.to(grad.dtype).mul_(scale)


def dropout_mask(x: Tensor, threshold: int, scale: float, relu: bool, key: int | None = None) -> tuple[Tensor, Tensor]:
    """``(x * mask, mask)``: :func:`dropout_keep` with the float mask ``keep ? scale : 0``."""
    out, keep = dropout_keep(x, threshold, scale, relu, key)
    return out, keep.to(x.dtype).mul_(scale)


class MaskedDropout(torch.autograd.Function):
    """``out = x * mask`` with the mask of :func:`dropout_keep`; backward ``grad * mask`` (:func:`dropout_grad`).
    What is saved for the backward is one byte per element, not the float mask."""

    @staticmethod
    def forward(ctx, x: Tensor, threshold: int, scale: float, relu: bool) -> Tensor:  # type: ignore[override]
        out, keep = dropout_keep(x, threshold, scale, relu)
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        return dropout_grad(grad, keep, ctx.scale), None, None, None


SMALL_NORM_MAX = 32  # widest axis bars's LayerNorm gives SmallLayerNorm; wider: torch's own (as fast there, see core)


def _kernel_ok(*ts: Tensor) -> bool:
    return all(t.dtype == torch.float32 and t.is_contiguous() and t.device.type == "cpu" for t in ts) and available()


def _bf16_kernel_ok(x: Tensor) -> bool:
    """A contiguous bfloat16 CPU tensor (a dropout's input under ``train.precision=bf16``): the dropout kernels' bf16
    passes take it."""
    return x.dtype == torch.bfloat16 and x.is_contiguous() and x.device.type == "cpu" and available()


@functools.lru_cache(maxsize=64)
def _bf16_value(v: float) -> float:
    """``v`` rounded to bfloat16 and widened back: the value of a bfloat16 mask ``keep.to(bfloat16).mul_(v)``
    (cached: a dropout's scale is one number per layer, asked for on every step)."""
    return float(torch.tensor(v, dtype=torch.float32).to(torch.bfloat16).float())


def _seq_mean(t: Tensor, dim: int) -> Tensor:
    """Mean over axis ``dim`` (kept, as size 1) as the kernel takes it: the sum in sequence (t_0 + t_1 + ...),
    then divided by the width (by a tensor: torch multiplies by the reciprocal when the divisor is a number)."""
    s = t.narrow(dim, 0, 1)
    for j in range(1, t.shape[dim]):
        s = s + t.narrow(dim, j, 1)
    return s / torch.full_like(s, t.shape[dim])


def _shape3(x: Tensor, dim: int) -> tuple[int, int, int]:
    """``x`` as [outer, d, inner] around axis ``dim``."""
    dim = dim % x.dim()
    outer = 1
    for n in x.shape[:dim]:
        outer *= n
    inner = 1
    for n in x.shape[dim + 1:]:
        inner *= n
    return outer, x.shape[dim], inner


def _affine_shape(x: Tensor, dim: int) -> list[int]:  # weight / bias [d] broadcast along axis dim
    shape = [1] * x.dim()
    shape[dim] = x.shape[dim]
    return shape


def layer_norm_forward(x: Tensor, weight: Tensor, bias: Tensor, eps: float, keep: bool, dim: int = -1
                       ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``(y, mean, rstd)`` of LayerNorm over axis ``dim`` of ``x`` (weight and bias [x.shape[dim]]; ``mean`` /
    ``rstd`` shaped as ``x`` with that axis 1, None unless ``keep``); no autograd. Over the last axis this is
    torch's own forward (its values, bit for bit); over another axis the compiled kernel or its fallback."""
    x, weight, bias = x.detach(), weight.detach(), bias.detach()
    dim = dim % x.dim()
    outer, d, inner = _shape3(x, dim)
    if inner == 1:
        y, mean, rstd = torch.native_layer_norm(x, (d,), weight, bias, eps)
        return y, (mean if keep else None), (rstd if keep else None)
    stat_shape = list(x.shape)
    stat_shape[dim] = 1
    if _kernel_ok(x, weight, bias) and d > 0:
        y = torch.empty_like(x)
        mean = torch.empty(stat_shape) if keep else None
        rstd = torch.empty(stat_shape) if keep else None
        lib = _load()
        assert lib is not None
        nt = torch.get_num_threads()
        scratch = torch.empty(nt * 4 * inner)
        lib.bars_layer_norm_mid_fwd(x.data_ptr(), weight.data_ptr(), bias.data_ptr(), y.data_ptr(),
                                    mean.data_ptr() if mean is not None else None,
                                    rstd.data_ptr() if rstd is not None else None, outer, d, inner, eps,
                                    scratch.data_ptr(), nt)
        return y, mean, rstd
    m = _seq_mean(x, dim)
    c = x - m
    # the kernel's correctly rounded sqrtf: torch's float32 sqrt may be off by one ulp (SLEEF), a float64 sqrt
    # rounded to float32 is not; then an exact division (torch's 1.0 / t need not be)
    root = torch.sqrt((_seq_mean(c * c, dim) + torch.tensor(eps, dtype=x.dtype)).double()).float()
    r = torch.ones((), dtype=x.dtype) / root
    shape = _affine_shape(x, dim)
    y = (c * r) * weight.view(shape) + bias.view(shape)
    return y, (m if keep else None), (r if keep else None)


def layer_norm_backward(dy: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, weight: Tensor, dim: int = -1
                        ) -> tuple[Tensor, Tensor, Tensor]:
    """``(dx, dweight, dbias)`` of :func:`layer_norm_forward`."""
    dim = dim % x.dim()
    outer, d, inner = _shape3(x, dim)
    dy = dy.contiguous()
    if _kernel_ok(dy, x, mean, rstd, weight) and d > 0:
        dx, p = torch.empty_like(x), torch.empty_like(x)
        lib = _load()
        assert lib is not None
        args = (dy.data_ptr(), x.data_ptr(), mean.data_ptr(), rstd.data_ptr(), weight.data_ptr(), dx.data_ptr(),
                p.data_ptr(), outer, d)
        if inner == 1:
            lib.bars_layer_norm_bwd(*args)
        else:
            nt = torch.get_num_threads()
            scratch = torch.empty(nt * 4 * inner)
            lib.bars_layer_norm_mid_bwd(*args, inner, scratch.data_ptr(), nt)
    else:
        xh = (x - mean) * rstd
        g = dy * weight.view(_affine_shape(x, dim))
        p = dy * xh
        a = _seq_mean(g, dim)
        c = _seq_mean(g * xh, dim)
        dx = ((g - a) - xh * c) * rstd
    return dx, _axis_sums(p, outer, d, inner), _axis_sums(dy, outer, d, inner)


def _axis_sums(t: Tensor, outer: int, d: int, inner: int) -> Tensor:
    """``t`` viewed as [outer, d, inner] summed to [d]: over ``outer`` first (rows of d * inner values at a time;
    torch's reduction of an [N, 10] matrix down its columns is 5x slower), then over ``inner``."""
    k = next((k for k in (64, 16, 4) if inner == 1 and outer % k == 0), 1)  # narrow rows: k of them at a time
    return t.reshape(outer // k, k * d * inner).sum(0).reshape(k, d, inner).sum((0, 2))


class SmallLayerNorm(torch.autograd.Function):
    """LayerNorm over axis ``dim`` (width <= SMALL_NORM_MAX) with weight and bias, by :func:`layer_norm_forward`."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float, dim: int = -1) -> Tensor:  # type: ignore[override]
        y, mean, rstd = layer_norm_forward(x, weight, bias, eps, keep=True, dim=dim)
        ctx.save_for_backward(x, mean, rstd, weight)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None]:  # type: ignore[override]
        x, mean, rstd, weight = ctx.saved_tensors
        dx, dw, db = layer_norm_backward(dy, x, mean, rstd, weight, ctx.dim)
        return dx, dw, db, None, None


# ------------------------------------------------------------------------------------------------------------
# FFM's pairwise term: sum over pairs of slot dot products
# ------------------------------------------------------------------------------------------------------------
def _pair_kernel_ok(x: Tensor) -> bool:
    return x.dtype in (torch.float32, torch.float64) and x.is_contiguous() and x.device.type == "cpu" and available()


def _tables_ok(xs: Sequence[Tensor]) -> bool:
    return all(_pair_kernel_ok(x) and x.shape == xs[0].shape and x.dtype == xs[0].dtype for x in xs)


def _ptrs(ts: Sequence[Tensor]) -> Tensor:
    """The tensors' data addresses as an int64 array (the kernels' ``const T *const *``); hold it until the call
    returns."""
    return torch.tensor([t.data_ptr() for t in ts], dtype=torch.int64)


def _pair_dots(x: Tensor, left: Tensor, right: Tensor) -> Tensor:
    """``[B, P]``: ``<x[:, left_q], x[:, right_q]>`` for ``x`` ``[B, K, D]``, each summed over D in sequence from 0
    (the kernels' order)."""
    prod = x[:, left] * x[:, right]  # [B, P, D]
    dots = x.new_zeros(x.shape[0], left.numel())
    for j in range(x.shape[2]):
        dots = dots + prod[:, :, j]
    return dots


def pair_dot_sum_forward(xs: Sequence[Tensor], left: Tensor, right: Tensor) -> Tensor:
    """``xs``: tables ``[B, Kt, D]`` holding slots ``k = t * Kt + j`` (``xs[t][:, j]``) -> ``out[b] = sum_q
    <x[b, left_q], x[b, right_q]>``: each dot product and the sum over pairs in sequence from 0 (the kernel's
    order)."""
    b, kt, d = xs[0].shape
    p = left.numel()
    if _tables_ok(xs):
        out = xs[0].new_empty(b)
        where, ptrs = torch.empty(4 * p, dtype=torch.int64), _ptrs(xs)
        fn = _load().bars_pair_dot_sum_f32 if xs[0].dtype == torch.float32 else _load().bars_pair_dot_sum_f64  # type: ignore[union-attr]
        fn(ptrs.data_ptr(), kt, left.data_ptr(), right.data_ptr(), p, b, d, where.data_ptr(), out.data_ptr())
        return out
    dots = _pair_dots(torch.cat(list(xs), dim=1), left, right)
    acc = dots.new_zeros(b)
    for q in range(p):
        acc = acc + dots[:, q]
    return acc


def pair_dot_sum_backward(g: Tensor, xs: Sequence[Tensor], left: Tensor, right: Tensor, covers: bool
                          ) -> list[Tensor]:
    """The gradients of :func:`pair_dot_sum_forward`, one per table, for slots in at most one pair: ``g *
    partner``; slots in no pair get 0 (``covers``: every slot is in a pair)."""
    b, kt, d = xs[0].shape
    p = left.numel()
    g = g.contiguous()
    if _tables_ok(xs) and g.dtype == xs[0].dtype:
        gxs = [torch.empty_like(x) for x in xs]
        where, ptrs, gptrs = torch.empty(4 * p, dtype=torch.int64), _ptrs(xs), _ptrs(gxs)
        fn = _load().bars_pair_scatter_f32 if g.dtype == torch.float32 else _load().bars_pair_scatter_f64  # type: ignore[union-attr]
        fn(ptrs.data_ptr(), len(xs), kt, g.data_ptr(), left.data_ptr(), right.data_ptr(), p, b, d, int(not covers),
           where.data_ptr(), gptrs.data_ptr())
        return gxs
    x = torch.cat(list(xs), dim=1)
    gx = torch.empty_like(x) if covers else torch.zeros_like(x)
    gb = g.view(b, 1, 1)
    gx[:, left] = gb * x[:, right]
    gx[:, right] = gb * x[:, left]
    return list(gx.split(kt, dim=1))


class PairDotSum(torch.autograd.Function):
    """``(left, right, covers, *xs) -> [B]``: :func:`pair_dot_sum_forward` with its gradients (pairs of distinct
    slots, each slot in at most one pair; ``covers``: every slot is in one)."""

    @staticmethod
    def forward(ctx, left: Tensor, right: Tensor, covers: bool, *xs: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(left, right, *xs)
        ctx.covers = covers
        return pair_dot_sum_forward(xs, left, right)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        left, right, *xs = ctx.saved_tensors
        return (None, None, None, *pair_dot_sum_backward(g, xs, left, right, ctx.covers))


def select_pair_dots_forward(xs: Sequence[Tensor], sel: Tensor, left: Tensor, right: Tensor) -> Tensor:
    """``xs``: tables ``[B, Kt, D]`` holding slots ``k = t * Kt + j`` (``xs[t][:, j]``) -> ``[B, M * D + P]``: the
    slots ``sel`` flattened, then ``<x[left_q], x[right_q]>`` per pair (each dot product in sequence from 0, the
    kernel's order)."""
    b, kt, d = xs[0].shape
    m, p = sel.numel(), left.numel()
    if _tables_ok(xs):
        out = xs[0].new_empty(b, m * d + p)
        where = torch.empty(2 * (m + 2 * p), dtype=torch.int64)
        ptrs = _ptrs(xs)
        fn = _load().bars_select_pair_dots_f32 if xs[0].dtype == torch.float32 else _load().bars_select_pair_dots_f64  # type: ignore[union-attr]
        fn(ptrs.data_ptr(), kt, sel.data_ptr(), m, left.data_ptr(), right.data_ptr(), p, b, d, where.data_ptr(),
           out.data_ptr())
        return out
    x = torch.cat(list(xs), dim=1)  # [B, K, D]
    return torch.cat([x[:, sel].reshape(b, m * d), _pair_dots(x, left, right)], dim=1)


def select_pair_dots_backward(g: Tensor, xs: Sequence[Tensor], sel: Tensor, left: Tensor, right: Tensor,
                              covers: bool) -> list[Tensor]:
    """The gradients of :func:`select_pair_dots_forward` for distinct slots, one per table: each selected slot its
    block of ``g``, each paired slot ``g_q * partner``; other slots 0 (``covers``: there are none)."""
    b, kt, d = xs[0].shape
    m, p = sel.numel(), left.numel()
    g = g.contiguous()
    if _tables_ok(xs) and g.dtype == xs[0].dtype:
        gxs = [torch.empty_like(x) for x in xs]
        where = torch.empty(2 * (m + 2 * p), dtype=torch.int64)
        ptrs, gptrs = _ptrs(xs), _ptrs(gxs)
        fn = (_load().bars_select_pair_scatter_f32 if g.dtype == torch.float32  # type: ignore[union-attr]
              else _load().bars_select_pair_scatter_f64)  # type: ignore[union-attr]
        fn(ptrs.data_ptr(), len(xs), kt, g.data_ptr(), sel.data_ptr(), m, left.data_ptr(), right.data_ptr(), p, b,
           d, int(not covers), where.data_ptr(), gptrs.data_ptr())
        return gxs
    x = torch.cat(list(xs), dim=1)
    gx = torch.empty_like(x) if covers else torch.zeros_like(x)
    gx[:, sel] = g[:, : m * d].reshape(b, m, d)
    gq = g[:, m * d :].unsqueeze(-1)
    gx[:, left] = gq * x[:, right]
    gx[:, right] = gq * x[:, left]
    return list(gx.split(kt, dim=1))


class SelectPairDots(torch.autograd.Function):
    """``(sel, left, right, covers, *xs) -> [B, M * D + P]``: :func:`select_pair_dots_forward` with its gradients
    (ONN's DNN input from its tables: the copy slots and the pairs' dot products; all those slots distinct;
    ``covers``: they are every slot)."""

    @staticmethod
    def forward(ctx, sel: Tensor, left: Tensor, right: Tensor, covers: bool, *xs: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(sel, left, right, *xs)
        ctx.covers = covers
        return select_pair_dots_forward(xs, sel, left, right)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        sel, left, right, *xs = ctx.saved_tensors
        return (None, None, None, None, *select_pair_dots_backward(g, xs, sel, left, right, ctx.covers))


def pair_products_forward(left: Tensor, right: Tensor, hs: Sequence[Tensor], es: Sequence[Tensor]) -> Tensor:
    """``[B, n, P, D]``: ``hs[k][:, left] * es[k][:, right]`` for the ``n`` couples (each ``[B, F, D]``)."""
    b, f, d = hs[0].shape
    p = left.numel()
    if _tables_ok([*hs, *es]):
        out = hs[0].new_empty(b, len(hs), p, d)
        fn = _load().bars_pair_products_f32 if hs[0].dtype == torch.float32 else _load().bars_pair_products_f64  # type: ignore[union-attr]
        ph, pe = _ptrs(hs), _ptrs(es)  # held until the call returns
        fn(ph.data_ptr(), pe.data_ptr(), len(hs), left.data_ptr(), right.data_ptr(), p, b, f, d, out.data_ptr())
        return out
    return torch.stack([h[:, left] * e[:, right] for h, e in zip(hs, es, strict=True)], dim=1)


def pair_products_backward(g: Tensor, left: Tensor, right: Tensor, hs: Sequence[Tensor], es: Sequence[Tensor]
                           ) -> tuple[list[Tensor], list[Tensor]]:
    """The gradients of :func:`pair_products_forward` (``hs``'s, ``es``'s): each field's sum over its pairs, in
    pair order."""
    b, f, d = hs[0].shape
    p = left.numel()
    g = g.contiguous()
    if _tables_ok([*hs, *es]) and g.dtype == hs[0].dtype:
        ghs, ges = [torch.empty_like(h) for h in hs], [torch.empty_like(e) for e in es]
        fn = (_load().bars_pair_products_bwd_f32 if g.dtype == torch.float32  # type: ignore[union-attr]
              else _load().bars_pair_products_bwd_f64)  # type: ignore[union-attr]
        ph, pe, pgh, pge = _ptrs(hs), _ptrs(es), _ptrs(ghs), _ptrs(ges)  # held until the call returns
        fn(ph.data_ptr(), pe.data_ptr(), len(hs), g.data_ptr(), left.data_ptr(), right.data_ptr(), p, b, f, d,
           pgh.data_ptr(), pge.data_ptr())
        return ghs, ges
    ghs, ges = [], []
    for k, (h, e) in enumerate(zip(hs, es, strict=True)):
        gk = g[:, k]
        # each gradient in its input's dtype (h is bfloat16 under CPU autocast, e float32)
        ghs.append(torch.zeros_like(h).index_add_(1, left, (gk * e[:, right]).to(h.dtype)))
        ges.append(torch.zeros_like(e).index_add_(1, right, (gk * h[:, left]).to(e.dtype)))
    return ghs, ges


class PairProducts(torch.autograd.Function):
    """``(left, right, h_1, e_1, ..., h_n, e_n) -> [B, n, P, D]``: :func:`pair_products_forward` with its
    gradients (FiBiNET's bilinear pairs ``(e_i W) * e_j`` with ``h = e W``)."""

    @staticmethod
    def forward(ctx, left: Tensor, right: Tensor, *hes: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(left, right, *hes)
        return pair_products_forward(left, right, hes[0::2], hes[1::2])

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        left, right, *hes = ctx.saved_tensors
        ghs, ges = pair_products_backward(g, left, right, hes[0::2], hes[1::2])
        return (None, None, *(t for couple in zip(ghs, ges, strict=True) for t in couple))


def kmax_index(x: Tensor, k: int) -> Tensor:
    """``x.topk(k, dim=-1).indices.sort(dim=-1).values`` (int64, no autograd): the positions of the ``k`` largest
    values of each row along the last axis, ascending. With the compiled kernel, rows whose ``k`` largest are one set
    come from it and the rest from ``topk`` (see the module docstring); the values are the same either way."""
    x = x.detach()
    n = x.shape[-1]
    if 0 < k < n and x.numel() and not traced() and x.dtype in (torch.float32, torch.float64) \
            and x.device.type == "cpu" and available():
        x = x.contiguous()  # CCPM's first layer: the unfolded product's output is laid out [rows, n, channels]
        rows = x.numel() // n
        index = torch.empty(*x.shape[:-1], k, dtype=torch.int64)
        flag = torch.empty(rows, dtype=torch.uint8)
        fn = _load().bars_kmax_index_f32 if x.dtype == torch.float32 else _load().bars_kmax_index_f64  # type: ignore[union-attr]
        fn(x.data_ptr(), rows, n, k, index.data_ptr(), flag.data_ptr())
        left = flag.nonzero().squeeze(1)
        if left.numel():  # ties at the boundary or NaN: topk decides, as it does without the kernel
            flat, xs = index.view(rows, k), x.view(rows, n)
            flat[left] = xs[left].topk(k, dim=-1).indices.sort(dim=-1).values
        return index
    return x.topk(k, dim=-1).indices.sort(dim=-1).values


# ------------------------------------------------------------------------------------------------------------
# GDCN's gated cross layer, element-wise part
# ------------------------------------------------------------------------------------------------------------
def gated_cross_forward(z: Tensor, s: Tensor, bias: Tensor, x0: Tensor, x: Tensor) -> Tensor:
    """``((x0 * (z[:, :d] + bias)) * s) + x`` for ``z [B, 2d]``, ``s = sigmoid(z[:, d:])``, ``x0``, ``x [B, d]``."""
    d = x0.shape[1]
    if _kernel_ok(z, s, bias, x0, x):
        out = torch.empty_like(x)
        lib = _load()
        assert lib is not None
        lib.bars_gated_cross_fwd(z.data_ptr(), s.data_ptr(), bias.data_ptr(), x0.data_ptr(), x.data_ptr(),
                                 out.data_ptr(), x.shape[0], d)
        return out
    return x0 * (z[:, :d] + bias) * s + x


def gated_cross_backward(go: Tensor, z: Tensor, s: Tensor, bias: Tensor, x0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(gz [B, 2d], gbias [d], gx0 [B, d])`` of :func:`gated_cross_forward` (``x``'s gradient is ``go``)."""
    d = x0.shape[1]
    go = go.contiguous()
    if _kernel_ok(go, z, s, bias, x0):
        gz, gx0 = torch.empty_like(z), torch.empty_like(x0)
        lib = _load()
        assert lib is not None
        lib.bars_gated_cross_bwd(go.data_ptr(), z.data_ptr(), s.data_ptr(), bias.data_ptr(), x0.data_ptr(),
                                 gz.data_ptr(), gx0.data_ptr(), go.shape[0], d)
    else:
        h = z[:, :d] + bias
        gs = go * s
        gz = torch.cat([gs * x0, go * (x0 * h) * (1 - s) * s], dim=1)
        gx0 = gs * h
    return gz, gz[:, :d].sum(0), gx0


class GatedCrossMix(torch.autograd.Function):
    """``((x0 * (z[:, :d] + bias)) * sigmoid(z[:, d:])) + x`` (float32 CPU; :func:`gated_cross_forward`)."""

    @staticmethod
    def forward(ctx, z: Tensor, bias: Tensor, x0: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        z, bias, x0, x = z.detach(), bias.detach(), x0.detach(), x.detach()
        s = torch.sigmoid(z[:, x0.shape[1]:])
        ctx.save_for_backward(z, s, bias, x0)
        return gated_cross_forward(z, s, bias, x0, x)

    @staticmethod
    def backward(ctx, go: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # type: ignore[override]
        z, s, bias, x0 = ctx.saved_tensors
        gz, gbias, gx0 = gated_cross_backward(go, z, s, bias, x0)
        return gz, gbias, gx0, go


def lookup_grad(flat: Tensor, g: Tensor, weight: Tensor, lam: float) -> Tensor:
    """The gradient of a float32 table ``weight [rows, d]`` looked up at ``flat [n]`` (int64; index 0 the padding
    row, whose lookups add nothing), ``g [n, d]`` the lookups' gradients, with the regularizer's ``weight * lam``
    in it, summed in the order of the unfused step (:class:`bars.models.layers.embedding._PaddedLookup`'s
    ``index_add_`` into zeros, then ``add_regularization_grad``): a row looked up gets ``((0 + g_1) + g_2 + ...) +
    weight[r] * lam`` over its lookups in order, the padding row ``0 + weight[0] * lam``, any other row
    ``weight[r] * lam`` (there the unfused step's ``0 + weight[r] * lam`` can differ only in the sign of a zero).
    The kernel writes ``weight * lam`` with torch (both threads) and then passes twice over the ``n`` lookups,
    where the unfused step zero-fills the table's gradient and passes over it twice more (a 1M x 16 table, 4096 x
    39 lookups: 12.3-13.1 ms against 15.8-16.0 ms for the lookup forward and backward with ``lam * W``)."""
    rows, d = weight.shape
    out = torch.mul(weight.detach(), lam)
    if _kernel_ok(g, weight) and flat.dtype == torch.int64 and flat.is_contiguous():
        lib = _load()
        assert lib is not None
        mark = torch.zeros(rows, dtype=torch.uint8)
        lib.bars_lookup_grad_f32(flat.data_ptr(), flat.numel(), g.data_ptr(), weight.data_ptr(), lam,
                                 out.data_ptr(), mark.data_ptr(), d)
        return out
    s = torch.zeros_like(out).index_add_(0, flat, g)
    looked = torch.zeros(rows, dtype=torch.bool, device=out.device)
    looked[flat] = True
    looked[0] = False
    out[looked] = s[looked] + out[looked]
    out[0] = out[0] + 0.0
    return out
