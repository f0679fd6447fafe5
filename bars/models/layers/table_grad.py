"""A big embedding table's gradient held as its looked-up rows (CPU, float32, with the embedding regularizer).

With the embedding regularizer ``lam``, every row of a table has a gradient (``lam * W`` at least), so the unfused
step writes a dense gradient as big as the table (:func:`bars.models.layers.kernels.lookup_grad`: a 1M x 16 table
is 64 MiB), reads it again for the clipping norm and once more in Adam. :class:`SparseTableGrad` keeps only the
looked-up rows' sums of lookup gradients; the gradient of each element is then formed where it is used:

    looked-up row r >= 1:  S[r] + W[r] * lam      S[r] = ((0 + g_1) + g_2) + ... over r's lookups in order
    row 0 (padding):       0 + W[0] * lam
    any other row:         W[r] * lam

which is, bit for bit, the gradient :func:`~bars.models.layers.kernels.lookup_grad` writes (the unfused step's).
The trainer (:func:`bars.optim.step_with_sparse_tables`) asks :meth:`SparseTableGrad.grad_sq_over` for the
clipping test and :meth:`SparseTableGrad.adam` for the update: torch's fused Adam computed on those values in one pass over
the table, the parameter and both moments bit for bit what ``torch._fused_adam_`` gives with the dense gradient
(tests/test_table_step.py). Where the clipping norm may be reached, the step needs torch's exact norm: then
:meth:`SparseTableGrad.dense` writes the dense gradient for it, and Adam still runs on the sparse one, times the
coefficient. :meth:`SparseTableGrad.materialise` puts the dense gradient in ``weight.grad`` instead (a second
gradient path into the table).

Only with the compiled kernels (``bars.models.layers._kernels``); without them the lookup writes the dense
gradient as before (:func:`usable`).
"""

from __future__ import annotations

import ctypes
import math

import torch
from torch import Tensor

from bars.models.layers import kernels

MAX_WIDTH = 4096  # the kernels' pieces hold whole rows of at most this many values
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8  # torch's Adam defaults, the trainer's (bars.optim.FusedAdam)
_argtypes_set = False


def _lib() -> ctypes.CDLL:
    global _argtypes_set
    lib = kernels._load()
    assert lib is not None
    if not _argtypes_set:
        p, i64, f = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
        lib.bars_table_sparse_f32.argtypes = [p, i64, p, i64, p, p, p]
        lib.bars_table_sparse_f32.restype = i64
        lib.bars_table_gsq_f32.argtypes = [p, i64, f, p, p, i64]
        lib.bars_table_gsq_f32.restype = ctypes.c_double
        lib.bars_table_adam_f32.argtypes = [p, p, p, i64, i64, f, p, p, f, f, f, f, f, f, i64, f, p, i64]
        lib.bars_table_adam_f32.restype = None
        lib.bars_table_dense_f32.argtypes = [p, i64, f, p, p, i64, p]
        lib.bars_table_dense_f32.restype = None
        i32 = ctypes.c_int32
        lib.bars_table_norm_f32.argtypes = [p, i64, i64, f, p, p, p, i64, i64, i32, i32]
        lib.bars_table_norm_f32.restype = f
        _argtypes_set = True
    return lib


def usable(weight: Tensor) -> bool:
    """Whether ``weight``'s gradient can be held sparse: a contiguous 2-d float32 CPU table of at most
    :data:`MAX_WIDTH` columns and fewer than 2**31 rows, with the compiled kernels, on a host where they give
    torch's Adam bit for bit (:func:`adam_width`)."""
    return (weight.device.type == "cpu" and weight.dtype == torch.float32 and weight.dim() == 2
            and weight.is_contiguous() and 0 < weight.shape[1] <= MAX_WIDTH and weight.shape[0] < 2**31 - 1
            and kernels.available() and adam_width() is not None)


_WIDTH: list[int | None] = []


def adam_width() -> int | None:
    """The vector width of torch's fused Adam kernel on this host (8 where ATen runs it with AVX2, as on AVX-512
    hosts too, 16 with AVX-512), found once per process: aten computes a tensor's last ``numel % width`` elements in
    a scalar loop whose second moment is rounded otherwise (another fused multiply-add), and the kernel here must
    know where that tail starts. Probed by running both on small tables and comparing every bit; None (the
    gradient then stays dense) when neither width reproduces torch's update here."""
    if not _WIDTH:
        _WIDTH.append(next((wd for wd in (8, 16) if _agrees(wd)), None) if kernels.available() else None)
    return _WIDTH[0]


