"""fm: FuxiCTR 2.3.10 composition following model_zoo/FM/src/FM.py, and the transplant of our weights into it."""

from __future__ import annotations

from fuxictr.pytorch.layers import FactorizationMachine, FeatureEmbedding
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_lr


class FM(RefModel):  # model_zoo/FM/src/FM.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])
        self.fm = FactorizationMachine(fmap)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        return {"y_pred": self.output_activation(self.fm(X, self.embedding_layer(X)))}


def transplant_fm(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_lr(theirs.fm.lr_layer, ours.lr, "fm.lr")


REFERENCE = Reference(FM, transplant_fm, {"fm": E}, "model_zoo/FM/src/FM.py")
