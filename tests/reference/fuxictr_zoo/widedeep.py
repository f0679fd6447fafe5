"""widedeep: FuxiCTR 2.3.10 composition following model_zoo/WideDeep/WideDeep_torch/src/WideDeep.py, and the transplant of our weights into it."""

from __future__ import annotations

from fuxictr.pytorch.layers import FeatureEmbedding, LogisticRegression
from fuxictr_reference import MLP, E, Reference, RefModel, copy_embedding, copy_leaves, copy_lr, mlp_block


class WideDeep(RefModel):  # model_zoo/WideDeep/WideDeep_torch/src/WideDeep.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])
        self.lr_layer = LogisticRegression(fmap, use_bias=False)
        self.dnn = mlp_block(p["embedding_dim"] * fmap.num_fields, p["hidden_units"], p["activation"], p["batch_norm"],
                        p["dropout"], output_dim=1)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        y = self.lr_layer(X) + self.dnn(self.embedding_layer(X).flatten(start_dim=1))
        return {"y_pred": self.output_activation(y)}


def transplant_widedeep(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_lr(theirs.lr_layer, ours.wide, "wide")
    copy_leaves(theirs.dnn, ours.deep, "deep")


REFERENCE = Reference(WideDeep, transplant_widedeep, {"bn": {**E, "hidden_units": (400, 400, 400), **MLP}},
                      "model_zoo/WideDeep/WideDeep_torch/src/WideDeep.py")
