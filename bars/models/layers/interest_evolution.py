"""DIEN's interest evolution (Zhou et al., "Deep Interest Evolution Network for Click-Through Rate Prediction",
AAAI 2019), as FuxiCTR 2.3.10's ``model_zoo/DIEN/src/DIEN.py`` computes it: the attentional GRU cells (AGRU,
AUGRU), the recurrence over a masked behaviour sequence, the attention scores between the extracted interests and
the target, and the helpers that put a history's behaviours first (FuxiCTR packs the first ``len`` positions of a
post-padded sequence; a pre-padded one is rolled so that its behaviours come first, in their order).

Shapes: a batch of histories ``x`` [B, L, d] with a step mask [B, L] (true = a behaviour; behaviours first), the
scores ``a`` [B, L].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bars.models.layers.target_attention import DINAttention

GRU_TYPES = ("GRU", "AIGRU", "AGRU", "AUGRU")
ATTENTION_TYPES = ("bilinear_attention", "dot_attention", "din_attention")


def behaviours_first(x: Tensor, lengths: Tensor, padding: str) -> Tensor:
    """``x`` [B, L, ...] with each row's behaviours moved to the front, in their order: a ``post``-padded row is
    returned as is (FuxiCTR's packing reads its first ``lengths`` positions), a ``pre``-padded one is rolled left
    by ``L - length`` (its behaviours stand at the end). A gather of fixed shape (exports to ONNX/TorchScript)."""
    if padding == "post":
        return x
    if padding != "pre":
        raise ValueError(f"padding {padding!r} is not 'post' or 'pre'")
    b, length = x.shape[0], x.shape[1]
    idx = (torch.arange(length, device=x.device).unsqueeze(0) + (length - lengths).unsqueeze(1)) % length  # [B, L]
    if x.dim() == 2:
        return torch.gather(x, 1, idx)
    return torch.gather(x, 1, idx.view(b, length, *([1] * (x.dim() - 2))).expand_as(x))


def last_valid(outputs: Tensor, lengths: Tensor) -> Tensor:
    """The output at each row's last behaviour, ``outputs[b, lengths[b] - 1]`` [B, d]; zero for an empty row
    (FuxiCTR: rows without behaviours are left out, then filled with zeros)."""
    idx = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, outputs.size(-1))
    last = torch.gather(outputs, 1, idx).squeeze(1)
    return last * (lengths > 0).to(last.dtype).unsqueeze(-1)


class AttentionalGRUCell(nn.Module):
    """One step of FuxiCTR's ``AGRUCell`` / ``AUGRUCell``: ``[u, r, n]`` gates from ``x2h(x) + h2h(h)`` (two
    Linear maps to 3 * hidden, in that chunk order), ``r = sigmoid(x_r + h_r)``, ``n = tanh(x_n + r * h_n)``;

    - AUGRU (attentional update gate, paper eq. 8-9): ``u' = a * sigmoid(x_u + h_u)``, ``h' = h + u' * (n - h)``;
    - AGRU (attention as the update gate, eq. 7): ``h' = h + a * (n - h)``. The update-gate rows of ``x2h`` /
      ``h2h`` exist (FuxiCTR builds the same Linear maps, and regularizes them) but get no data gradient.
    """

    def __init__(self, input_size: int, hidden_size: int, gru_type: str = "AUGRU") -> None:
        super().__init__()
        if gru_type not in ("AGRU", "AUGRU"):
            raise ValueError(f"gru_type {gru_type!r} is not 'AGRU' or 'AUGRU'")
        self.gru_type = gru_type
        self.hidden_size = hidden_size
        self.x2h = nn.Linear(input_size, 3 * hidden_size)
        self.h2h = nn.Linear(hidden_size, 3 * hidden_size)

    def step(self, gx: Tensor, h: Tensor, a: Tensor) -> Tensor:
        """One step from the input's gates ``gx = x2h(x)`` [B, 3H], state ``h`` [B, H], score ``a`` [B]."""
        x_u, x_r, x_n = gx.chunk(3, dim=-1)
        h_u, h_r, h_n = self.h2h(h).chunk(3, dim=-1)
        r = torch.sigmoid(x_r + h_r)
        n = torch.tanh(x_n + r * h_n)
        if self.gru_type == "AUGRU":
            u = torch.sigmoid(x_u + h_u) * a.unsqueeze(-1)
        else:
            u = a.unsqueeze(-1)
        return h + u * (n - h)

    def forward(self, x: Tensor, h: Tensor, a: Tensor) -> Tensor:
        return self.step(self.x2h(x), h, a)


