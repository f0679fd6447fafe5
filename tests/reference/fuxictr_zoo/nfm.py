"""nfm: FuxiCTR 2.3.10 composition following model_zoo/NFM/src/NFM.py, and the transplant of our weights into it."""

from __future__ import annotations

from fuxictr.pytorch.layers import FeatureEmbedding, InnerProductInteraction, LogisticRegression
from fuxictr_reference import MLP, E, Reference, RefModel, copy_embedding, copy_leaves, copy_lr, mlp_block


class NFM(RefModel):  # model_zoo/NFM/src/NFM.py (embedding_dropout: accepted and unused there)
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim = p["embedding_dim"]
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        self.lr_layer = LogisticRegression(fmap, use_bias=False)
        self.bi_pooling_layer = InnerProductInteraction(fmap.num_fields, output="bi_interaction")
        self.dnn = mlp_block(dim, p["hidden_units"], p["activation"], p["batch_norm"], p["dropout"], output_dim=1)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        y = self.lr_layer(X) + self.dnn(self.bi_pooling_layer(self.embedding_layer(X)))
        return {"y_pred": self.output_activation(y)}


def transplant_nfm(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_lr(theirs.lr_layer, ours.lr, "lr")
    copy_leaves(theirs.dnn, ours.mlp, "mlp")


REFERENCE = Reference(NFM, transplant_nfm, {
    "bn": {**E, "hidden_units": (400, 400, 400), **MLP},
    "no-bn": {**E, "hidden_units": (64, 64), **MLP, "batch_norm": False},
}, "model_zoo/NFM/src/NFM.py")
