"""The trainer's optimizer: Adam at torch's defaults, fused, without torch.optim's dynamo import.

:func:`make_adam` is what :class:`bars.train.TrainStep` uses: :class:`FusedAdam` on CPU and CUDA (the kernel of
``torch.optim.Adam(fused=True)``, bit for bit), ``torch.optim.Adam`` elsewhere.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from bars.models.layers.table_grad import SparseTableGrad, new_slots, norm_order, usable


def set_lr(opt: Any, lr: float) -> None:
    """Set the learning rate of every parameter group (a torch optimizer or :class:`FusedAdam`)."""
    for g in opt.param_groups:
        g["lr"] = lr


class FusedAdam:
    """Adam at torch's defaults (betas 0.9/0.999, eps 1e-8, no weight decay, no amsgrad) computed exactly as
    ``torch.optim.Adam(params, lr, fused=True)`` computes it: the same kernel (``torch._fused_adam_``) on the same
    tensors (state created on a parameter's first gradient: ``step`` a float32 0-d tensor on its device,
    ``exp_avg``/``exp_avg_sq`` zeros like it; parameters without a gradient skipped), so the weights and the state
    are bit for bit torch's (tested). Why not torch's class: ``torch.optim.Optimizer`` imports ``torch._dynamo`` on
    its first ``add_param_group`` and every ``step`` (2-3 s of CPU per process, issue 16), which eager training does
    not use. ``param_groups[0]["lr"]`` is the learning rate, as for a torch optimizer."""

    def __init__(self, params: list[nn.Parameter], lr: float) -> None:
        self.params = list(params)
        self.param_groups = [{"params": self.params, "lr": float(lr)}]
        self.state: dict[nn.Parameter, tuple[Tensor, Tensor, Tensor]] = {}  # step, exp_avg, exp_avg_sq

    @staticmethod
    def supported(device: torch.device) -> bool:
        return device.type in ("cpu", "cuda") and hasattr(torch, "_fused_adam_")

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not set_to_none:
            raise ValueError("FusedAdam.zero_grad: only set_to_none=True")
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

        ps, grads, avgs, sqs, steps = [], [], [], [], []
        for p in self.params:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("Adam does not support sparse gradients")
            st = self.state.get(p)
            if st is None:
                st = self.state[p] = (torch.zeros((), dtype=torch.float32, device=p.device),
                                      torch.zeros_like(p, memory_format=torch.preserve_format),
                                      torch.zeros_like(p, memory_format=torch.preserve_format))
            ps.append(p)
            grads.append(p.grad)
            steps.append(st[0])
            avgs.append(st[1])
            sqs.append(st[2])
        if not ps:
            return
        lr = self.param_groups[0]["lr"]
        grouped = _group_tensors_by_device_and_dtype([ps, grads, avgs, sqs, [], steps])
        for (g_ps, g_grads, g_avgs, g_sqs, g_max, g_steps), _ in grouped.values():
            torch._foreach_add_(g_steps, 1)
            torch._fused_adam_(g_ps, g_grads, g_avgs, g_sqs, g_max, g_steps, amsgrad=False, lr=lr, beta1=0.9,
                               beta2=0.999, weight_decay=0.0, eps=1e-8, maximize=False, grad_scale=None,
                               found_inf=None)

    @torch.no_grad()
    def step_sparse(self, table: SparseTableGrad, scale: float = 1.0) -> None:
        """:meth:`step` for one parameter whose gradient is held sparse (``table.weight``, its ``.grad`` None), times
        ``scale`` (a clipping coefficient): the same state (created as :meth:`step` creates it, the step counted as
        there) and the same update, bit for bit (:meth:`bars.models.layers.table_grad.SparseTableGrad.adam`)."""
        p = table.weight
        st = self.state.get(p)
        if st is None:
            st = self.state[p] = (torch.zeros((), dtype=torch.float32, device=p.device),
                                  torch.zeros_like(p, memory_format=torch.preserve_format),
                                  torch.zeros_like(p, memory_format=torch.preserve_format))
        st[0].add_(1)
        table.adam(st[1], st[2], float(st[0]), self.param_groups[0]["lr"], scale=scale)


def step_with_sparse_tables(optimizer: Any, params: list[nn.Parameter], max_norm: float,
                            tables: list[SparseTableGrad], tables_sq: float | None = None) -> bool:
    """Clip at ``max_norm`` (inf: no clipping) and take the Adam step, for a step where ``tables`` hold their
    parameters' gradients sparse (:mod:`bars.models.layers.table_grad`; their ``.grad`` None). Bit for bit
    :func:`clip_grad_norm_` then ``optimizer.step()`` on the dense gradients.

    ``tables_sq``: at least the sum of the tables' ``||W||^2`` (the embedding regularizer's value gives it:
    ``2 * value / lam``; None: unknown). The total norm is estimated in double from it, the other gradients'
    norm and what the tables' looked-up rows add (:meth:`~bars.models.layers.table_grad.SparseTableGrad.
    grad_sq_over`), with no pass over a table. When clipping is off, or the estimate is clearly below
    ``max_norm`` (torch's coefficient is then 1, and :func:`clip_grad_norm_` changes nothing), Adam runs on the
    other parameters and on each table in one pass over it. Otherwise the tables' dense gradients are written
    for torch's exact norm, the other gradients clipped as :func:`clip_grad_norm_` clips them, and each table's
    Adam pass multiplies its gradient by the same coefficient (as torch's in-place product would). When another
    path also wrote a table's gradient, the dense gradients and the unfused clipping and step run. Returns
    whether the exact norm was taken."""
    if any(t.weight.grad is not None for t in tables) or not isinstance(optimizer, FusedAdam):
        for t in tables:
            t.materialise()
        tables = []
    if not tables:
        if not math.isinf(max_norm):
            clip_grad_norm_(params, max_norm)
        optimizer.step()
        return False
    scale, exact = 1.0, False
    if not math.isinf(max_norm):
        grads = [p.grad for p in params if p.grad is not None]
        sq = float(nn.utils.get_total_norm(grads, 2.0)) ** 2 if grads else 0.0
        est = math.inf
        if tables_sq is not None:  # lam * W over every row, then the looked-up rows' share
            lam = tables[0].lam  # one embedding regularizer for every table
            est = math.sqrt(max(0.0, sq + lam * lam * tables_sq + sum(t.grad_sq_over() for t in tables)))
        # torch's float32 norm is within ~1e-6 (relative) of the estimate: a margin of 1e-3 decides for it
        if not (math.isfinite(est) and est <= (max_norm - 1e-6) * (1 - 1e-3)):
            scale, exact = _clip_with_tables(params, max_norm, tables), True
    optimizer.step()
    for t in tables:
        optimizer.step_sparse(t, scale)
    return exact


def _clip_with_tables(params: list[nn.Parameter], max_norm: float, tables: list[SparseTableGrad]) -> float:
    """:func:`clip_grad_norm_`'s total norm with the tables' dense gradients in it (:func:`_total_norm_with_tables`;
    where that cannot give torch's bits, the dense gradients written for it, then dropped); the other gradients
    clipped as it clips them; returns the coefficient (1.0 where it does not multiply)."""
    total = _total_norm_with_tables(params, tables)
    if total is None:  # (torch's norm not reproduced here, or gradients of other dtypes or devices)
        for t in tables:
            t.weight.grad = t.dense()
        total = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None], 2.0)
        for t in tables:
            t.weight.grad = None
    if bool(max_norm / (total + 1e-6) >= 1.0):
        return 1.0
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)  # as nn.utils.clip_grads_with_norm_
    nn.utils.clip_grads_with_norm_([p for p in params if p.grad is not None], max_norm, total)
    return float(coef)


class SparseTables:
    """A trainer's tables whose gradient may be held sparse (:mod:`bars.models.layers.table_grad`): each one's row
    -> slot map, kept from step to step, and the step (:func:`step_with_sparse_tables`). ``exact_norms`` counts
    the steps whose clipping test needed the dense gradients' exact norm."""

    def __init__(self, tables: list[nn.Parameter]) -> None:
        self.slots = {id(p): new_slots(p) for p in tables if usable(p)}
        self.exact_norms = 0
        self.pending = False  # slot maps handed to a step that has not reached its update yet

    def for_step(self) -> dict[int, Tensor]:
        """The slot maps for this step's lookups (:func:`bars.models.layers.embedding.regularizer_in_lookup_grad`),
        all zero: a step that stopped between its lookups and its update (an exception) left rows in them, which
        are cleared here."""
        if self.pending:
            for s in self.slots.values():
                s.zero_()
        self.pending = True
        return self.slots

    def step(self, optimizer: Any, params: list[nn.Parameter], max_norm: float, entries: dict, reg_value: Any,
             lam: float) -> None:
        """Clip and update after a backward with ``entries`` (``{id(table): RegularizedTable}``) and the embedding
        regularizer's value ``reg_value`` (``(lam / 2) sum ||E||^2``, or None)."""
        tables = [e.sparse for e in entries.values() if e.sparse is not None]
        # the value is read only with a sparse table (a CPU tensor): never a device sync in a GPU or captured step
        tables_sq = None if not tables or reg_value is None or not lam else 2 * float(reg_value) / lam
        self.exact_norms += step_with_sparse_tables(optimizer, params, max_norm, tables, tables_sq)
        self.pending = False


def make_adam(params: list[nn.Parameter], lr: float, device: torch.device) -> Any:
    # fused Adam (one kernel over all parameters) on CPU and CUDA: same update rule as the loop implementation
    if FusedAdam.supported(device):
        return FusedAdam(params, lr)
    return torch.optim.Adam(params, lr=lr)  # pragma: no cover - other devices


def clip_grad_norm_(params: list[nn.Parameter], max_norm: float) -> None:
    """``nn.utils.clip_grad_norm_(params, max_norm)``, computed as torch computes it (the total norm, then every
    gradient times ``min(max_norm / (norm + 1e-6), 1)``), except that on the CPU, where reading the coefficient
    costs no device sync, the multiplication is skipped when the coefficient is exactly 1: it would change no bit,
    and it is one more read and write of every gradient (64 MiB each way for a 1M x 16 table; issue 16). A NaN or
    infinite norm multiplies as torch does."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    total = nn.utils.get_total_norm(grads, 2.0)
    if total.device.type == "cpu" and bool(max_norm / (total + 1e-6) >= 1.0):
        return
    nn.utils.clip_grads_with_norm_(params, max_norm, total)


def _total_norm_with_tables(params: list[nn.Parameter], tables: list[SparseTableGrad]) -> Tensor | None:
    """``nn.utils.get_total_norm`` of every gradient with the tables' dense ones in it, bit for bit, without writing
    those (:meth:`SparseTableGrad.norm`): each gradient's norm in the parameters' order (the other gradients' as
    torch takes them, ``_foreach_norm``), then the norm of those. None where that order is not torch's: a gradient
    not float32 on the CPU, or :func:`~bars.models.layers.table_grad.norm_order` unknown here."""
    by_table = {id(t.weight): t for t in tables}
    others = [p.grad for p in params if p.grad is not None and id(p) not in by_table]
    if norm_order() is None or any(g.dtype != torch.float32 or g.device.type != "cpu" for g in others):
        return None
    other_norms = iter(torch._foreach_norm(others, 2.0) if others else ())
    norms = [by_table[id(p)].norm() if id(p) in by_table else next(other_norms)
             for p in params if p.grad is not None or id(p) in by_table]
    return torch.linalg.vector_norm(torch.stack(norms), 2.0)
