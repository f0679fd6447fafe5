"""ipnn: FuxiCTR 2.3.10 composition following model_zoo/PNN/src/PNN.py (product_type "inner"), and the transplant of
our weights into it."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding, InnerProductInteraction
from fuxictr_reference import MLP, E, Reference, RefModel, copy_embedding, copy_leaves, mlp_block


class PNN(RefModel):  # model_zoo/PNN/src/PNN.py
    """There the DNN's MLP_Block ends with ``output_activation=self.output_activation`` and forward returns its
    output; here the sigmoid is applied in forward instead (the same function, and RefModel.logits can remove it)."""

    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim, f = p["embedding_dim"], fmap.num_fields
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        self.inner_product_layer = InnerProductInteraction(f, output="inner_product")
        self.dnn = mlp_block(f * (f - 1) // 2 + f * dim, p["hidden_units"], p["activation"], p["batch_norm"],
                             p["dropout"], output_dim=1)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        dense = torch.cat([emb.flatten(start_dim=1), self.inner_product_layer(emb)], dim=1)
        return {"y_pred": self.output_activation(self.dnn(dense))}


def transplant_ipnn(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_leaves(theirs.dnn, ours.mlp, "mlp")


REFERENCE = Reference(PNN, transplant_ipnn, {
    "bn": {**E, "hidden_units": (400, 400, 400), **MLP},
    "no-bn": {**E, "hidden_units": (64, 64), **MLP, "batch_norm": False},
}, "model_zoo/PNN/src/PNN.py")
