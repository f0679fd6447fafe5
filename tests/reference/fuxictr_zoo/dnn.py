"""dnn: FuxiCTR 2.3.10 composition following model_zoo/DNN/DNN_torch/src/DNN.py, and the transplant of our weights into it."""

from __future__ import annotations

from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr_reference import MLP, E, Reference, RefModel, copy_embedding, copy_leaves, mlp_block


class DNN(RefModel):  # model_zoo/DNN/DNN_torch/src/DNN.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])
        self.mlp = mlp_block(fmap.sum_emb_out_dim(), p["hidden_units"], p["activation"], p["batch_norm"], p["dropout"],
                        output_dim=1, output_activation=self.output_activation)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        return {"y_pred": self.mlp(self.embedding_layer(X, flatten_emb=True))}

    def logits(self, inputs):
        X = self.get_inputs(dict(inputs))
        return self.mlp.mlp[:-1](self.embedding_layer(X, flatten_emb=True)).reshape(-1)  # without the sigmoid


def transplant_dnn(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_leaves(theirs.mlp, ours.mlp, "mlp")


REFERENCE = Reference(DNN, transplant_dnn, {
    "bn": {**E, "hidden_units": (400, 400, 400), **MLP},
    "prelu-no-bn": {**E, "hidden_units": (64, 32), "activation": "prelu", "batch_norm": False, "dropout": 0.0},
}, "model_zoo/DNN/DNN_torch/src/DNN.py")
