"""dcn: FuxiCTR 2.3.10 composition following model_zoo/DCN/DCN_torch/src/DCN.py, and the transplant of our weights into it."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import CrossNet, FeatureEmbedding
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


class DCN(RefModel):  # model_zoo/DCN/DCN_torch/src/DCN.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])
        d = fmap.sum_emb_out_dim()
        units = list(p["dnn_hidden_units"] or [])
        self.dnn = mlp_block(d, units, p["activation"], p["batch_norm"], p["dropout"]) if units else None
        self.crossnet = CrossNet(d, p["num_cross_layers"])
        self.fc = nn.Linear(d + (units[-1] if units else 0), 1)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X, flatten_emb=True)
        out = self.crossnet(emb)
        if self.dnn is not None:
            out = torch.cat([out, self.dnn(emb)], dim=-1)
        return {"y_pred": self.output_activation(self.fc(out))}


def transplant_dcn(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    for i, layer in enumerate(theirs.crossnet.cross_net):
        put(layer.weight.weight, ours.cross.w[i].weight, f"cross[{i}].w")
        put(layer.bias, ours.cross.b[i], f"cross[{i}].b")
    if theirs.dnn is not None:
        copy_leaves(theirs.dnn, ours.dnn, "dnn")
    copy_leaves(theirs.fc, ours.fc, "fc")


REFERENCE = Reference(DCN, transplant_dcn, {
    "with-dnn": {**E, "dnn_hidden_units": (400, 400, 400), **MLP, "num_cross_layers": 3},
    "crossnet-only": {**E, "dnn_hidden_units": (), **MLP_OFF, "num_cross_layers": 4},
}, "model_zoo/DCN/DCN_torch/src/DCN.py")
