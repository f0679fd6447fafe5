"""awmoe: FuxiCTR has no AW-MoE (not in its model_zoo; the paper, Gong et al. ICDE 2023, has no public code), so
the model is checked against the equations bars/models/awmoe.py writes from the paper's abstract (the body was not
retrievable; docs/fidelity.md "AW-MoE"), in float64 on real Frappe rows with seeded synthetic histories
(``conftest.add_histories``: ``item_history`` / ``cost_history`` sharing the item / cost tables):

    g      = softmax_k( sum_j softmax_j(AU(t, h_j)) GU(h_j) )      the gate (activation unit x gate unit)
    s_k    = expert_k(x),  x = DIN's input (history pooled by its own activation unit, unnormalised)
    logit  = sum_k g_k s_k
    loss   = BCE(sigmoid(logit), y) + w * InfoNCE(g, g'),  g' = the gate on the randomly masked history."""

from __future__ import annotations

import dataclasses

import torch
from conftest import add_histories
from fuxictr_reference import PaperOnly
from torch.nn import functional as F

from bars.models import build
from bars.models.layers import init_bars_
from bars.objective import loss_function


def _mlp(mlp, x: torch.Tensor) -> torch.Tensor:
    """Linear -> ReLU per hidden layer, then the output Linear, from an MLP's weights (no dropout, no BN)."""
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    for lin in linears[:-1]:
        x = torch.relu(x @ lin.weight.T + lin.bias)
    return x @ linears[-1].weight.T + linears[-1].bias


def _din_input(t, h):
    return torch.cat([t.unsqueeze(1).expand_as(h), h, t.unsqueeze(1) - h, t.unsqueeze(1) * h], dim=-1)


def check(spec, batch) -> None:
    n = len(next(iter(batch.values())))
    y = (torch.rand(n, generator=torch.Generator().manual_seed(3)) < 0.4).float()
    spec, batch, _ = add_histories((spec, batch, y))
    spec = dataclasses.replace(spec, dataset="frappe_seq_sample")
    torch.manual_seed(0)
    params = {"embedding_dim": 10, "num_experts": 3, "expert_hidden_units": (32, 16), "gate_hidden_units": (16,),
              "attention_hidden_units": (16,), "attention_activation": "relu", "mask_rate": 0.5,
              "temperature": 0.2, "contrastive_weight": 0.3}
    model = init_bars_(build("awmoe", spec, params))
    with torch.no_grad():  # weights with some spread, so the gate is far from uniform
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.double()
    emb = model.embedding
    t = torch.cat([emb.lookup("item", batch["item"]), emb.lookup("cost", batch["cost"])], -1)
    h = torch.cat([emb.lookup("item_history", batch["item_history"]),
                   emb.lookup("cost_history", batch["cost_history"])], -1)
    m = batch["item_history"] > 0
    gate = model.gates[0]
    au = _mlp(gate.activation_unit.mlp, _din_input(t, h)).squeeze(-1)  # [B, L]
    gu = _mlp(gate.gate_unit, h)  # [B, L, K]

    def gate_of(mask):
        w = torch.softmax(au.masked_fill(~mask, float("-inf")), dim=-1).nan_to_num(0.0)  # empty rows: 0
        return torch.softmax((w.unsqueeze(-1) * gu).sum(1), dim=-1)

    g = gate_of(m)
    a = _mlp(model.attention[0].mlp, _din_input(t, h)).squeeze(-1) * m
    v = (a.unsqueeze(-1) * h).sum(1)
    fields = [emb.lookup(f, batch[f]) for f in emb.field_names]
    x = torch.cat(fields + [v[:, :10], v[:, 10:]], dim=-1)  # spec order: the Frappe fields, then the histories
    s = torch.cat([_mlp(e, x) for e in model.experts], dim=-1)
    want = (g * s).sum(-1)
    with torch.no_grad():
        got = model.eval()(batch)
        assert torch.allclose(got, want, atol=1e-10), float((got - want).abs().max())
        assert torch.allclose(model.gate(batch), g, atol=1e-12), "gate"
        torch.manual_seed(11)
        out = model.train()(batch)
        torch.manual_seed(11)
        keep = m & (torch.rand(m.shape) >= 0.5)  # the model's one draw (torch's default generator)
    g_masked = gate_of(keep)
    assert torch.allclose(out["logit"], want, atol=1e-10), "training logit (full history)"
    assert torch.allclose(out["gate_masked"], g_masked, atol=1e-12), "masked view"
    cos = F.normalize(g, dim=-1) @ F.normalize(g_masked, dim=-1).T / 0.2
    nce = -(cos.diag() - torch.logsumexp(cos, dim=1)).mean()
    bce = F.binary_cross_entropy(torch.sigmoid(want), y.double())
    loss = model.training_loss(out, y.double(), loss_function("bce"))
    assert torch.allclose(loss, bce + 0.3 * nce, rtol=1e-10), (float(loss), float(bce + 0.3 * nce))
    assert nce > 0


PAPER_ONLY = PaperOnly("FuxiCTR 2.3.10 has no AW-MoE (not in its model_zoo; the paper has no public code); checked "
                       "against the equations written from the paper's abstract", check)
