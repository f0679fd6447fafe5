"""interhat: FuxiCTR 2.3.10 composition following model_zoo/InterHAt/src/InterHAt.py, and the transplant of our
weights into it. Only ``head_split="reshape"`` (FuxiCTR's head split) has a reference; ``"per_head"`` is ours."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding, ScaledDotProductAttention
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves, mlp_block, put
from torch import nn


class MultiHeadSelfAttention(nn.Module):
    """The model_zoo file's MultiHeadAttention used as self-attention: Q/K/V of num_heads x attention_dim without
    bias, heads by a plain view to (B * H, F, A), scores / sqrt(A), W_res back to the input width when the widths
    differ, ReLU, dropout, residual, LayerNorm."""

    def __init__(self, input_dim, attention_dim, num_heads, dropout_rate, use_residual, layer_norm):
        super().__init__()
        self.attention_dim, self.num_heads = attention_dim, num_heads
        self.output_dim = num_heads * attention_dim
        self.use_residual = use_residual
        self.scale = attention_dim**0.5
        self.W_q = nn.Linear(input_dim, self.output_dim, bias=False)
        self.W_k = nn.Linear(input_dim, self.output_dim, bias=False)
        self.W_v = nn.Linear(input_dim, self.output_dim, bias=False)
        self.W_res = nn.Linear(self.output_dim, input_dim, bias=False) if input_dim != self.output_dim else None
        self.dot_product_attention = ScaledDotProductAttention(dropout_rate)
        self.layer_norm = nn.LayerNorm(input_dim) if layer_norm else None
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else None

    def forward(self, X):
        b = X.size(0)
        q, k, v = (w(X).view(b * self.num_heads, -1, self.attention_dim) for w in (self.W_q, self.W_k, self.W_v))
        out, _ = self.dot_product_attention(q, k, v, self.scale, None)
        out = out.view(b, -1, self.output_dim)
        if self.W_res is not None:
            out = self.W_res(out)
        out = out.relu()
        if self.dropout is not None:
            out = self.dropout(out)
        if self.use_residual:
            out = out + X
        if self.layer_norm is not None:
            out = self.layer_norm(out)
        return out


class FeedForwardNetwork(nn.Module):  # the model_zoo file's: LayerNorm(Linear(ReLU(Linear(x))) + x)
    def __init__(self, input_dim, hidden_dim, layer_norm, use_residual):
        super().__init__()
        self.use_residual = use_residual
        self.ffn = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, input_dim))
        self.layer_norm = nn.LayerNorm(input_dim) if layer_norm else None

    def forward(self, X):
        out = self.ffn(X)
        if self.use_residual:
            out = out + X
        return self.layer_norm(out) if self.layer_norm is not None else out


class AttentionalAggregation(nn.Module):  # the model_zoo file's: sum_n softmax_n(w . ReLU(W x_n + b)) x_n
    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.agg = nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1, bias=False),
                                 nn.Softmax(dim=1))

    def forward(self, X):
        return (self.agg(X) * X).sum(dim=1)


class InterHAt(RefModel):  # model_zoo/InterHAt/src/InterHAt.py (net_dropout feeds attention and the MLP)
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        if p["head_split"] != "reshape":
            raise ValueError(f"interhat: head_split {p['head_split']!r} has no FuxiCTR reference")
        dim = p["embedding_dim"]
        hidden = p["hidden_dim"] if p["hidden_dim"] is not None else 4 * dim
        self.order = p["order"]
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        self.multi_head_attention = MultiHeadSelfAttention(dim, p["attention_dim"], p["num_heads"], p["dropout"],
                                                           p["use_residual"], p["layer_norm"])
        self.feedforward = FeedForwardNetwork(dim, hidden, p["layer_norm"], p["use_residual"])
        self.aggregation_layers = nn.ModuleList(AttentionalAggregation(dim, hidden) for _ in range(self.order))
        self.attentional_score = AttentionalAggregation(dim, hidden)
        self.mlp = mlp_block(dim, p["hidden_units"], p["activation"], p["batch_norm"], p["dropout"], output_dim=1)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        x1 = self.feedforward(self.multi_head_attention(self.embedding_layer(X)))
        xp, us = x1, []
        for p in range(self.order):
            u = self.aggregation_layers[p](xp)
            us.append(u)
            if p != self.order - 1:
                xp = u.unsqueeze(1) * x1 + xp
        y = self.mlp(self.attentional_score(torch.stack(us, dim=1)))
        return {"y_pred": self.output_activation(y)}


def transplant_interhat(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    t, o = theirs.multi_head_attention, ours.attention
    for n in ("W_q", "W_k", "W_v"):
        put(getattr(t, n).weight, getattr(o, n).weight, f"attention.{n}")
    if (t.W_res is None) != (o.W_res is None) or (t.layer_norm is None) != (o.layer_norm is None):
        raise ValueError("interhat: W_res / layer norm present in one side only")
    if t.W_res is not None:
        put(t.W_res.weight, o.W_res.weight, "attention.W_res")
    if t.layer_norm is not None:
        copy_leaves(t.layer_norm, o.layer_norm, "attention.layer_norm")
    copy_leaves(theirs.feedforward, ours.feedforward, "feedforward")
    if len(theirs.aggregation_layers) != len(ours.hierarchy.aggregation_layers):
        raise ValueError("interhat: order differs")
    for p, (a, b) in enumerate(zip(theirs.aggregation_layers, ours.hierarchy.aggregation_layers, strict=True)):
        copy_leaves(a.agg, b.agg, f"hierarchy.aggregation_layers[{p}]")
    copy_leaves(theirs.attentional_score.agg, ours.hierarchy.attentional_score.agg, "hierarchy.attentional_score")
    copy_leaves(theirs.mlp, ours.mlp, "mlp")


_BASE = {**E, "hidden_dim": None, "order": 3, "num_heads": 1, "attention_dim": 40, "hidden_units": (64,),
         "activation": "relu", "batch_norm": False, "layer_norm": True, "use_residual": True, "dropout": 0.0,
         "head_split": "reshape"}
REFERENCE = Reference(InterHAt, transplant_interhat, {
    "fuxictr-default": _BASE,
    "two-heads": {**_BASE, "num_heads": 2, "attention_dim": 8, "hidden_dim": 32, "order": 2,
                  "hidden_units": (64, 32)},
    "no-residual-no-ln-bn": {**_BASE, "num_heads": 2, "attention_dim": 5, "order": 1, "layer_norm": False,
                             "use_residual": False, "batch_norm": True},
}, "model_zoo/InterHAt/src/InterHAt.py")
