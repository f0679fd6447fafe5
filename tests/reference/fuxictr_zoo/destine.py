"""destine: FuxiCTR 2.3.10 composition following model_zoo/DESTINE/src/DESTINE.py, and the transplant of our
weights into it. Only ``head_split="view"`` (FuxiCTR 2.3.10's plain reshape into heads) has a reference;
``"columns"`` is ours (with one head the two are the same computation, which the one-head cases check)."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding, LogisticRegression
from fuxictr_reference import MLP, E, Reference, RefModel, copy_embedding, copy_leaves, copy_lr, mlp_block
from torch import nn


class DisentangledSelfAttention(nn.Module):
    """The model_zoo file's layer: Q/K/V/unary Linears with bias (ReLU on Q/K/V when asked), heads by a plain view
    to (B * H, F, d), q and k centred over fields, softmax of their products (/ sqrt(d) when scaled) plus the
    field-softmax of the unary logits (also plainly viewed to (B * H, 1, F)), dropout, times V, + W_res x."""

    def __init__(self, input_dim, attention_dim, num_heads, dropout_rate, use_residual, use_scale, relu_before_att):
        super().__init__()
        self.attention_dim, self.num_heads = attention_dim, num_heads
        self.head_dim = attention_dim // num_heads
        self.use_scale, self.relu_before_att = use_scale, relu_before_att
        self.W_q = nn.Linear(input_dim, attention_dim)
        self.W_k = nn.Linear(input_dim, attention_dim)
        self.W_v = nn.Linear(input_dim, attention_dim)
        self.W_unary = nn.Linear(input_dim, num_heads)
        self.W_res = nn.Linear(input_dim, attention_dim) if use_residual else None
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else None

    def forward(self, X):
        b = X.size(0)
        unary = self.W_unary(X)  # [B, F, H]
        qkv = [w(X) for w in (self.W_q, self.W_k, self.W_v)]
        if self.relu_before_att:
            qkv = [t.relu() for t in qkv]
        q, k, v = (t.view(b * self.num_heads, -1, self.head_dim) for t in qkv)
        q = q - q.mean(dim=1, keepdim=True)
        k = k - k.mean(dim=1, keepdim=True)
        scores = torch.bmm(q, k.transpose(1, 2))
        if self.use_scale:
            scores = scores / self.head_dim**0.5
        weights = scores.softmax(dim=2) + unary.softmax(dim=1).view(b * self.num_heads, -1, 1).transpose(1, 2)
        if self.dropout is not None:
            weights = self.dropout(weights)
        out = torch.bmm(weights, v).view(b, -1, self.attention_dim)
        if self.W_res is not None:
            out = out + self.W_res(X)
        return out


class DESTINE(RefModel):  # model_zoo/DESTINE/src/DESTINE.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        if p["head_split"] != "view":
            raise ValueError(f"destine: head_split {p['head_split']!r} has no FuxiCTR reference")
        dim, att = p["embedding_dim"], p["attention_dim"]
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        self.lr = LogisticRegression(fmap) if p["use_wide"] else None
        units = list(p["dnn_hidden_units"] or [])
        self.dnn = (mlp_block(fmap.num_fields * dim, units, p["activation"], p["batch_norm"], p["dropout"],
                              output_dim=1)
                    if units else None)
        self.self_attns = nn.ModuleList(
            DisentangledSelfAttention(dim if i == 0 else att, att, p["num_heads"], p["attention_dropout"],
                                      p["residual_mode"] == "each_layer", p["use_scale"], p["relu_before_att"])
            for i in range(p["attention_layers"]))
        self.attn_fc = nn.Linear(fmap.num_fields * att, 1)
        self.W_res = nn.Linear(dim, att) if p["residual_mode"] == "last_layer" else None
        self.finish(lr)

    def null_biases(self):
        """Biases the output does not depend on (true gradient zero, so Adam moves them by rounding noise; the
        20-step weight comparison leaves them out, the losses include them): every layer's ``W_unary.bias`` (one
        constant per head added to all fields' unary logits before the softmax over fields), and with one head
        and no ReLU before the attention ``W_q.bias`` / ``W_k.bias`` (the same vector added to every field, removed
        by the centring over fields; with several heads the plain view spreads a field over rows of a head, so
        the bias is not constant across rows and does matter)."""
        out = set()
        for i, layer in enumerate(self.self_attns):
            out.add(f"self_attns.{i}.W_unary.bias")
            if layer.num_heads == 1 and not layer.relu_before_att:
                out |= {f"self_attns.{i}.W_q.bias", f"self_attns.{i}.W_k.bias"}
        return out

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        cross = emb
        for layer in self.self_attns:
            cross = layer(cross)
        if self.W_res is not None:
            cross = cross + self.W_res(emb)
        y = self.attn_fc(cross.flatten(start_dim=1))
        if self.lr is not None:
            y = y + self.lr(X)
        if self.dnn is not None:
            y = y + self.dnn(emb.flatten(start_dim=1))
        return {"y_pred": self.output_activation(y)}


def transplant_destine(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    for i, (t, o) in enumerate(zip(theirs.self_attns, ours.attention, strict=True)):
        copy_leaves(t, o, f"attention[{i}]")  # W_q, W_k, W_v, W_unary[, W_res] in the same order
    if (theirs.W_res is None) != (ours.W_res is None):
        raise ValueError("destine: last-layer residual present in one side only")
    if theirs.W_res is not None:
        copy_leaves(theirs.W_res, ours.W_res, "W_res")
    copy_leaves(theirs.attn_fc, ours.attn_fc, "attn_fc")
    if (theirs.lr is None) != (ours.lr is None) or (theirs.dnn is None) != (ours.dnn is None):
        raise ValueError("destine: LR / MLP present in one side only")
    if theirs.lr is not None:
        copy_lr(theirs.lr, ours.lr, "lr")
    if theirs.dnn is not None:
        copy_leaves(theirs.dnn, ours.dnn, "dnn")


_BASE = {**E, "attention_dim": 16, "num_heads": 2, "attention_layers": 2, "dnn_hidden_units": (),
         "activation": "relu", "dropout": 0.0, "attention_dropout": 0.0, "relu_before_att": False,
         "batch_norm": False, "use_scale": False, "use_wide": True, "residual_mode": "each_layer",
         "head_split": "view"}

REFERENCE = Reference(DESTINE, transplant_destine, {
    "fuxictr-defaults": _BASE,  # 2 heads (the plain-view split), each-layer residual, LR, no MLP
    "last-layer-residual-mlp": {**_BASE, "num_heads": 4, "attention_dim": 32, "attention_layers": 3,
                                "residual_mode": "last_layer", "use_scale": True, "use_wide": False,
                                "dnn_hidden_units": (400, 400, 400), **MLP},
    "no-residual-relu": {**_BASE, "num_heads": 1, "residual_mode": "none", "relu_before_att": True,
                         "attention_layers": 1},
}, "model_zoo/DESTINE/src/DESTINE.py")
