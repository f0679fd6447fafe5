"""sam: FuxiCTR 2.3.10 composition following model_zoo/SAM/src/SAM.py (its SAMBlock and the four interaction
layers, written here from that file on torch), and the transplant of our weights into it."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves, put
from torch import nn


class PairLayer(nn.Module):
    """SAM2A (``W`` given) / SAM2E: ``S[i, j] * W[i, j]`` or ``S[i, j] * (e_i ⊙ e_j)`` for every field pair, with
    ``S = E E^T`` ([B, F, F, D]); dropout after."""

    def __init__(self, num_fields, dim, with_w, dropout):
        super().__init__()
        self.W = nn.Parameter(torch.ones(num_fields, num_fields, dim)) if with_w else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, F):
        S = torch.bmm(F, F.transpose(1, 2)).unsqueeze(-1)
        out = S * self.W if self.W is not None else S * torch.einsum("bnd,bmd->bnmd", F, F)
        return self.dropout(out) if self.dropout is not None else out


class FieldLayer(nn.Module):
    """SAM3A (``W`` given) / SAM3E: ``sum_j (E K(E)^T)[i, j] * W[i, j]`` or ``* (e_i ⊙ e_j)`` ([B, F, D]), plus
    ``Q(E)`` with the residual; K and Q are bias-free Linears; dropout after."""

    def __init__(self, num_fields, dim, with_w, use_residual, dropout):
        super().__init__()
        self.W = nn.Parameter(torch.ones(num_fields, num_fields, dim)) if with_w else None
        self.K = nn.Linear(dim, dim, bias=False)
        self.Q = nn.Linear(dim, dim, bias=False) if use_residual else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, F):
        S = torch.bmm(F, self.K(F).transpose(1, 2)).unsqueeze(-1)
        inner = self.W if self.W is not None else torch.einsum("bnd,bmd->bnmd", F, F)
        out = (S * inner).sum(dim=2)
        if self.Q is not None:
            out = out + self.Q(F)
        return self.dropout(out) if self.dropout is not None else out


class SAM(RefModel):  # model_zoo/SAM/src/SAM.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim, f, kind = p["embedding_dim"], fmap.num_fields, p["interaction_type"]
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        self.aggregation = p["aggregation"]
        if kind in ("SAM2A", "SAM2E"):
            assert self.aggregation == "concat"
            self.layers = nn.ModuleList([PairLayer(f, dim, kind == "SAM2A", p["dropout"])])
        else:
            self.layers = nn.ModuleList([FieldLayer(f, dim, kind == "SAM3A", p["use_residual"], p["dropout"])
                                         for _ in range(p["num_interaction_layers"])])
        self.weight = nn.Parameter(torch.ones(f, 1)) if self.aggregation == "weighted_pooling" else None
        if self.aggregation == "concat":
            width = dim * f * f if kind in ("SAM2A", "SAM2E") else f * dim
        else:
            width = dim
        self.fc = nn.Linear(width, 1)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        F = self.embedding_layer(X)
        for layer in self.layers:
            F = layer(F)
        if self.aggregation == "concat":
            out = F.flatten(start_dim=1)
        elif self.aggregation == "weighted_pooling":
            out = (F * self.weight).sum(dim=1)
        elif self.aggregation == "mean_pooling":
            out = F.mean(dim=1)
        else:
            out = F.sum(dim=1)
        return {"y_pred": self.output_activation(self.fc(out))}


def transplant_sam(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    if len(theirs.layers) != len(ours.layers):
        raise ValueError(f"sam: {len(theirs.layers)} interaction layers in FuxiCTR vs {len(ours.layers)} in bars")
    for i, (t, o) in enumerate(zip(theirs.layers, ours.layers, strict=True)):
        for n in ("W", "K", "Q"):
            a, b = getattr(t, n, None), getattr(o, n)
            if (a is None) != (b is None):
                raise ValueError(f"sam layers[{i}].{n}: present in one side only")
            if isinstance(a, nn.Parameter):
                put(a, b, f"layers[{i}].{n}")
            elif a is not None:
                copy_leaves(a, b, f"layers[{i}].{n}")
    if (theirs.weight is None) != (ours.pool_weight is None):
        raise ValueError("sam: pooling weight present in one side only")
    if theirs.weight is not None:
        put(theirs.weight, ours.pool_weight, "pool_weight")
    copy_leaves(theirs.fc, ours.fc, "fc")


_C = {**E, "num_interaction_layers": 3, "use_residual": False, "dropout": 0.0}
REFERENCE = Reference(SAM, transplant_sam, {
    "SAM2A": {**_C, "interaction_type": "SAM2A", "aggregation": "concat"},
    "SAM2E": {**_C, "interaction_type": "SAM2E", "aggregation": "concat"},
    "SAM3A-residual-concat": {**_C, "interaction_type": "SAM3A", "aggregation": "concat", "use_residual": True},
    "SAM3A-weighted": {**_C, "interaction_type": "SAM3A", "aggregation": "weighted_pooling"},
    "SAM3E-residual-mean": {**_C, "interaction_type": "SAM3E", "aggregation": "mean_pooling", "use_residual": True},
    "SAM3E-sum": {**_C, "interaction_type": "SAM3E", "aggregation": "sum_pooling", "num_interaction_layers": 2},
}, "model_zoo/SAM/src/SAM.py")
