"""finalmlp: FuxiCTR 2.3.10 composition following model_zoo/FinalMLP/src/FinalMLP.py, and the transplant of our weights into it."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding, MLP_Block
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves, mlp_block, put
from torch import nn


class FeatureSelection(nn.Module):
    """FinalMLP's gating as model_zoo/FinalMLP/src/FinalMLP.py: context embeddings of the named fields (own
    tables) or a zero-initialised bias; gate = 2 * MLP_Block(..., output_activation="Sigmoid")."""

    def __init__(self, fmap, feature_dim, dim, fs_hidden_units, fs1_context, fs2_context):
        super().__init__()
        self.fs1_context, self.fs2_context = list(fs1_context), list(fs2_context)
        for i, ctx in ((1, self.fs1_context), (2, self.fs2_context)):
            if ctx:
                setattr(self, f"fs{i}_ctx_emb", FeatureEmbedding(fmap, dim, required_feature_columns=ctx))
            else:
                setattr(self, f"fs{i}_ctx_bias", nn.Parameter(torch.zeros(1, dim)))
            setattr(self, f"fs{i}_gate", MLP_Block(input_dim=dim * max(1, len(ctx)), output_dim=feature_dim,
                                                   hidden_units=list(fs_hidden_units), hidden_activations="ReLU",
                                                   output_activation="Sigmoid", batch_norm=False))

    def forward(self, X, flat_emb):
        out = []
        for i, ctx in ((1, self.fs1_context), (2, self.fs2_context)):
            if ctx:
                inp = getattr(self, f"fs{i}_ctx_emb")(X).flatten(start_dim=1)
            else:
                inp = getattr(self, f"fs{i}_ctx_bias").repeat(flat_emb.size(0), 1)
            out.append(flat_emb * (getattr(self, f"fs{i}_gate")(inp) * 2))
        return out


class InteractionAggregation(nn.Module):
    """FinalMLP's multi-head bilinear fusion as model_zoo/FinalMLP/src/FinalMLP.py (output_dim 1)."""

    def __init__(self, x_dim, y_dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.head_x_dim, self.head_y_dim = x_dim // num_heads, y_dim // num_heads
        self.w_x = nn.Linear(x_dim, 1)
        self.w_y = nn.Linear(y_dim, 1)
        self.w_xy = nn.Parameter(torch.empty(num_heads * self.head_x_dim * self.head_y_dim, 1))
        nn.init.xavier_normal_(self.w_xy)

    def forward(self, x, y):
        out = self.w_x(x) + self.w_y(y)
        hx = x.view(-1, self.num_heads, self.head_x_dim)
        hy = y.view(-1, self.num_heads, self.head_y_dim)
        xy = torch.matmul(
            torch.matmul(hx.unsqueeze(2), self.w_xy.view(self.num_heads, self.head_x_dim, -1))
            .view(-1, self.num_heads, 1, self.head_y_dim),
            hy.unsqueeze(-1),
        ).squeeze(-1)
        return out + xy.sum(dim=1)


class FinalMLP(RefModel):  # model_zoo/FinalMLP/src/FinalMLP.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim = p["embedding_dim"]
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        d = dim * fmap.num_fields
        self.mlp1 = mlp_block(d, p["mlp1_hidden_units"], p["mlp1_activation"], p["mlp1_batch_norm"], p["mlp1_dropout"])
        self.mlp2 = mlp_block(d, p["mlp2_hidden_units"], p["mlp2_activation"], p["mlp2_batch_norm"], p["mlp2_dropout"])
        self.use_fs = p["use_fs"]
        if self.use_fs:
            self.fs_module = FeatureSelection(fmap, d, dim, p["fs_hidden_units"], p["fs1_context"], p["fs2_context"])
        self.fusion_module = InteractionAggregation(p["mlp1_hidden_units"][-1], p["mlp2_hidden_units"][-1],
                                                    p["num_heads"])
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        flat = self.embedding_layer(X).flatten(start_dim=1)
        f1, f2 = self.fs_module(X, flat) if self.use_fs else (flat, flat)
        return {"y_pred": self.output_activation(self.fusion_module(self.mlp1(f1), self.mlp2(f2)))}


def transplant_finalmlp(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_leaves(theirs.mlp1, ours.mlp1, "mlp1")
    copy_leaves(theirs.mlp2, ours.mlp2, "mlp2")
    if (ours.fs1 is None) != (not theirs.use_fs):
        raise ValueError("finalmlp: feature selection present in one side only")
    if ours.fs1 is not None:
        fs = theirs.fs_module
        for i, o in ((1, ours.fs1), (2, ours.fs2)):
            if o.context is not None:
                copy_embedding(getattr(fs, f"fs{i}_ctx_emb"), o.context, f"fs{i}.context")
            else:
                put(getattr(fs, f"fs{i}_ctx_bias"), o.ctx_bias, f"fs{i}.ctx_bias")
            copy_leaves(getattr(fs, f"fs{i}_gate"), o.gate, f"fs{i}.gate")
    f, o = theirs.fusion_module, ours.fusion
    copy_leaves(f.w_x, o.w_x, "fusion.w_x")
    copy_leaves(f.w_y, o.w_y, "fusion.w_y")
    put(f.w_xy, o.w_xy, "fusion.w_xy")


REFERENCE = Reference(FinalMLP, transplant_finalmlp, {
    "contexts": {**E, "mlp1_hidden_units": (400,), "mlp1_activation": "relu", "mlp1_batch_norm": True,
                 "mlp1_dropout": 0.0, "mlp2_hidden_units": (100,), "mlp2_activation": "relu",
                 "mlp2_batch_norm": True, "mlp2_dropout": 0.0, "use_fs": True, "fs_hidden_units": (400,),
                 "fs1_context": ("user",), "fs2_context": ("item",), "num_heads": 5},
    "no-context": {**E, "mlp1_hidden_units": (400, 400), "mlp1_activation": "relu", "mlp1_batch_norm": True,
                   "mlp1_dropout": 0.0, "mlp2_hidden_units": (200,), "mlp2_activation": "relu",
                   "mlp2_batch_norm": False, "mlp2_dropout": 0.0, "use_fs": True, "fs_hidden_units": (400,),
                   "fs1_context": (), "fs2_context": (), "num_heads": 10},
    "no-fs": {**E, "mlp1_hidden_units": (400,), "mlp1_activation": "relu", "mlp1_batch_norm": True,
              "mlp1_dropout": 0.0, "mlp2_hidden_units": (100,), "mlp2_activation": "relu",
              "mlp2_batch_norm": True, "mlp2_dropout": 0.0, "use_fs": False, "fs_hidden_units": None,
              "fs1_context": (), "fs2_context": (), "num_heads": 5},
}, "model_zoo/FinalMLP/src/FinalMLP.py")
