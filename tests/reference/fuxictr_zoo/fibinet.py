"""fibinet: FuxiCTR 2.3.10 composition following model_zoo/FiBiNET/src/FiBiNET.py (``bilinear_layers="separate"``) or,
for our default ``shared``, FuxiCTR 1.1.0's fuxictr/pytorch/models/FiBiNET.py (one bilinear layer for both the
embeddings and the SENET output: the version that produced the BARS numbers) on 2.3.10's installed pieces, and the
transplant of our weights into it."""

from __future__ import annotations

from itertools import combinations

import torch
from fuxictr.pytorch.layers import (
    BilinearInteractionV2,
    FeatureEmbedding,
    LogisticRegression,
    SqueezeExcitation,
)
from fuxictr_reference import (
    MLP,
    E,
    Reference,
    RefModel,
    copy_embedding,
    copy_leaves,
    copy_lr,
    mlp_block,
    put,
)
from torch import nn


class BilinearInteractionLayer(nn.Module):
    """FuxiCTR 1.1.0's bilinear layer (fuxictr/pytorch/layers/interaction.py; not in 2.3.10): one bias-free
    nn.Linear(D, D) for all pairs / per field / per pair, so each D x D matrix gets BaseModel's xavier-normal
    initialisation on its own; p_ij = Linear(e_i) * e_j (= e_i W^T * e_j)."""

    def __init__(self, num_fields, embedding_dim, bilinear_type):
        super().__init__()
        self.bilinear_type = bilinear_type
        n = {"field_all": 0, "field_each": num_fields, "field_interaction": num_fields * (num_fields - 1) // 2}
        if bilinear_type == "field_all":
            self.bilinear_layer = nn.Linear(embedding_dim, embedding_dim, bias=False)
        else:
            self.bilinear_layer = nn.ModuleList([nn.Linear(embedding_dim, embedding_dim, bias=False)
                                                 for _ in range(n[bilinear_type])])

    def forward(self, feature_emb):
        v = torch.split(feature_emb, 1, dim=1)
        pairs = list(combinations(range(len(v)), 2))
        if self.bilinear_type == "field_all":
            out = [self.bilinear_layer(v[i]) * v[j] for i, j in pairs]
        elif self.bilinear_type == "field_each":
            out = [self.bilinear_layer[i](v[i]) * v[j] for i, j in pairs]
        else:
            out = [self.bilinear_layer[k](v[i]) * v[j] for k, (i, j) in enumerate(pairs)]
        return torch.cat(out, dim=1)


class FiBiNET(RefModel):  # model_zoo/FiBiNET/src/FiBiNET.py (shared: v1.1.0's structure)
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim, f = p["embedding_dim"], fmap.num_fields
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        self.senet_layer = SqueezeExcitation(f, p["reduction_ratio"], p["excitation_activation"])
        self.shared = p["bilinear_layers"] == "shared"
        if self.shared:
            self.bilinear_interaction = BilinearInteractionLayer(f, dim, p["bilinear_type"])
        else:
            self.bilinear_interaction1 = BilinearInteractionV2(f, dim, p["bilinear_type"])
            self.bilinear_interaction2 = BilinearInteractionV2(f, dim, p["bilinear_type"])
        self.lr_layer = LogisticRegression(fmap, use_bias=False)
        self.dnn = mlp_block(f * (f - 1) * dim, p["hidden_units"], p["activation"], p["batch_norm"], p["dropout"],
                             output_dim=1)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        senet = self.senet_layer(emb)
        if self.shared:
            bp, bq = self.bilinear_interaction(emb), self.bilinear_interaction(senet)
        else:
            bp, bq = self.bilinear_interaction1(emb), self.bilinear_interaction2(senet)
        y = self.lr_layer(X) + self.dnn(torch.flatten(torch.cat([bp, bq], dim=1), start_dim=1))
        return {"y_pred": self.output_activation(y)}


def _copy_bilinear(dst, src, where):
    if isinstance(dst, BilinearInteractionV2):
        put(dst.bilinear_W, src.weight, where + ".weight")
        put(dst.triu_index, torch.stack([src.left, src.right]), where + ".pairs")  # a frozen int Parameter there
    elif dst.bilinear_type == "field_all":
        put(dst.bilinear_layer.weight, src.weight.T, where + ".weight")
    else:
        if len(dst.bilinear_layer) != src.weight.shape[0]:
            raise ValueError(f"{where}: {len(dst.bilinear_layer)} matrices vs {src.weight.shape[0]}")
        for k, lin in enumerate(dst.bilinear_layer):
            put(lin.weight, src.weight[k].T, f"{where}.weight[{k}]")


def transplant_fibinet(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_leaves(theirs.senet_layer, ours.senet, "senet")
    if theirs.shared != (ours.bilinear2 is None):
        raise ValueError("fibinet: shared / separate bilinear layers differ")
    if theirs.shared:
        _copy_bilinear(theirs.bilinear_interaction, ours.bilinear, "bilinear")
    else:
        _copy_bilinear(theirs.bilinear_interaction1, ours.bilinear, "bilinear")
        _copy_bilinear(theirs.bilinear_interaction2, ours.bilinear2, "bilinear2")
    copy_lr(theirs.lr_layer, ours.lr, "lr")
    copy_leaves(theirs.dnn, ours.mlp, "mlp")


_BASE = {**E, "hidden_units": (400, 400), **MLP, "reduction_ratio": 3.0, "excitation_activation": "relu"}
REFERENCE = Reference(FiBiNET, transplant_fibinet, {
    **{f"{layers}-{t}": {**_BASE, "bilinear_type": t, "bilinear_layers": layers}
       for layers in ("separate", "shared") for t in ("field_all", "field_each", "field_interaction")},
    "separate-sigmoid-no-bn": {**_BASE, "batch_norm": False, "excitation_activation": "sigmoid",
                               "bilinear_type": "field_interaction", "bilinear_layers": "separate"},
}, "model_zoo/FiBiNET/src/FiBiNET.py")
