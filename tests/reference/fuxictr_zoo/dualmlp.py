"""dualmlp: FuxiCTR 2.3.10 composition following model_zoo/FinalMLP/src/DualMLP.py, and the transplant of our weights
into it."""

from __future__ import annotations

from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves, mlp_block


class DualMLP(RefModel):  # model_zoo/FinalMLP/src/DualMLP.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])
        d = p["embedding_dim"] * fmap.num_fields
        self.mlp1 = mlp_block(d, p["mlp1_hidden_units"], p["mlp1_activation"], p["mlp1_batch_norm"],
                              p["mlp1_dropout"], output_dim=1)
        self.mlp2 = mlp_block(d, p["mlp2_hidden_units"], p["mlp2_activation"], p["mlp2_batch_norm"],
                              p["mlp2_dropout"], output_dim=1)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        flat = self.embedding_layer(X).flatten(start_dim=1)
        return {"y_pred": self.output_activation(self.mlp1(flat) + self.mlp2(flat))}


def transplant_dualmlp(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_leaves(theirs.mlp1, ours.mlp1, "mlp1")
    copy_leaves(theirs.mlp2, ours.mlp2, "mlp2")


REFERENCE = Reference(DualMLP, transplant_dualmlp, {
    "bn-mixed": {**E, "mlp1_hidden_units": (400, 400), "mlp1_activation": "relu", "mlp1_batch_norm": True,
                 "mlp1_dropout": 0.0, "mlp2_hidden_units": (200,), "mlp2_activation": "tanh",
                 "mlp2_batch_norm": False, "mlp2_dropout": 0.0},
}, "model_zoo/FinalMLP/src/DualMLP.py")