def _agrees(width: int) -> bool:
    g = torch.Generator().manual_seed(width)
    for k in range(8):  # 45 elements: the tails of widths 8 and 16 differ (5 and 13 elements)
        w, m, v = torch.randn(5, 9, generator=g), torch.randn(5, 9, generator=g) * 1e-3, torch.rand(5, 9, generator=g)
        flat = torch.randint(0, 5, (12,), generator=g)
        lookups = torch.randn(12, 9, generator=g) * 10.0 ** (k - 4)
        theirs = [t.clone() for t in (w, m, v)]
        step = torch.tensor(float(k + 1))
        torch._fused_adam_([theirs[0]], [kernels.lookup_grad(flat, lookups, w, 0.1)], [theirs[1]], [theirs[2]], [],
                           [step], amsgrad=False, lr=1e-2, beta1=_BETA1, beta2=_BETA2, weight_decay=0.0, eps=_EPS,
                           maximize=False, grad_scale=None, found_inf=None)
        mine = [t.clone() for t in (w, m, v)]
        SparseTableGrad(mine[0], flat, lookups, 0.1, new_slots(w)).adam(mine[1], mine[2], float(step), 1e-2, width)
        if not all(torch.equal(a.view(torch.int32), b.view(torch.int32)) for a, b in zip(mine, theirs, strict=True)):
            return False
    return True



_ORDER: list[tuple[int, bool, bool] | None] = []


def norm_order() -> tuple[int, bool, bool] | None:
    """How torch's ``linalg.vector_norm`` sums a float32 tensor's squares on this host, found once per process:
    ``(width, lane_fma, tail_fma)`` (lanes of 8 or 16 elements, each with or without a fused multiply-add, and
    the same for the last ``numel % width`` elements; aten's ``norm_two_reduce_step`` and its scalar tail), so
    that :meth:`SparseTableGrad.norm` gives its bits without the dense gradient; None (the clipping test then
    writes the dense gradient) when no such order reproduces torch here."""
    if not _ORDER:
        _ORDER.append(next((o for o in ((w, lf, tf) for w in (16, 8) for lf in (True, False) for tf in (True, False))
                            if _norm_agrees(o)), None) if kernels.available() else None)
    return _ORDER[0]


def _norm_agrees(order: tuple[int, bool, bool]) -> bool:
    g = torch.Generator().manual_seed(17)
    shapes = ((7, 9), (40, 16), (33, 10), (300, 16), (5, 3), (1000, 13)) + ((3, 5),) * 12  # (tails of 8, 16 differ)
    for rows, d in shapes:
        w = torch.randn(rows, d, generator=g) * torch.pow(10.0, torch.rand(rows, d, generator=g) * 6 - 3)
        flat = torch.randint(0, rows, (2 * rows,), generator=g)
        t = SparseTableGrad(w, flat, torch.randn(2 * rows, d, generator=g), 0.7, new_slots(w))
        ok = torch.equal(t.norm(order).view(torch.int32), torch.linalg.vector_norm(t.dense()).view(torch.int32))
        t.release()
        if not ok:
            return False
    return True

def new_slots(weight: Tensor) -> Tensor:
    """The row -> slot map a table's :class:`SparseTableGrad` fills and clears: int32 zeros, one per row."""
    return torch.zeros(weight.shape[0], dtype=torch.int32)


