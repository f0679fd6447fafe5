"""deepfm: FuxiCTR 2.3.10 composition following model_zoo/DeepFM/DeepFM_torch/src/DeepFM.py, and the transplant of our weights into it."""

from __future__ import annotations

from fuxictr.pytorch.layers import FactorizationMachine, FeatureEmbedding
from fuxictr_reference import MLP, E, Reference, RefModel, copy_embedding, copy_leaves, copy_lr, mlp_block


class DeepFM(RefModel):  # model_zoo/DeepFM/DeepFM_torch/src/DeepFM.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])
        self.fm = FactorizationMachine(fmap)
        self.mlp = mlp_block(fmap.sum_emb_out_dim(), p["hidden_units"], p["activation"], p["batch_norm"], p["dropout"],
                        output_dim=1)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        y = self.fm(X, emb) + self.mlp(emb.flatten(start_dim=1))
        return {"y_pred": self.output_activation(y)}


def transplant_deepfm(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_lr(theirs.fm.lr_layer, ours.lr, "lr")
    copy_leaves(theirs.mlp, ours.mlp, "mlp")


REFERENCE = Reference(DeepFM, transplant_deepfm, {"bn": {**E, "hidden_units": (400, 400, 400), **MLP}},
                    "model_zoo/DeepFM/DeepFM_torch/src/DeepFM.py")
