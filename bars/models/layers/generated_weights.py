"""APG's instance-generated weights: a Linear layer whose weight a hypernetwork generates per sample."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from bars.models.layers.core import MLP, Dropout, activation

ConditionMode = Literal["self-wise", "group-wise"]


def _xavier_normal(t: Tensor) -> None:
    nn.init.normal_(t, 0.0, math.sqrt(2.0 / (t.shape[0] + t.shape[1])))


class APGLinear(nn.Module):
    """An adaptive parameter generation layer (Yan et al., APG, NeurIPS 2022): ``x [B, in] -> [B, out]`` with a
    weight generated per sample from a condition ``z [B, condition_dim]`` by the hypernetwork
    ``S = hypernet(z)`` (an MLP; no batch norm).

    - full (``rank_k`` None): ``S`` is the whole weight ``[in, out]``: ``y = x S``;
    - low rank (``rank_k = k``): ``S`` is ``[k, k]`` between shared factors: ``y = ((x U) S) V`` with
      ``U [in, k]``, ``V [k, out]``; with ``overparam_p = p`` the factors are themselves products
      ``U = U_l U_r`` (``[in, p] [p, k]``), ``V = V_l V_r`` (``[k, p] [p, out]``): over-parameterisation.
    - bias: with ``generate_bias`` the hypernetwork also emits it (its first ``out`` outputs), else a static
      ``bias [1, out]`` (zeros at start).

    FuxiCTR names and initialisation (``APG_Linear``): ``U``, ``V``, ``U_l``, ``U_r``, ``V_l``, ``V_r`` xavier-normal,
    ``bias`` zeros, ``hypernet.mlp.*`` (Linear: xavier-normal, bias 0)."""

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        condition_dim: int,
        rank_k: int | None = None,
        overparam_p: int | None = None,
        generate_bias: bool = True,
        hypernet_hidden_units: Sequence[int] = (),
        hypernet_activation: str = "relu",
        hypernet_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.input_dim, self.output_dim = input_dim, output_dim
        self.rank_k, self.overparam_p = rank_k, overparam_p
        self.generate_bias = generate_bias
        self.U = self.V = self.U_l = self.U_r = self.V_l = self.V_r = None
        if rank_k is not None:
            if not 1 <= rank_k <= min(input_dim, output_dim):
                raise ValueError(f"rank_k={rank_k} must be in 1..min(input {input_dim}, output {output_dim})")
            if overparam_p is not None:
                if overparam_p < rank_k:
                    raise ValueError(f"overparam_p={overparam_p} must be >= rank_k={rank_k}")
                self.U_l = nn.Parameter(torch.empty(input_dim, overparam_p))
                self.U_r = nn.Parameter(torch.empty(overparam_p, rank_k))
                self.V_l = nn.Parameter(torch.empty(rank_k, overparam_p))
                self.V_r = nn.Parameter(torch.empty(overparam_p, output_dim))
            else:
                self.U = nn.Parameter(torch.empty(input_dim, rank_k))
                self.V = nn.Parameter(torch.empty(rank_k, output_dim))
            generated = rank_k * rank_k
        elif overparam_p is not None:
            raise ValueError("overparam_p needs rank_k (it over-parameterises the low-rank factors)")
        else:
            generated = input_dim * output_dim
        self.hypernet = MLP(condition_dim, hypernet_hidden_units, hypernet_activation, batch_norm=False,
                            dropout=hypernet_dropout, output_dim=generated + (output_dim if generate_bias else 0))
        self.bias = None if generate_bias else nn.Parameter(torch.zeros(1, output_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for p in (self.U, self.V, self.U_l, self.U_r, self.V_l, self.V_r):
                if p is not None:
                    _xavier_normal(p)
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        s = self.hypernet(z)
        bias: Tensor | None = self.bias
        if self.generate_bias:
            bias, s = s[:, : self.output_dim], s[:, self.output_dim :]
        if self.rank_k is None:
            out = torch.bmm(x.unsqueeze(1), s.reshape(-1, self.input_dim, self.output_dim)).squeeze(1)
        else:
            u = self.U if self.U is not None else self.U_l @ self.U_r
            v = self.V if self.V is not None else self.V_l @ self.V_r
            h = torch.bmm((x @ u).unsqueeze(1), s.reshape(-1, self.rank_k, self.rank_k)).squeeze(1)
            out = h @ v
        # in place, as FuxiCTR's ``out += bias``: no backward reads ``out`` (bmm / mm save their inputs only)
        return out.add_(bias) if bias is not None else out


class APGMLP(nn.Module):
    """An MLP of :class:`APGLinear` layers (FuxiCTR ``APG_MLP``): per hidden layer ``APGLinear -> BatchNorm? ->
    activation -> Dropout?``, then an optional plain output Linear (``out_proj``). ``condition_mode``:
    ``"self-wise"`` generates each layer's weight from that layer's own input; ``"group-wise"`` from the
    condition ``z`` given to :meth:`forward` (``condition_dim`` wide). ``rank_k`` / ``overparam_p``: one value per
    hidden layer (``None`` = full-rank generation / no over-parameterisation)."""

    def __init__(
        self,
        input_dim: int,
        hidden_units: Sequence[int],
        activation_name: str = "relu",
        batch_norm: bool = False,
        dropout: float = 0.0,
        output_dim: int | None = None,
        *,
        condition_mode: ConditionMode = "self-wise",
        condition_dim: int | None = None,
        rank_k: Sequence[int | None] = (),
        overparam_p: Sequence[int | None] = (),
        generate_bias: bool = True,
        hypernet_hidden_units: Sequence[int] = (),
        hypernet_activation: str = "relu",
        hypernet_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        n = len(hidden_units)
        if len(rank_k) != n or len(overparam_p) != n:
            raise ValueError(f"rank_k {list(rank_k)} and overparam_p {list(overparam_p)} need one value per "
                             f"hidden layer ({n})")
        if condition_mode not in ("self-wise", "group-wise"):
            raise ValueError(f"condition_mode {condition_mode!r} is not 'self-wise' or 'group-wise'")
        if condition_mode == "group-wise" and not condition_dim:
            raise ValueError("condition_mode 'group-wise' needs condition_dim")
        self.condition_mode = condition_mode
        self.linears = nn.ModuleList()
        self.post = nn.ModuleList()
        dims = [input_dim, *hidden_units]
        for i in range(n):
            cond = dims[i] if condition_mode == "self-wise" else int(condition_dim or 0)
            self.linears.append(APGLinear(dims[i], dims[i + 1], cond, rank_k[i], overparam_p[i], generate_bias,
                                          hypernet_hidden_units, hypernet_activation, hypernet_dropout))
            post: list[nn.Module] = []
            if batch_norm:
                post.append(nn.BatchNorm1d(dims[i + 1]))
            # ReLU in place: it follows APGLinear's output or BN's, neither read by a backward
            post.append(activation(activation_name, inplace=True))
            if dropout > 0:
                post.append(Dropout(dropout))
            self.post.append(nn.Sequential(*post))
        self.out_proj = nn.Linear(dims[-1], output_dim) if output_dim is not None else None
        self.output_dim = output_dim if output_dim is not None else dims[-1]

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        for lin, post in zip(self.linears, self.post, strict=True):
            x = post(lin(x, x if self.condition_mode == "self-wise" else z))
        return self.out_proj(x) if self.out_proj is not None else x
