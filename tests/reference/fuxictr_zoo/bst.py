"""bst: FuxiCTR 2.3.10 composition following model_zoo/BST/src/BST.py (its BehaviorTransformer and TransformerBlock
written here from that file, on torch's MultiheadAttention as there; FuxiCTR's installed FeatureEmbeddingDict and
MLP_Block), and the transplant of our weights into it. Runs on the Frappe rows with synthetic behaviour histories
(``data="frappe_seq"``: item_history sharing item's table, cost_history sharing cost's)."""

from __future__ import annotations

import numpy as np
import torch
from fuxictr.pytorch.layers import FeatureEmbeddingDict, MLP_Block
from fuxictr_reference import (
    E,
    Reference,
    RefModel,
    copy_embedding,
    copy_leaves,
    pool_unpaired_sequences,
    put,
)
from torch import nn

from fuxictr_zoo.din import fuxictr_pairs


class TransformerBlock(nn.Module):  # model_zoo/BST/src/BST.py: post-norm, feed-forward width = model width
    def __init__(self, dim, num_heads, attn_dropout, net_dropout, layer_norm, use_residual):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, num_heads=num_heads, dropout=attn_dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(), nn.Linear(dim, dim))
        self.use_residual = use_residual
        self.dropout1, self.dropout2 = nn.Dropout(net_dropout), nn.Dropout(net_dropout)
        self.layer_norm1 = nn.LayerNorm(dim) if layer_norm else None
        self.layer_norm2 = nn.LayerNorm(dim) if layer_norm else None

    def forward(self, x, attn_mask):
        s = self.dropout1(self.attention(x, x, x, attn_mask=attn_mask)[0])
        if self.use_residual:
            s = s + x
        if self.layer_norm1 is not None:
            s = self.layer_norm1(s)
        out = self.dropout2(self.ffn(s))
        if self.use_residual:
            out = out + s
        if self.layer_norm2 is not None:
            out = self.layer_norm2(out)
        return out


class BehaviorTransformer(nn.Module):  # model_zoo/BST/src/BST.py: sinusoidal-initialised trainable positions
    def __init__(self, seq_len, model_dim, num_heads, layers, attn_dropout, net_dropout, position_dim,
                 use_position_emb, layer_norm, use_residual):
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(model_dim, num_heads, attn_dropout, net_dropout, layer_norm,
                                                     use_residual) for _ in range(layers))
        self.position_emb = None
        if use_position_emb:
            pos = torch.arange(seq_len, dtype=torch.float32).unsqueeze(1)
            div = torch.exp(torch.arange(0, position_dim, 2).float() * (-np.log(10000.0) / position_dim))
            pe = torch.zeros(seq_len, position_dim)
            pe[:, 0::2] = torch.sin(pos * div)
            pe[:, 1::2] = torch.cos(pos * div)
            self.position_emb = nn.Parameter(pe)

    def forward(self, x, attn_mask):
        if self.position_emb is not None:
            x = torch.cat([x, self.position_emb.unsqueeze(0).repeat(x.size(0), 1, 1)], dim=-1)
        for block in self.blocks:
            x = block(x, attn_mask)
        return x


class BST(RefModel):  # model_zoo/BST/src/BST.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.target_fields, self.sequence_fields = fuxictr_pairs(fmap, p)
        pool_unpaired_sequences(fmap, [n for s in self.sequence_fields for n in s])
        dim = p["embedding_dim"]
        self.num_heads, self.pooling, self.causal = p["num_heads"], p["seq_pooling"], p["use_causal_mask"]
        self.embedding_layer = FeatureEmbeddingDict(fmap, dim)
        self.transformer_encoders = nn.ModuleList()
        seq_out_dim = 0
        for seqs in self.sequence_fields:
            model_dim = dim * (int(p["use_position_emb"]) + len(seqs))
            seq_len = fmap.features[seqs[0]]["max_len"] + 1  # the target appended
            # the pooled output replaces the pair's sequence fields (counted in sum_emb_out_dim)
            seq_out_dim += (seq_len if self.pooling == "concat" else 1) * model_dim - len(seqs) * dim
            self.transformer_encoders.append(BehaviorTransformer(
                seq_len, model_dim, p["num_heads"], p["transformer_layers"], p["attention_dropout"], p["dropout"],
                dim, p["use_position_emb"], p["layer_norm"], p["use_residual"]))
        self.dnn = MLP_Block(input_dim=fmap.sum_emb_out_dim() + seq_out_dim, output_dim=1,
                             hidden_units=list(p["dnn_hidden_units"]), hidden_activations=p["activation"],
                             dropout_rates=p["dropout"], batch_norm=p["batch_norm"])
        self.finish(lr)

    def masks(self, x):
        """(padding mask [B, L + 1], attention mask [B * heads, L + 1, L + 1]), true = masked: padding keys
        are masked except for the query itself, the target never; causal: also the keys after the query."""
        pad = torch.cat([x == 0, torch.zeros(x.size(0), 1, dtype=torch.bool, device=x.device)], dim=-1)
        n = pad.size(1)
        att = pad.unsqueeze(1).expand(-1, n, -1) & ~torch.eye(n, dtype=torch.bool, device=x.device).unsqueeze(0)
        if self.causal:
            att = att | torch.triu(torch.ones(n, n, dtype=torch.bool, device=x.device), 1).unsqueeze(0)
        return pad, att.repeat_interleave(self.num_heads, dim=0)

    def pool(self, out, pad):
        keep = (1 - pad.to(out.dtype)).unsqueeze(-1)
        if self.pooling == "mean":
            return (out * keep).sum(dim=1) / (keep.sum(dim=1) + 1.0e-12)
        if self.pooling == "sum":
            return (out * keep).sum(dim=1)
        if self.pooling == "target":
            return out[:, -1, :]
        return out.flatten(start_dim=1)  # concat

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)  # in the batch's column order, as model_zoo concatenates it
        for i, (targets, seqs, encoder) in enumerate(zip(self.target_fields, self.sequence_fields,
                                                         self.transformer_encoders, strict=True)):
            t = torch.cat([emb[n] for n in targets], dim=-1)
            h = torch.cat([emb[n] for n in seqs], dim=-1)
            pad, att = self.masks(X[seqs[0]])
            emb[f"attn_{i}"] = self.pool(encoder(torch.cat([h, t.unsqueeze(1)], dim=1), att), pad)
            for n in seqs:
                emb.pop(n)
        return {"y_pred": self.output_activation(self.dnn(torch.cat(list(emb.values()), dim=-1)))}

    def null_biases(self):
        """The key part of each attention's in-projection bias adds ``q . b_k`` to every score of a query, which
        softmax ignores: its true gradient is zero (see biases_before_batchnorm). It shares the tensor
        ``in_proj_bias`` with the query and value biases, which therefore leave the weight comparison too (the
        losses include them)."""
        return {n for n, _ in self.named_parameters() if n.endswith("attention.in_proj_bias")}


