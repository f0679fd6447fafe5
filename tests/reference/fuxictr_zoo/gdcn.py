"""gdcn: FuxiCTR 2.3.10 composition following model_zoo/GDCN/src/GDCN.py (class GDCN; its GateCorssLayer is
defined in that file, so it is written here from it), and the transplant of our weights into it.

Empty ``dnn_hidden_units``: FuxiCTR's GDCN sets ``self.dnn = None`` and then calls it in ``forward`` (a crash). The
composition builds what that code means ("in case of only crossing net used"): the MLP_Block it would build with no
hidden layer and ``output_dim=1``, i.e. one Linear on the cross network's output. Also used by gdcnp.py."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr_reference import (
    MLP,
    MLP_OFF,
    E,
    Reference,
    RefModel,
    copy_embedding,
    copy_leaves,
    mlp_block,
    put,
)
from torch import nn


class GateCrossLayer(nn.Module):  # model_zoo GateCorssLayer: x = x0 * (W x + b) * sigmoid(W_g x) + x
    def __init__(self, input_dim, cn_layers):
        super().__init__()
        self.cn_layers = cn_layers
        self.w = nn.ModuleList(nn.Linear(input_dim, input_dim, bias=False) for _ in range(cn_layers))
        self.wg = nn.ModuleList(nn.Linear(input_dim, input_dim, bias=False) for _ in range(cn_layers))
        self.b = nn.ParameterList(nn.Parameter(torch.zeros(input_dim)) for _ in range(cn_layers))
        for b in self.b:
            nn.init.uniform_(b.data)
        self.activation = nn.Sigmoid()

    def forward(self, x):
        x0 = x
        for i in range(self.cn_layers):
            x = x0 * (self.w[i](x) + self.b[i]) * self.activation(self.wg[i](x)) + x
        return x


def dnn_of(p, input_dim, output_dim):
    units = list(p["dnn_hidden_units"] or [])
    return mlp_block(input_dim, units, p["activation"] or "relu", bool(p["batch_norm"]), p["dropout"] or 0.0,
                     output_dim=output_dim)


class GDCN(RefModel):  # model_zoo/GDCN/src/GDCN.py, class GDCN
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])
        input_dim = fmap.sum_emb_out_dim()
        self.dnn = dnn_of(p, input_dim, 1)  # no hidden units: the Linear FuxiCTR's guard leaves out
        self.cross_net = GateCrossLayer(input_dim, p["num_cross_layers"])
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X, flatten_emb=True)
        y = self.dnn(self.cross_net(feature_emb))
        return {"y_pred": self.output_activation(y)}


def copy_cross(theirs, ours, where):
    d = ours.input_dim
    if theirs.cn_layers != ours.num_layers:
        raise ValueError(f"{where}: {theirs.cn_layers} gated cross layers in FuxiCTR vs {ours.num_layers} in bars")
    for i in range(theirs.cn_layers):
        put(theirs.w[i].weight, ours.weight[i, :d], f"{where}.weight[{i}] (W)")
        put(theirs.wg[i].weight, ours.weight[i, d:], f"{where}.weight[{i}] (W_g)")
        put(theirs.b[i], ours.bias[i], f"{where}.bias[{i}]")


def transplant_gdcn(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_cross(theirs.cross_net, ours.cross, "cross")
    copy_leaves(theirs.dnn, ours.dnn if ours.dnn is not None else ours.fc, "dnn")


CASES = {
    "mlp-400x3-bn": {**E, "num_cross_layers": 3, "dnn_hidden_units": (400, 400, 400), **MLP},
    "mlp-1024-512-256": {**E, "num_cross_layers": 2, "dnn_hidden_units": (1024, 512, 256), **MLP,
                         "batch_norm": False},
    "cross-only": {**E, "num_cross_layers": 4, "dnn_hidden_units": (), **MLP_OFF},
}
REFERENCE = Reference(GDCN, transplant_gdcn, CASES, "model_zoo/GDCN/src/GDCN.py")
