"""gdcnp: FuxiCTR 2.3.10 composition following model_zoo/GDCN/src/GDCN.py (class GDCNP, the gated cross layer of
gdcn.py), and the transplant of our weights into it.

Empty ``dnn_hidden_units``: FuxiCTR's GDCNP sizes its output Linear with ``dnn_hidden_units[-1]`` (an IndexError)
and would call ``self.dnn = None``. The composition builds what that code means: the output Linear on the cross
network's output alone."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr_reference import Reference, RefModel, copy_embedding, copy_leaves
from torch import nn

from fuxictr_zoo.gdcn import CASES, GateCrossLayer, copy_cross, dnn_of


class GDCNP(RefModel):  # model_zoo/GDCN/src/GDCN.py, class GDCNP
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])
        input_dim = fmap.sum_emb_out_dim()
        units = list(p["dnn_hidden_units"] or [])
        self.dnn = dnn_of(p, input_dim, None) if units else None
        self.cross_net = GateCrossLayer(input_dim, p["num_cross_layers"])
        self.fc = nn.Linear((units[-1] if units else 0) + input_dim, 1)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X, flatten_emb=True)
        cross_cn = self.cross_net(feature_emb)
        out = cross_cn if self.dnn is None else torch.cat([cross_cn, self.dnn(feature_emb)], dim=1)
        return {"y_pred": self.output_activation(self.fc(out))}


def transplant_gdcnp(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_cross(theirs.cross_net, ours.cross, "cross")
    if (theirs.dnn is None) != (ours.dnn is None):
        raise ValueError("gdcnp: MLP in one side only")
    if theirs.dnn is not None:
        copy_leaves(theirs.dnn, ours.dnn, "dnn")
    copy_leaves(theirs.fc, ours.fc, "fc")


REFERENCE = Reference(GDCNP, transplant_gdcnp, CASES, "model_zoo/GDCN/src/GDCN.py")
