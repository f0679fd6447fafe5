"""The trainer's optimizer: Adam at torch's defaults, fused, without torch.optim's dynamo import.

:func:`make_adam` is what :class:`bars.train.TrainStep` uses: :class:`FusedAdam` on CPU and CUDA (the kernel of
``torch.optim.Adam(fused=True)``, bit for bit), ``torch.optim.Adam`` elsewhere.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


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
