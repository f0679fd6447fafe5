"""deepim: FuxiCTR 2.3.10 composition following model_zoo/DeepIM/src/DeepIM.py, and the transplant of our weights
into it (FuxiCTR's installed InteractionMachine: explicit power-sum formulas per order; ours: Newton's
identities)."""

from __future__ import annotations

from fuxictr.pytorch.layers import FeatureEmbedding, InteractionMachine
from fuxictr_reference import MLP, E, Reference, RefModel, copy_embedding, copy_leaves, mlp_block


class DeepIM(RefModel):  # model_zoo/DeepIM/src/DeepIM.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim = p["embedding_dim"]
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        self.im_layer = InteractionMachine(dim, p["im_order"], p["im_batch_norm"])
        units = p["hidden_units"]
        self.dnn = (mlp_block(dim * fmap.num_fields, units, p["activation"], p["batch_norm"], p["dropout"],
                              output_dim=1)
                    if units is not None else None)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        y = self.im_layer(emb)
        if self.dnn is not None:
            y = y + self.dnn(emb.flatten(start_dim=1))
        return {"y_pred": self.output_activation(y)}


def transplant_deepim(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_leaves(theirs.im_layer, ours.im, "im")
    if (theirs.dnn is None) != (ours.dnn is None):
        raise ValueError("deepim: MLP present in one side only")
    if theirs.dnn is not None:
        copy_leaves(theirs.dnn, ours.dnn, "dnn")


REFERENCE = Reference(DeepIM, transplant_deepim, {
    f"order{k}{'-bn' if bn else ''}": {**E, "im_order": k, "im_batch_norm": bn, "hidden_units": (400, 400, 400),
                                      **MLP}
    for k, bn in ((1, False), (2, True), (4, False), (5, True))
} | {
    "im-only": {**E, "im_order": 3, "im_batch_norm": False, "hidden_units": None, "activation": "relu",
                "batch_norm": False, "dropout": 0.0},
    "mlp-output-only": {**E, "im_order": 2, "im_batch_norm": False, "hidden_units": (), "activation": "relu",
                        "batch_norm": False, "dropout": 0.0},
}, "model_zoo/DeepIM/src/DeepIM.py")
