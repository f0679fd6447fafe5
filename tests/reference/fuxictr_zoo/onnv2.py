"""onnv2: FuxiCTR 2.3.10 composition following model_zoo/ONN/ONN_torch/src/ONNv2.py, and the transplant of our
weights into it."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves, mlp_block


class ONNv2(RefModel):  # model_zoo/ONN/ONN_torch/src/ONNv2.py: one table of width F * dim, viewed [B, F, F, dim]
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        f = self.num_fields = fmap.num_fields
        self.embedding_dim = p["embedding_dim"]
        self.interact_units = f * (f - 1) // 2
        self.dnn = mlp_block(self.embedding_dim * f + self.interact_units, p["hidden_units"], p["activation"],
                             p["batch_norm"], p["dropout"], output_dim=1)
        self.embedding_layer = FeatureEmbedding(fmap, self.embedding_dim * f)
        self.diag = torch.eye(f).bool()  # the copy embeddings
        self.upper = torch.triu(torch.ones(f, f), 1).bool()  # the pairs i < j
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X).view(-1, self.num_fields, self.num_fields, self.embedding_dim)
        b = emb.size(0)
        copies = torch.masked_select(emb, self.diag.unsqueeze(-1)).view(b, -1)
        products = (emb.transpose(1, 2) * emb).sum(dim=-1)  # [B, F, F]: <v_{j,i}, v_{i,j}>
        pairs = torch.masked_select(products, self.upper).view(-1, self.interact_units)
        return {"y_pred": self.output_activation(self.dnn(torch.cat([copies, pairs], dim=1)))}


def transplant_onnv2(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding.embedding, "embedding.embedding")
    copy_leaves(theirs.dnn, ours.dnn, "dnn")


REFERENCE = Reference(ONNv2, transplant_onnv2, {
    "bn": {**E, "hidden_units": (64, 64, 64), "activation": "relu", "batch_norm": True, "dropout": 0.0},
    "dim2-tanh": {"embedding_dim": 2, "hidden_units": (16,), "activation": "tanh", "batch_norm": False,
                  "dropout": 0.0},
}, "model_zoo/ONN/ONN_torch/src/ONNv2.py")
