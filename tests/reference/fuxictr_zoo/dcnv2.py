"""dcnv2: FuxiCTR 2.3.10 composition following model_zoo/DCNv2/src/DCNv2.py, and the transplant of our weights into it."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import CrossNetV2, FeatureEmbedding
from fuxictr_reference import MLP, MLP_OFF, E, Reference, RefModel, copy_embedding, copy_leaves, mlp_block
from torch import nn


class DCNv2(RefModel):  # model_zoo/DCNv2/src/DCNv2.py (full-rank CrossNetV2)
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])
        d = fmap.sum_emb_out_dim()
        self.crossnet = CrossNetV2(d, p["num_cross_layers"])
        self.model_structure = p["model_structure"]
        units = list(p["dnn_hidden_units"] or [])
        if self.model_structure == "stacked":
            self.stacked_dnn = mlp_block(d, units, p["activation"], p["batch_norm"], p["dropout"])
            final = units[-1]
        elif self.model_structure == "parallel":
            self.parallel_dnn = mlp_block(d, units, p["activation"], p["batch_norm"], p["dropout"])
            final = d + units[-1]
        else:
            final = d
        self.fc = nn.Linear(final, 1)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X, flatten_emb=True)
        cross = self.crossnet(emb)
        if self.model_structure == "stacked":
            out = self.stacked_dnn(cross)
        elif self.model_structure == "parallel":
            out = torch.cat([cross, self.parallel_dnn(emb)], dim=-1)
        else:
            out = cross
        return {"y_pred": self.output_activation(self.fc(out))}


def transplant_dcnv2(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_leaves(theirs.crossnet, ours.cross, "cross")
    if ours.dnn is not None:
        dnn = theirs.stacked_dnn if theirs.model_structure == "stacked" else theirs.parallel_dnn
        copy_leaves(dnn, ours.dnn, "dnn")
    copy_leaves(theirs.fc, ours.fc, "fc")


REFERENCE = Reference(DCNv2, transplant_dcnv2, {
    s: {**E, "model_structure": s, "num_cross_layers": 3,
        **({"dnn_hidden_units": None, **MLP_OFF} if s == "crossnet_only"
           else {"dnn_hidden_units": (400, 400, 400), **MLP})}
    for s in ("parallel", "stacked", "crossnet_only")
}, "model_zoo/DCNv2/src/DCNv2.py")