class AttentionalGRU(nn.Module):
    """FuxiCTR's ``DynamicGRU`` on padded input: the cell runs over the L steps from a zero state, and a row's
    state moves only at its behaviour steps (``mask``), so the result is its state after its last behaviour
    (FuxiCTR runs the packed sequence: the same steps on the same rows). Returns that final state [B, H]."""

    def __init__(self, input_size: int, hidden_size: int, gru_type: str = "AUGRU") -> None:
        super().__init__()
        self.cell = AttentionalGRUCell(input_size, hidden_size, gru_type)

    def forward(self, x: Tensor, scores: Tensor, mask: Tensor) -> Tensor:
        h = x.new_zeros(x.shape[0], self.cell.hidden_size)
        # the input side of every step in one matmul [B, L, 3H], then split into steps with unbind: indexing
        # gx[:, t] instead costs a zero-filled [B, L, 3H] gradient per step in backward (most of the loop's time)
        steps = zip(self.cell.x2h(x).unbind(1), scores.unbind(1), mask.unsqueeze(-1).unbind(1), strict=True)
        for gx, a, m in steps:
            h = torch.where(m, self.cell.step(gx, h, a), h)
        return h


class BilinearKernel(nn.Module):
    """FuxiCTR's ``W_kernel`` of the bilinear attention: a [d, d] matrix initialised to the identity."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(dim))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.eye(self.weight.size(0), dtype=self.weight.dtype, device=self.weight.device))


class InterestAttention(nn.Module):
    """FuxiCTR DIEN's ``AttentionLayer``: the score of each extracted interest ``h_j`` [B, L, d] for the target
    ``t`` [B, d], then masked: ``dot_attention`` ``h_j . t``; ``bilinear_attention`` ``h_j W t`` (W starts as
    the identity); ``din_attention`` DIN's activation unit ``MLP([t, h_j, t - h_j, t * h_j])`` (hidden
    ``units`` with ``hidden_activation``, ``dropout``, no batch norm, one output unit). The scores are multiplied
    by the mask; with ``use_softmax`` they become ``softmax(s + (-1e9) * (1 - mask))`` over j (a row with no
    behaviour: uniform, as FuxiCTR; DIEN never reads it). Returns the scores [B, L]."""

    def __init__(self, dim: int, attention_type: str = "bilinear_attention", units: Sequence[int] = (80, 40),
                 hidden_activation: str = "dice", dropout: float = 0.0, use_softmax: bool = True) -> None:
        super().__init__()
        if attention_type not in ATTENTION_TYPES:
            raise ValueError(f"attention_type {attention_type!r} is not one of {list(ATTENTION_TYPES)}")
        self.attention_type = attention_type
        self.use_softmax = use_softmax
        self.kernel = BilinearKernel(dim) if attention_type == "bilinear_attention" else None
        # DIN's unit (its MLP and its first-layer split); only its scores are used here
        self.unit = (DINAttention(dim, units, hidden_activation, None, dropout, use_softmax)
                     if attention_type == "din_attention" else None)

    def forward(self, history: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        b, length, d = history.shape
        if self.unit is not None:
            first = self.unit.mlp.net[0]
            w_t, w_h, w_d, w_p = first.weight.split(d, dim=1)
            t = target.unsqueeze(1)
            # [t, h, t - h, t * h] W^T = t (W_t + W_d) + h (W_h - W_d) + (t * h) W_p (see DINAttention)
            z = F.linear(history, w_h - w_d) + F.linear(t * history, w_p) + F.linear(t, w_t + w_d, first.bias)
            s = self.unit.mlp.net[1:](z.view(-1, first.out_features)).view(b, length)
        elif self.kernel is not None:
            s = torch.bmm(history @ self.kernel.weight, target.unsqueeze(-1)).view(b, length)
        else:
            s = torch.bmm(history, target.unsqueeze(-1)).view(b, length)
        m = mask.to(s.dtype)
        s = s * m
        if self.use_softmax:
            s = (s + -1.0e9 * (1 - m)).softmax(dim=-1)
        return s
