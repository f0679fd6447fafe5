"""ffmv2: FuxiCTR 2.3.10 composition following model_zoo/FFM/src/FFMv2.py, and the transplant of our weights into
it."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding, LogisticRegression
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_lr


class FFMv2(RefModel):  # model_zoo/FFM/src/FFMv2.py: one table of width (F - 1) * dim, selected by two masks
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        f = self.num_fields = fmap.num_fields
        self.embedding_dim = p["embedding_dim"]
        self.lr_layer = LogisticRegression(fmap, use_bias=True)
        self.embedding_layer = FeatureEmbedding(fmap, self.embedding_dim * (f - 1))
        # (field, slot) pairs: upper = slot >= field (the field's vector for field slot + 1), lower = slot < field
        self.upper = torch.triu(torch.ones(f, f - 1), 0).bool()
        self.lower = torch.tril(torch.ones(f, f - 1), -1).bool()
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X).view(-1, self.num_fields, self.num_fields - 1, self.embedding_dim)
        b = emb.size(0)
        up = torch.masked_select(emb, self.upper.unsqueeze(-1))
        low = torch.masked_select(emb.transpose(1, 2), self.lower.t().unsqueeze(-1))
        y = self.lr_layer(X) + (up * low).view(b, -1).sum(dim=-1, keepdim=True)
        return {"y_pred": self.output_activation(y)}


def transplant_ffmv2(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding.embedding, "embedding.embedding")
    copy_lr(theirs.lr_layer, ours.lr, "lr")


REFERENCE = Reference(FFMv2, transplant_ffmv2, {"ffmv2": E, "ffmv2-dim4": {"embedding_dim": 4}},
                      "model_zoo/FFM/src/FFMv2.py")
