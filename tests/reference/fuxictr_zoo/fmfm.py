"""fmfm: FuxiCTR 2.3.10 composition following model_zoo/FmFM/src/FmFM.py, and the transplant of our weights into it."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding, LogisticRegression
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_lr, put
from torch import nn


class FmFM(RefModel):  # model_zoo/FmFM/src/FmFM.py (its one `regularizer` = our two, set by the test)
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim, f = p["embedding_dim"], fmap.num_fields
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        self.field_interaction_type = p["field_interaction_type"]
        pairs = f * (f - 1) // 2
        shape = (pairs, dim) if self.field_interaction_type == "vectorized" else (pairs, dim, dim)
        self.interaction_weight = nn.Parameter(torch.empty(shape))
        nn.init.xavier_normal_(self.interaction_weight)
        self.lr_layer = LogisticRegression(fmap)
        self.triu_index = torch.triu_indices(f, f, offset=1)  # a plain tensor there too (not a buffer)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        left = torch.index_select(emb, 1, self.triu_index[0])
        right = torch.index_select(emb, 1, self.triu_index[1])
        if self.field_interaction_type == "vectorized":
            left = left * self.interaction_weight
        else:
            left = torch.matmul(left.unsqueeze(2), self.interaction_weight).squeeze(2)
        y = (left * right).sum(dim=-1).sum(dim=-1, keepdim=True) + self.lr_layer(X)
        return {"y_pred": self.output_activation(y)}


def transplant_fmfm(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    put(theirs.interaction_weight, ours.interaction_weight, "interaction_weight")
    copy_lr(theirs.lr_layer, ours.lr, "lr")


REFERENCE = Reference(FmFM, transplant_fmfm, {t: {**E, "field_interaction_type": t}
                                              for t in ("vectorized", "matrixed")}, "model_zoo/FmFM/src/FmFM.py")
