"""Multi-task blocks: the experts and softmax gates of MMoE (Ma et al., KDD 2018) and PLE's Customized Gate
Control layer (Tang et al., RecSys 2020), as FuxiCTR 2.3.10 computes them (model_zoo/multitask/MMoE/src/MMoE.py
``MMoE_Layer``, model_zoo/multitask/PLE/src/PLE.py ``CGC_Layer``).

Every expert is an :class:`MLP` of hidden layers only (its last hidden layer is activated, FuxiCTR's
``MLP_Block(output_activation=None)`` without ``output_dim``); every gate an :class:`MLP` whose output Linear has one
unit per expert it weighs, followed by a softmax over the experts. Dropout and batch norm apply to experts and gates
alike (FuxiCTR passes ``net_dropout`` and ``batch_norm`` to both).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bars.models.layers.core import MLP


def _experts(n: int, input_dim: int, units: Sequence[int], act: str, bn: bool, dropout: float) -> nn.ModuleList:
    return nn.ModuleList(MLP(input_dim, units, act, bn, dropout) for _ in range(n))


def _mix(gate_logits: Tensor, experts: Tensor) -> Tensor:
    """``sum_k softmax(gate)_k * expert_k``: gate [B, K], experts [B, K, D] -> [B, D]."""
    return (torch.softmax(gate_logits, dim=-1).unsqueeze(-1) * experts).sum(dim=1)


class MixtureOfExperts(nn.Module):
    """MMoE's layer: ``num_experts`` expert MLPs shared by all tasks and one softmax gate per task over them,
    ``[B, input_dim] -> [tasks x [B, expert_units[-1]]]`` (task ``t``'s input to its tower:
    ``sum_k softmax(g_t(x))_k f_k(x)``)."""

    def __init__(self, input_dim: int, num_experts: int, num_tasks: int, expert_units: Sequence[int],
                 gate_units: Sequence[int], activation_name: str = "relu", batch_norm: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if num_experts < 1 or num_tasks < 1 or not expert_units:
            raise ValueError("MixtureOfExperts needs >= 1 expert, >= 1 task and at least one expert layer")
        self.experts = _experts(num_experts, input_dim, expert_units, activation_name, batch_norm, dropout)
        self.gates = nn.ModuleList(MLP(input_dim, gate_units, activation_name, batch_norm, dropout, num_experts)
                                   for _ in range(num_tasks))
        self.output_dim = expert_units[-1]

    def forward(self, x: Tensor) -> list[Tensor]:
        experts = torch.stack([e(x) for e in self.experts], dim=1)  # [B, K, D]
        return [_mix(g(x), experts) for g in self.gates]


class CustomizedGateControl(nn.Module):
    """PLE's CGC layer: ``num_shared`` shared experts, ``num_specific`` experts per task, and ``num_tasks + 1``
    gates. Inputs and outputs are ``num_tasks + 1`` tensors (one per task, then the shared path): task ``t``'s
    gate (on input ``t``) weighs its own experts (on input ``t``) and the shared experts (on the shared input);
    the shared gate (on the shared input) weighs the shared experts only. Stacked layers feed each output to the
    same path of the next layer; the last layer's shared output is unused (FuxiCTR still builds and computes it,
    so its gate is a parameter of the model and of the net regularizer)."""

    def __init__(self, input_dim: int, num_shared: int, num_specific: int, num_tasks: int,
                 expert_units: Sequence[int], gate_units: Sequence[int], activation_name: str = "relu",
                 batch_norm: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if num_shared < 1 or num_specific < 0 or num_tasks < 1 or not expert_units:
            raise ValueError("CustomizedGateControl needs >= 1 shared expert, >= 0 specific experts per task, "
                             ">= 1 task and at least one expert layer")
        self.num_tasks = num_tasks
        self.shared_experts = _experts(num_shared, input_dim, expert_units, activation_name, batch_norm, dropout)
        self.specific_experts = nn.ModuleList(
            _experts(num_specific, input_dim, expert_units, activation_name, batch_norm, dropout)
            for _ in range(num_tasks))
        self.gates = nn.ModuleList(
            MLP(input_dim, gate_units, activation_name, batch_norm, dropout,
                num_specific + num_shared if t < num_tasks else num_shared)
            for t in range(num_tasks + 1))
        self.output_dim = expert_units[-1]

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:
        if len(xs) != self.num_tasks + 1:
            raise ValueError(f"CustomizedGateControl takes {self.num_tasks + 1} inputs (one per task, then the "
                             f"shared one), got {len(xs)}")
        shared = [e(xs[-1]) for e in self.shared_experts]
        out = []
        for t in range(self.num_tasks):
            own = [e(xs[t]) for e in self.specific_experts[t]]
            out.append(_mix(self.gates[t](xs[t]), torch.stack(own + shared, dim=1)))
        out.append(_mix(self.gates[-1](xs[-1]), torch.stack(shared, dim=1)))
        return out
