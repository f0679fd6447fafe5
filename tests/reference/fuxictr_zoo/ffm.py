"""ffm: FuxiCTR 2.3.10 composition following model_zoo/FFM/src/FFM.py, and the transplant of our weights into it."""

from __future__ import annotations

from fuxictr.pytorch.layers import FeatureEmbedding, LogisticRegression
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_lr
from torch import nn


class FFM(RefModel):  # model_zoo/FFM/src/FFM.py: F - 1 FeatureEmbeddings, table s = each field's vector for slot s
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.num_fields = fmap.num_fields
        self.lr_layer = LogisticRegression(fmap)
        self.embedding_layers = nn.ModuleList(FeatureEmbedding(fmap, p["embedding_dim"])
                                              for _ in range(self.num_fields - 1))
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        tables = [layer(X) for layer in self.embedding_layers]  # F - 1 x [B, F, D]
        y = self.lr_layer(X)
        for i in range(self.num_fields - 1):
            for j in range(i + 1, self.num_fields):
                # field i's vector for field j lives in table j - 1; field j's vector for field i in table i
                y = y + (tables[j - 1][:, i, :] * tables[i][:, j, :]).sum(dim=1, keepdim=True)
        return {"y_pred": self.output_activation(y)}


def transplant_ffm(ours, theirs):
    if len(theirs.embedding_layers) != len(ours.embedding.tables):
        raise ValueError("ffm: number of field-aware tables differs")
    for s, (t, o) in enumerate(zip(theirs.embedding_layers, ours.embedding.tables, strict=True)):
        copy_embedding(t, o, f"embedding.tables[{s}]")
    copy_lr(theirs.lr_layer, ours.lr, "lr")


REFERENCE = Reference(FFM, transplant_ffm, {"ffm": E, "ffm-dim4": {"embedding_dim": 4}}, "model_zoo/FFM/src/FFM.py")