class SparseTableGrad:
    """The gradient of ``weight`` from one lookup ``flat [n]`` (int64, 0 the padding row) with the lookups'
    gradients ``g [n, d]`` and the regularizer ``lam`` (``lam_last``: see :meth:`materialise`): ``rows [k]`` the
    looked-up rows (in order of first lookup) and ``sums [k, d]`` their sums. ``slots`` (:func:`new_slots`, all
    zero) maps a row to its place in ``sums`` until :meth:`release` (called by :meth:`adam` and
    :meth:`materialise`) clears it again."""

    __slots__ = ("lam", "lam_last", "rows", "slots", "sums", "weight")

    def __init__(self, weight: Tensor, flat: Tensor, g: Tensor, lam: float, slots: Tensor,
                 lam_last: bool = False) -> None:
        n, d = g.shape
        if flat.dtype != torch.int64 or not flat.is_contiguous() or flat.numel() != n:
            raise ValueError("SparseTableGrad: flat must be a contiguous int64 vector, one index per row of g")
        if n >= 2**31 - 1:
            raise ValueError(f"SparseTableGrad: {n} lookups in one step, at most 2**31 - 2")
        g = g.contiguous()
        self.weight, self.lam, self.slots, self.lam_last = weight, float(lam), slots, lam_last
        sums = torch.empty((n, d), dtype=torch.float32)
        rows = torch.empty(n, dtype=torch.int64)
        k = _lib().bars_table_sparse_f32(flat.data_ptr(), n, g.data_ptr(), d, slots.data_ptr(), sums.data_ptr(),
                                         rows.data_ptr())
        self.rows, self.sums = rows[:k], sums[:k]

    def grad_sq_over(self) -> float:
        """The squared norm of the gradient minus that of ``lam * W`` (what the looked-up rows add to it), summed
        in double over the looked-up rows only: with ``||W||^2`` (the regularizer's value gives it), an estimate
        of the gradient's squared norm without a pass over the table (the clipping test)."""
        w = self.weight.detach()
        return _lib().bars_table_gsq_f32(w.data_ptr(), w.shape[1], self.lam, self.sums.data_ptr(),
                                         self.rows.data_ptr(), self.rows.numel())

    def dense(self) -> Tensor:
        """The dense gradient, bit for bit :func:`~bars.models.layers.kernels.lookup_grad`'s (the slots kept)."""
        w = self.weight.detach()
        out = torch.mul(w, self.lam)
        _lib().bars_table_dense_f32(w.data_ptr(), w.shape[1], self.lam, self.sums.data_ptr(), self.rows.data_ptr(),
                                    self.rows.numel(), out.data_ptr())
        return out

    def norm(self, order: tuple[int, bool, bool] | None = None) -> Tensor:
        """``torch.linalg.vector_norm(self.dense())`` bit for bit (a float32 scalar), in one pass over the table
        without writing the dense gradient (``bars_table_norm_f32``; ``order``: default :func:`norm_order`)."""
        order = order or norm_order()
        if order is None:
            raise RuntimeError("SparseTableGrad.norm: the kernel does not reproduce torch's norm on this host")
        w = self.weight.detach()
        v = _lib().bars_table_norm_f32(w.data_ptr(), w.shape[0], w.shape[1], self.lam, self.slots.data_ptr(),
                                       self.sums.data_ptr(), self.rows.data_ptr(), self.rows.numel(), order[0],
                                       int(order[1]), int(order[2]))
        return torch.tensor(v, dtype=torch.float32)

    def materialise(self) -> None:
        """Write the dense gradient into ``weight.grad`` (added to it when another path already wrote one: a sum
        of two, in either order the same bits; ``lam_last``, the unfused step of a table below width 16: the
        lookups' sums added first, ``W * lam`` last, as that step adds them), then :meth:`release`."""
        if self.weight.grad is None:
            self.weight.grad = self.dense()
        elif self.lam_last:  # the unfused step: the lookups' sums and the other path's, then + W * lam
            w = self.weight.detach()
            sums = torch.zeros_like(w).index_copy_(0, self.rows, self.sums)
            self.weight.grad.add_(sums).add_(torch.mul(w, self.lam))
        else:
            self.weight.grad.add_(self.dense())
        self.release()

    def adam(self, exp_avg: Tensor, exp_avg_sq: Tensor, step: float, lr: float, width: int | None = None,
             scale: float = 1.0) -> None:
        """torch's fused Adam step ``step`` (already counted) at learning rate ``lr`` on ``weight`` and its two
        moments with this gradient times ``scale`` (the clipping coefficient: torch multiplies the gradient by it
        in place first; :func:`torch._fused_adam_` with torch's defaults; aten computes the coefficients in double
        from the step, as here; ``width``: its vector width, default :func:`adam_width`), then :meth:`release`."""
        w = self.weight.detach()
        width = width or adam_width()
        if width is None:
            raise RuntimeError("SparseTableGrad.adam: the kernel does not reproduce torch's Adam on this host")
        for t in (exp_avg, exp_avg_sq):
            if t.shape != w.shape or t.dtype != torch.float32 or not t.is_contiguous():
                raise ValueError("SparseTableGrad.adam: the moments must be contiguous float32 tensors like the table")
        bc1 = 1 - math.pow(_BETA1, step)
        bc2 = 1 - math.pow(_BETA2, step)
        _lib().bars_table_adam_f32(w.data_ptr(), exp_avg.data_ptr(), exp_avg_sq.data_ptr(), w.shape[0], w.shape[1],
                                   self.lam, self.slots.data_ptr(), self.sums.data_ptr(), 1 - _BETA1, _BETA2,
                                   1 - _BETA2, math.sqrt(bc2), _EPS, -(lr / bc1), w.numel() - w.numel() % width,
                                   scale, self.rows.data_ptr(), self.rows.numel())
        self.release()

    def release(self) -> None:
        """Clear this gradient's rows from ``slots`` (all zero again, for the next step)."""
        if self.rows.numel():
            self.slots.index_fill_(0, self.rows, 0)
        self.rows = self.rows[:0]
