"""autoint: FuxiCTR 2.3.10 composition following model_zoo/AutoInt/src/AutoInt.py, and the transplant of our weights into it."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding, LogisticRegression, ScaledDotProductAttention
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves, copy_lr, mlp_block, put
from torch import nn


class MultiHeadSelfAttention(nn.Module):
    """AutoInt's interacting layer as model_zoo/AutoInt/src/AutoInt.py defines it, on FuxiCTR's
    ScaledDotProductAttention: separate W_q/W_k/W_v, scores / sqrt(head_dim) when scaled, dropout on the attention
    weights, residual (projected when widths differ), optional LayerNorm, ReLU."""

    def __init__(self, input_dim, attention_dim, num_heads, dropout_rate, use_residual, use_scale, layer_norm):
        super().__init__()
        self.head_dim = attention_dim // num_heads
        self.num_heads = num_heads
        self.use_residual = use_residual
        self.scale = self.head_dim**0.5 if use_scale else None
        self.W_q = nn.Linear(input_dim, attention_dim, bias=False)
        self.W_k = nn.Linear(input_dim, attention_dim, bias=False)
        self.W_v = nn.Linear(input_dim, attention_dim, bias=False)
        self.W_res = nn.Linear(input_dim, attention_dim, bias=False) \
            if use_residual and input_dim != attention_dim else None
        self.dot_attention = ScaledDotProductAttention(dropout_rate)
        self.layer_norm = nn.LayerNorm(attention_dim) if layer_norm else None

    def forward(self, X):
        b = X.size(0)
        q, k, v = (w(X).view(b, -1, self.num_heads, self.head_dim).transpose(1, 2)
                   for w in (self.W_q, self.W_k, self.W_v))
        out, _ = self.dot_attention(q, k, v, scale=self.scale)
        out = out.transpose(1, 2).contiguous().view(b, -1, self.num_heads * self.head_dim)
        if self.W_res is not None:
            X = self.W_res(X)
        if self.use_residual:
            out = out + X
        if self.layer_norm is not None:
            out = self.layer_norm(out)
        return out.relu()


class AutoInt(RefModel):  # model_zoo/AutoInt/src/AutoInt.py (net_dropout feeds attention and the DNN)
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim = p["embedding_dim"]
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        self.lr_layer = LogisticRegression(fmap, use_bias=False) if p["use_wide"] else None
        units = list(p["dnn_hidden_units"] or []) if p["use_dnn"] else []
        self.dnn = (mlp_block(fmap.sum_emb_out_dim(), units, p["activation"], p["batch_norm"], p["dropout"], output_dim=1)
                    if units else None)
        att_drop = p["dropout"] if p["attention_dropout"] is None else p["attention_dropout"]
        self.self_attention = nn.Sequential(*[
            MultiHeadSelfAttention(dim if i == 0 else p["attention_dim"], p["attention_dim"], p["num_heads"],
                                   att_drop, p["use_residual"], p["use_scale"], p["layer_norm"])
            for i in range(p["attention_layers"])
        ])
        self.fc = nn.Linear(fmap.num_fields * p["attention_dim"], 1)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        y = self.fc(torch.flatten(self.self_attention(emb), start_dim=1))
        if self.dnn is not None:
            y = y + self.dnn(emb.flatten(start_dim=1))
        if self.lr_layer is not None:
            y = y + self.lr_layer(X)
        return {"y_pred": self.output_activation(y)}


def transplant_autoint(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    for i, (t, o) in enumerate(zip(theirs.self_attention, ours.attention, strict=True)):
        for a, b in (("W_q", "w_q"), ("W_k", "w_k"), ("W_v", "w_v")):
            put(getattr(t, a).weight, getattr(o, b).weight, f"attention[{i}].{b}")
        if (t.W_res is None) != (o.res is None) or (t.layer_norm is None) != (o.norm is None):
            raise ValueError(f"attention[{i}]: residual projection / layer norm present in one side only")
        if t.W_res is not None:
            put(t.W_res.weight, o.res.weight, f"attention[{i}].res")
        if t.layer_norm is not None:
            copy_leaves(t.layer_norm, o.norm, f"attention[{i}].norm")
    copy_leaves(theirs.fc, ours.fc, "fc")
    if (theirs.dnn is None) != (ours.dnn is None) or (theirs.lr_layer is None) != (ours.lr is None):
        raise ValueError("autoint: DNN / wide part present in one side only")
    if theirs.dnn is not None:
        copy_leaves(theirs.dnn, ours.dnn, "dnn")
    if theirs.lr_layer is not None:
        copy_lr(theirs.lr_layer, ours.lr, "lr")


REFERENCE = Reference(AutoInt, transplant_autoint, {
    "autoint+": {**E, "attention_layers": 3, "num_heads": 2, "attention_dim": 40, "use_residual": True,
                 "use_scale": False, "layer_norm": False, "dropout": 0.0, "attention_dropout": None,
                 "use_wide": False, "use_dnn": True, "dnn_hidden_units": (400, 400, 400),
                 "activation": "relu", "batch_norm": True},
    "autoint-scaled-ln-wide": {**E, "attention_layers": 2, "num_heads": 4, "attention_dim": 64,
                               "use_residual": True, "use_scale": True, "layer_norm": True, "dropout": 0.0,
                               "attention_dropout": None, "use_wide": True, "use_dnn": False,
                               "dnn_hidden_units": None, "activation": None, "batch_norm": None},
    "autoint-no-residual": {**E, "attention_layers": 2, "num_heads": 1, "attention_dim": 10,
                            "use_residual": False, "use_scale": False, "layer_norm": False, "dropout": 0.0,
                            "attention_dropout": None, "use_wide": False, "use_dnn": False,
                            "dnn_hidden_units": None, "activation": None, "batch_norm": None},
}, "model_zoo/AutoInt/src/AutoInt.py")
