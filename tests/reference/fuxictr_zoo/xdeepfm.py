"""xdeepfm: FuxiCTR 2.3.10 composition following model_zoo/xDeepFM/src/xDeepFM.py, and the transplant of our weights into it."""

from __future__ import annotations

from fuxictr.pytorch.layers import CompressedInteractionNet, FeatureEmbedding, LogisticRegression
from fuxictr_reference import (
    MLP,
    MLP_OFF,
    E,
    Reference,
    RefModel,
    copy_embedding,
    copy_leaves,
    copy_lr,
    mlp_block,
)


class xDeepFM(RefModel):  # model_zoo/xDeepFM/src/xDeepFM.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])
        units = list(p["dnn_hidden_units"] or [])
        self.dnn = (mlp_block(fmap.sum_emb_out_dim(), units, p["activation"], p["batch_norm"], p["dropout"], output_dim=1)
                    if units else None)
        self.lr_layer = LogisticRegression(fmap, use_bias=False)
        self.cin = CompressedInteractionNet(fmap.num_fields, list(p["cin_hidden_units"]), output_dim=1)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        y = self.lr_layer(X) + self.cin(emb)
        if self.dnn is not None:
            y = y + self.dnn(emb.flatten(start_dim=1))
        return {"y_pred": self.output_activation(y)}


def transplant_xdeepfm(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_lr(theirs.lr_layer, ours.lr, "lr")
    for i, conv in enumerate(ours.cin.convs):  # FuxiCTR: Conv1d(kernel 1) per layer; ours: the same map as Linear
        copy_leaves(theirs.cin.cin_layer[f"layer_{i + 1}"], conv, f"cin.layer_{i + 1}")
    copy_leaves(theirs.cin.fc, ours.cin.fc, "cin.fc")
    if theirs.dnn is not None:
        copy_leaves(theirs.dnn, ours.dnn, "dnn")


REFERENCE = Reference(xDeepFM, transplant_xdeepfm, {
    "cin-dnn": {**E, "cin_hidden_units": (32, 32), "dnn_hidden_units": (400, 400), **MLP},
    "cin-only": {**E, "cin_hidden_units": (64,), "dnn_hidden_units": (), **MLP_OFF},
}, "model_zoo/xDeepFM/src/xDeepFM.py")
