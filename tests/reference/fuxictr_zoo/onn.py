"""onn: FuxiCTR 2.3.10 composition following model_zoo/ONN/ONN_torch/src/ONN.py, and the transplant of our weights
into it."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves, mlp_block
from torch import nn


class ONN(RefModel):  # model_zoo/ONN/ONN_torch/src/ONN.py: F FeatureEmbeddings, table 0 = the copy embeddings
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim, f = p["embedding_dim"], fmap.num_fields
        self.num_fields = f
        self.dnn = mlp_block(dim * f + f * (f - 1) // 2, p["hidden_units"], p["activation"], p["batch_norm"],
                             p["dropout"], output_dim=1)
        self.embedding_layers = nn.ModuleList(FeatureEmbedding(fmap, dim) for _ in range(f))
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        tables = [layer(X) for layer in self.embedding_layers]  # F x [B, F, D]
        aware, dots = tables[1:], []
        for i in range(self.num_fields - 1):
            for j in range(i + 1, self.num_fields):
                # field i's vector for field j: table j - 1 (of the F - 1 field-aware ones); j's for i: table i
                dots.append((aware[j - 1][:, i, :] * aware[i][:, j, :]).sum(dim=1, keepdim=True))
        x = torch.cat([tables[0].flatten(start_dim=1), torch.cat(dots, dim=1)], dim=1)
        return {"y_pred": self.output_activation(self.dnn(x))}


def transplant_onn(ours, theirs):
    if len(theirs.embedding_layers) != len(ours.embedding.tables):
        raise ValueError("onn: number of operation-aware tables differs")
    for s, (t, o) in enumerate(zip(theirs.embedding_layers, ours.embedding.tables, strict=True)):
        copy_embedding(t, o, f"embedding.tables[{s}]")
    copy_leaves(theirs.dnn, ours.dnn, "dnn")


REFERENCE = Reference(ONN, transplant_onn, {
    "bn": {**E, "hidden_units": (64, 32), "activation": "relu", "batch_norm": True, "dropout": 0.0},
    "dim2-tanh": {"embedding_dim": 2, "hidden_units": (16,), "activation": "tanh", "batch_norm": False,
                  "dropout": 0.0},
}, "model_zoo/ONN/ONN_torch/src/ONN.py")
