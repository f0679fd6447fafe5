"""hofm: FuxiCTR 2.3.10 composition following model_zoo/HOFM/src/HOFM.py, and the transplant of our weights into it."""

from __future__ import annotations

from itertools import combinations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding, InnerProductInteraction, LogisticRegression
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_lr
from torch import nn


class HOFM(RefModel):  # model_zoo/HOFM/src/HOFM.py (its one `regularizer` = our two, set by the test)
    """Our ``embedding_dim`` + ``high_order_embedding_dims`` are FuxiCTR's ``embedding_dim`` list (one per degree)."""

    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.order = p["order"]
        self.reuse_embedding = p["reuse_embedding"]
        if self.reuse_embedding:
            self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])
        else:
            dims = [p["embedding_dim"], *p["high_order_embedding_dims"]] if p["high_order_embedding_dims"] \
                else [p["embedding_dim"]] * (self.order - 1)
            self.embedding_layers = nn.ModuleList([FeatureEmbedding(fmap, d) for d in dims])
        self.inner_product_layer = InnerProductInteraction(fmap.num_fields)  # product_sum
        self.lr_layer = LogisticRegression(fmap, use_bias=True)
        # per degree t >= 3: t index tensors, the k-th field of every combination of t fields
        self.field_conjunction = {t: [torch.LongTensor(ix) for ix in zip(*combinations(range(fmap.num_fields), t),
                                                                          strict=True)]
                                  for t in range(3, self.order + 1)}
        self.finish(lr)

    def high_order_interaction(self, emb, t):
        if t == 2:
            return self.inner_product_layer(emb)
        prod = torch.index_select(emb, 1, self.field_conjunction[t][0])
        for ix in self.field_conjunction[t][1:]:
            prod = prod * torch.index_select(emb, 1, ix)
        return prod.sum((1, 2)).view(-1, 1)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        y = self.lr_layer(X)
        shared = self.embedding_layer(X) if self.reuse_embedding else None
        for t in range(2, self.order + 1):
            y = y + self.high_order_interaction(shared if self.reuse_embedding else self.embedding_layers[t - 2](X), t)
        return {"y_pred": self.output_activation(y)}


def transplant_hofm(ours, theirs):
    copy_lr(theirs.lr_layer, ours.lr, "lr")
    if (ours.embedding is None) == theirs.reuse_embedding:
        raise ValueError("hofm: shared / per-degree embeddings differ")
    if theirs.reuse_embedding:
        copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    else:
        for i, (t, o) in enumerate(zip(theirs.embedding_layers, ours.embeddings, strict=True)):
            copy_embedding(t, o, f"embeddings.{i}")


REFERENCE = Reference(HOFM, transplant_hofm, {
    "order3": {**E, "order": 3, "reuse_embedding": False, "high_order_embedding_dims": ()},
    "order4-dims": {**E, "order": 4, "reuse_embedding": False, "high_order_embedding_dims": (8, 6)},
    "order4-reuse": {**E, "order": 4, "reuse_embedding": True, "high_order_embedding_dims": ()},
    "order2": {**E, "order": 2, "reuse_embedding": False, "high_order_embedding_dims": ()},
}, "model_zoo/HOFM/src/HOFM.py")