def transplant_bst(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    if len(theirs.transformer_encoders) != len(ours.transformers):
        raise ValueError(f"bst: {len(theirs.transformer_encoders)} transformers in FuxiCTR vs {len(ours.transformers)}")
    for i, (t, o) in enumerate(zip(theirs.transformer_encoders, ours.transformers, strict=True)):
        w = f"transformer[{i}]"
        if (t.position_emb is None) != (o.position_emb is None) or len(t.blocks) != len(o.blocks):
            raise ValueError(f"{w}: position embedding / number of blocks differ")
        if t.position_emb is not None:
            put(t.position_emb, o.position_emb, f"{w}.position_emb")
        for j, (tb, ob) in enumerate(zip(t.blocks, o.blocks, strict=True)):
            a, b = tb.attention, ob.attention
            put(a.in_proj_weight, b.in_proj_weight, f"{w}.block[{j}].in_proj_weight")
            put(a.in_proj_bias, b.in_proj_bias, f"{w}.block[{j}].in_proj_bias")
            put(a.out_proj.weight, b.out_weight, f"{w}.block[{j}].out_weight")
            put(a.out_proj.bias, b.out_bias, f"{w}.block[{j}].out_bias")
            copy_leaves(tb.ffn, ob.ffn, f"{w}.block[{j}].ffn")
            for x, y, k in ((tb.layer_norm1, ob.norm1, "norm1"), (tb.layer_norm2, ob.norm2, "norm2")):
                if (x is None) != (y is None):
                    raise ValueError(f"{w}.block[{j}].{k}: present in one side only")
                if x is not None:
                    copy_leaves(x, y, f"{w}.block[{j}].{k}")
    copy_leaves(theirs.dnn, ours.mlp, "dnn")


BASE = {**E, "dnn_hidden_units": (64, 32), "activation": "relu", "num_heads": 2, "transformer_layers": 1,
        "attention_dropout": 0.0, "dropout": 0.0, "batch_norm": False, "layer_norm": True, "use_residual": True,
        "seq_pooling": "mean", "use_position_emb": True, "use_causal_mask": False, "target_fields": None,
        "sequence_fields": None}

REFERENCE = Reference(BST, transplant_bst, {
    # the spec's pair: (item, cost) with (item_history, cost_history): width 2 x 10 + 10 positions, 2 heads
    "inferred-pair": BASE,
    "two-blocks-3-heads-target": {**BASE, "transformer_layers": 2, "num_heads": 3, "seq_pooling": "target"},
    "no-norm-no-residual-sum": {**BASE, "layer_norm": False, "use_residual": False, "seq_pooling": "sum"},
    "causal-concat-no-position": {**BASE, "use_causal_mask": True, "seq_pooling": "concat",
                                  "use_position_emb": False},
    "two-pairs": {**BASE, "target_fields": (("item",), ("cost",)),
                  "sequence_fields": (("item_history",), ("cost_history",))},
    # one attended history; the other sequence (cost_history) is mean-pooled (FuxiCTR: MaskedAveragePooling)
    "item-only-prelu-4-heads": {**BASE, "activation": "prelu", "num_heads": 4, "target_fields": (("item",),),
                                "sequence_fields": (("item_history",),)},
}, "model_zoo/BST/src/BST.py", data="frappe_seq")
