"""edcn: FuxiCTR 2.3.10 composition following model_zoo/EDCN/src/EDCN.py (its BridgeModule and RegulationModule
written here from that file), with the two switches of FuxiCTR 1.2.2's fuxictr/pytorch/models/EDCN.py (the version
that produced the BARS numbers) that 2.3.10 dropped: ``cross_residual`` (1.2.2 adds ``c_{l-1}`` to each cross
layer's output, the 2.3.10 file does not) and ``use_regulation_module: false`` (1.2.2's RegulationModule without
the field gates), both on 2.3.10's installed pieces; and the transplant of our weights into it."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import CrossInteraction, FeatureEmbedding
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves, mlp_block, put
from torch import nn


def _attention(h):
    return nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, h, bias=False), nn.Softmax(dim=-1))


class BridgeModule(nn.Module):
    """EDCN's bridge between the towers' layer outputs, as the model_zoo file: hadamard product, pointwise
    addition, ReLU(Linear([c; d])) or attention pooling; the latter builds ``attention1`` and ``attention2`` but
    scores both towers with ``attention1`` (``attention2`` is never called)."""

    def __init__(self, hidden_dim, bridge_type):
        super().__init__()
        self.bridge_type = bridge_type
        if bridge_type == "concatenation":
            self.concat_pooling = nn.Sequential(nn.Linear(2 * hidden_dim, hidden_dim), nn.ReLU())
        elif bridge_type == "attention_pooling":
            self.attention1 = _attention(hidden_dim)
            self.attention2 = _attention(hidden_dim)

    def forward(self, X1, X2):
        if self.bridge_type == "hadamard_product":
            return X1 * X2
        if self.bridge_type == "pointwise_addition":
            return X1 + X2
        if self.bridge_type == "concatenation":
            return self.concat_pooling(torch.cat([X1, X2], dim=-1))
        return self.attention1(X1) * X1 + self.attention1(X2) * X2


class RegulationModule(nn.Module):
    """Field gates ``softmax(g / tau)`` repeated over the embedding dimensions, one per tower, then optional
    BatchNorms; without the gates (1.2.2's ``use_regulation=False``) both outputs are the (normalised) input."""

    def __init__(self, num_fields, embedding_dim, tau, use_bn, use_regulation):
        super().__init__()
        self.tau, self.embedding_dim, self.use_regulation, self.use_bn = tau, embedding_dim, use_regulation, use_bn
        if use_regulation:
            self.g1 = nn.Parameter(torch.ones(num_fields))
            self.g2 = nn.Parameter(torch.ones(num_fields))
        if use_bn:
            self.bn1 = nn.BatchNorm1d(num_fields * embedding_dim)
            self.bn2 = nn.BatchNorm1d(num_fields * embedding_dim)

    def forward(self, X):
        if self.use_regulation:
            g1 = (self.g1 / self.tau).softmax(dim=-1).unsqueeze(-1).repeat(1, self.embedding_dim).view(1, -1)
            g2 = (self.g2 / self.tau).softmax(dim=-1).unsqueeze(-1).repeat(1, self.embedding_dim).view(1, -1)
            out1, out2 = g1 * X, g2 * X
        else:
            out1, out2 = X, X
        if self.use_bn:
            out1, out2 = self.bn1(out1), self.bn2(out2)
        return out1, out2


class EDCN(RefModel):  # model_zoo/EDCN/src/EDCN.py (cross_residual, use_regulation_module=false: v1.2.2)
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim, n, f = p["embedding_dim"], p["num_cross_layers"], fmap.num_fields
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        h = f * dim
        self.cross_residual = p["cross_residual"]
        self.dense_layers = nn.ModuleList([mlp_block(h, [h], p["activation"], False, p["dropout"]) for _ in range(n)])
        self.cross_layers = nn.ModuleList([CrossInteraction(h) for _ in range(n)])
        self.bridge_modules = nn.ModuleList([BridgeModule(h, p["bridge_type"]) for _ in range(n)])
        self.regulation_modules = nn.ModuleList([
            RegulationModule(f, dim, p["temperature"], p["batch_norm"], p["use_regulation_module"]) for _ in range(n)
        ])
        self.fc = nn.Linear(3 * h, 1)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        cross_i, deep_i = self.regulation_modules[0](self.embedding_layer(X).flatten(start_dim=1))
        cross_0 = cross_i
        for i in range(len(self.cross_layers)):
            cross = self.cross_layers[i](cross_0, cross_i)
            cross_i = cross_i + cross if self.cross_residual else cross
            deep_i = self.dense_layers[i](deep_i)
            bridge_i = self.bridge_modules[i](cross_i, deep_i)
            if i + 1 < len(self.cross_layers):
                cross_i, deep_i = self.regulation_modules[i + 1](bridge_i)
        y = self.fc(torch.cat([cross_i, deep_i, bridge_i], dim=-1))
        return {"y_pred": self.output_activation(y)}


def transplant_edcn(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    n = len(theirs.cross_layers)
    if len(ours.cross_w) != n:
        raise ValueError(f"edcn: {n} layers in FuxiCTR vs {len(ours.cross_w)} in bars")
    for i in range(n):
        copy_leaves(theirs.cross_layers[i].weight, ours.cross_w[i], f"cross_w[{i}]")
        put(theirs.cross_layers[i].bias, ours.cross_b[i], f"cross_b[{i}]")
        copy_leaves(theirs.dense_layers[i], ours.dense[i], f"dense[{i}]")
        t, o = theirs.bridge_modules[i], ours.bridges[i]
        for part in ("concat_pooling", "attention1", "attention2"):
            a, b = getattr(t, part, None), getattr(o, part, None)
            if (a is None) != (b is None):
                raise ValueError(f"edcn bridges[{i}].{part}: present in one side only")
            if a is not None:
                copy_leaves(a, b, f"bridges[{i}].{part}")
        t, o = theirs.regulation_modules[i], ours.regulation[i]
        for g in ("g1", "g2"):
            if t.use_regulation != (getattr(o, g) is not None):
                raise ValueError(f"edcn regulation[{i}].{g}: present in one side only")
            if t.use_regulation:
                put(getattr(t, g), getattr(o, g), f"regulation[{i}].{g}")
        if t.use_bn != (o.bn1 is not None):
            raise ValueError(f"edcn regulation[{i}]: batch norm in one side only")
        if t.use_bn:
            copy_leaves(t, o, f"regulation[{i}]")  # bn1, bn2
    copy_leaves(theirs.fc, ours.fc, "fc")


# FuxiCTR 2.3.10's EDCN = use_regulation_module true, cross_residual false; ours default to 1.2.2's residual
_C = {**E, "num_cross_layers": 3, "activation": "relu", "temperature": 1.0, "dropout": 0.0,
      "use_regulation_module": True, "cross_residual": False, "bridge_attention_shared": True}
REFERENCE = Reference(EDCN, transplant_edcn, {
    "2.3.10-hadamard-bn": {**_C, "bridge_type": "hadamard_product", "batch_norm": True},
    "2.3.10-addition": {**_C, "bridge_type": "pointwise_addition", "batch_norm": False, "temperature": 5.0},
    "2.3.10-concatenation-bn": {**_C, "bridge_type": "concatenation", "batch_norm": True, "num_cross_layers": 2},
    "2.3.10-attention-pooling": {**_C, "bridge_type": "attention_pooling", "batch_norm": False},
    "1.2.2-residual-hadamard-bn": {**_C, "bridge_type": "hadamard_product", "batch_norm": True,
                                   "cross_residual": True, "temperature": 5.0},
    "1.2.2-no-regulation-residual": {**_C, "bridge_type": "concatenation", "batch_norm": True,
                                     "cross_residual": True, "use_regulation_module": False},
    "1.2.2-no-regulation-no-bn": {**_C, "bridge_type": "pointwise_addition", "batch_norm": False,
                                  "cross_residual": True, "use_regulation_module": False, "num_cross_layers": 1},
}, "model_zoo/EDCN/src/EDCN.py")
