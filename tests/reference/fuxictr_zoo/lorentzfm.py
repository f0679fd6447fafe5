"""lorentzfm: FuxiCTR 2.3.10 composition following model_zoo/LorentzFM/src/LorentzFM.py, and the transplant of our
weights into it."""

from __future__ import annotations

from itertools import combinations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding, InnerProductInteraction
from fuxictr_reference import E, Reference, RefModel, copy_embedding


class LorentzFM(RefModel):  # model_zoo/LorentzFM/src/LorentzFM.py (embedding_dropout: accepted and unused there)
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])
        self.inner_product_layer = InnerProductInteraction(fmap.num_fields, output="inner_product")
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)  # B x F x D
        inner = self.inner_product_layer(emb)  # B x P
        zeroth = torch.sqrt(torch.sum(emb**2, dim=-1) + 1)  # beta = 1: B x F
        p, q = zip(*combinations(range(zeroth.size(1)), 2), strict=True)
        u0, v0 = zeroth[:, p], zeroth[:, q]
        score = 1 + torch.div(1 - inner - u0 - v0, u0 * v0)  # triangle pooling
        return {"y_pred": self.output_activation(torch.sum(score, dim=1, keepdim=True))}


def transplant_lorentzfm(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")


REFERENCE = Reference(LorentzFM, transplant_lorentzfm, {"lorentzfm": E}, "model_zoo/LorentzFM/src/LorentzFM.py")
