"""AW-MoE's gate network (Gong et al., "Attention Weighted Mixture of Experts with Contrastive Learning for
Personalized Ranking in E-commerce", ICDE 2023, arXiv 2306.05011): a *gate unit* and a DIN-like *activation unit*
over the user's behaviour sequence give each sample its expert activation vector; a random mask on the sequence
(a simulated long-tail user) and a contrastive loss between the two views' gate outputs.

The paper's body could not be retrieved here (only its abstract); what follows is our reading of the abstract, each
choice an assumption documented in docs/fidelity.md ("AW-MoE"):

- gate unit: an MLP on each behaviour's embedding ``h_j`` to one logit per expert, ``u_j = GU(h_j)`` [K];
- activation unit: DIN's (:class:`~bars.models.layers.DINAttention`'s MLP on ``[t, h_j, t - h_j, t * h_j]``),
  a score ``s_j`` per behaviour for the target ``t``;
- the gate's logits: ``z = sum_j w_j u_j`` with ``w_j = softmax_j(s_j)`` over the behaviours (``normalize``;
  rows without any behaviour get ``w = 0``, so ``z = 0``) or ``w_j = s_j m_j`` (DIN's unnormalised weights);
  the expert activation vector is ``softmax_k(z)`` (in the model);
- the random mask keeps each behaviour with probability ``1 - rate`` (:func:`random_keep`, torch's default
  generator: reproducible under ``torch.manual_seed``, drawn only in training);
- the contrastive loss (:func:`gate_info_nce`): InfoNCE over the batch on the cosine similarity of the two views'
  activation vectors, temperature ``tau``; the positive of sample ``i`` is its own masked view.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bars.models.layers.core import MLP
from bars.models.layers.target_attention import DINAttention


def activation_scores(unit: DINAttention, target: Tensor, history: Tensor) -> Tensor:
    """The raw scores ``s_j`` [B, L] of DIN's activation unit ``unit`` (before its mask and softmax): the MLP on
    ``[t, h_j, t - h_j, t * h_j]`` then ``unit``'s output activation. The first Linear is split as DINAttention
    splits it (the same function and parameters; tests/test_layers_attention_weighted_moe.py checks that masking
    and pooling these scores gives ``unit(target, history, mask)``)."""
    b, length, d = history.shape
    first = unit.mlp.net[0]
    w_t, w_h, w_d, w_p = first.weight.split(d, dim=1)
    t = target.unsqueeze(1)
    z = F.linear(history, w_h - w_d) + F.linear(t * history, w_p) + F.linear(t, w_t + w_d, first.bias)
    s = unit.mlp.net[1:](z.view(-1, first.out_features))
    if unit.output_activation is not None:
        s = unit.output_activation(s)
    return s.view(b, length)


def attention_weights(scores: Tensor, mask: Tensor, normalize: bool) -> Tensor:
    """Per-behaviour weights [B, L] from raw scores and the mask (true = a behaviour): ``softmax`` over the
    behaviours of the row (``normalize``; zero everywhere for a row with none) or the scores times the mask."""
    m = mask.to(scores.dtype)
    if normalize:
        return (scores + -1.0e9 * (1 - m)).softmax(dim=-1) * m
    return scores * m


def random_keep(mask: Tensor, rate: float) -> Tensor:
    """``mask`` with each behaviour dropped independently with probability ``rate`` (AW-MoE's random mask: a
    simulated long-tail user). The draw is ``torch.rand(mask.shape) >= rate`` from torch's default generator on
    ``mask``'s device, so ``torch.manual_seed`` (the trainer's seed) reproduces it."""
    return mask & (torch.rand(mask.shape, device=mask.device) >= rate)


def gate_info_nce(gate: Tensor, gate_masked: Tensor, temperature: float) -> Tensor:
    """InfoNCE between two views of the gate output [B, K]: with ``S_ij = cos(g_i, g'_j) / tau``,
    ``-(1/B) sum_i log(exp(S_ii) / sum_j exp(S_ij))`` (the other samples of the batch are the negatives).
    At least 0; exactly 0 for a batch of one (no negative); ``log B`` when every vector points the same way."""
    a = F.normalize(gate, dim=-1, eps=1e-12)
    b = F.normalize(gate_masked, dim=-1, eps=1e-12)
    sim = a @ b.transpose(0, 1) / temperature
    return F.cross_entropy(sim, torch.arange(sim.size(0), device=sim.device))


class AttentionWeightedGate(nn.Module):
    """One (target, history) pair's part of AW-MoE's gate: the gate unit ``GU`` (an MLP of ``gate_units`` hidden
    layers on a behaviour's embedding, ``num_experts`` outputs) and the activation unit (a
    :class:`DINAttention`'s MLP). :meth:`per_behaviour` computes what does not depend on the mask (so the
    masked view reuses it); :meth:`combine` gives the gate logits ``sum_j w_j u_j`` [B, K] for a mask."""

    def __init__(self, dim: int, num_experts: int, gate_units: Sequence[int] = (64,),
                 gate_activation: str = "relu", attention_units: Sequence[int] = (64,),
                 attention_activation: str = "dice", attention_output_activation: str | None = None,
                 dropout: float = 0.0, attention_dropout: float = 0.0, normalize: bool = True) -> None:
        super().__init__()
        self.normalize = normalize
        self.gate_unit = MLP(dim, gate_units, gate_activation, batch_norm=False, dropout=dropout,
                             output_dim=num_experts)
        self.activation_unit = DINAttention(dim, attention_units, attention_activation, attention_output_activation,
                                            attention_dropout, use_softmax=normalize)

    def per_behaviour(self, target: Tensor, history: Tensor) -> tuple[Tensor, Tensor]:
        """(scores ``s`` [B, L], gate-unit logits ``u`` [B, L, K]) for target [B, d] and history [B, L, d]."""
        b, length, d = history.shape
        u = self.gate_unit(history.reshape(b * length, d)).view(b, length, -1)
        return activation_scores(self.activation_unit, target, history), u

    def combine(self, scores: Tensor, units: Tensor, mask: Tensor) -> Tensor:
        w = attention_weights(scores, mask, self.normalize)
        return torch.bmm(w.unsqueeze(1), units).squeeze(1)

    def forward(self, target: Tensor, history: Tensor, mask: Tensor) -> Tensor:
        return self.combine(*self.per_behaviour(target, history), mask)
