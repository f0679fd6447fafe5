"""qin: FuxiCTR 2.3.10 composition following the authors' salmon1802/QIN ``src/QIN_variety_v9.py`` (class
``QIN_variety_v9``; FuxiCTR has no QIN), and the transplant of our weights into it. ``MultiHeadTargetAttention``,
``ScaledDotProductAttention``, ``QuadraticNeuralNetworks`` and ``QuadraticLayer`` are defined in that file, so they
are written here from it, on FuxiCTR's installed FeatureEmbeddingDict. Runs on the Frappe rows with synthetic
behaviour histories (``data="frappe_seq"``: item_history sharing item's table, cost_history sharing cost's).

The authors' data path is their own (``src/mmctr_dataloader.py``): the batch is ``(user-side features, item
features of [history..., target] looked up in item_info, mask)``, the item features being the fields with
``source: item``. On the Frappe rows the pair's fields play those parts: the target ``(item, cost)`` and the history
``(item_history, cost_history)`` are the item features of the target and of the behaviours (the same tables, as
the authors' item_info rows are the same embeddings for both), the mask is ``item_history != 0`` (their
``item_seq > 0``), and every other field is a user-side feature (their ``batch_dict``, in feature-map order). The
forward is then the authors': ``[user features, target, ASTA(target, history)]`` into the quadratic network.
Several pairs (a bars generalisation) give one attention each, ``[..., t_1, o_1, t_2, o_2]``.

``num_heads > 1`` is a bars generalisation too (the authors' class is called multi-head but has one head): here
the attention's projections are viewed as ``num_heads`` heads of ``attention_dim / num_heads`` with the scale
``sqrt(head width)``; with one head it is the authors' computation unchanged."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbeddingDict
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


class ScaledDotProductAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()

    def forward(self, Q, K, V, scale=None, mask=None):
        scores = torch.matmul(Q, K.transpose(-1, -2))
        if scale:
            scores = scores / scale
        if mask is not None:
            scores = scores * mask.view_as(scores)
        return torch.matmul(self.relu(scores), V)


class MultiHeadTargetAttention(nn.Module):
    def __init__(self, input_dim, attention_dim, num_heads=1, use_scale=True):
        super().__init__()
        self.attention_dim, self.num_heads = attention_dim, num_heads
        self.head_dim = attention_dim // num_heads
        self.scale = self.head_dim ** 0.5 if use_scale else None
        self.W_q = nn.Linear(input_dim, attention_dim, bias=False)
        self.W_k = nn.Linear(input_dim, attention_dim, bias=False)
        self.W_v = nn.Linear(input_dim, attention_dim, bias=False)
        self.W_o = nn.Linear(attention_dim, input_dim, bias=False)
        self.dot_attention = ScaledDotProductAttention()

    def forward(self, target_item, history_sequence, mask):
        b, h, e = target_item.size(0), self.num_heads, self.head_dim
        query = self.W_q(target_item).view(b, h, 1, e)
        key = self.W_k(history_sequence).view(b, -1, h, e).transpose(1, 2)
        value = self.W_v(history_sequence).view(b, -1, h, e).transpose(1, 2)
        mask = mask.view(b, 1, 1, -1).expand(b, h, 1, mask.size(-1))
        output = self.dot_attention(query, key, value, scale=self.scale, mask=mask)
        return self.W_o(output.reshape(b, -1)) + target_item


class QuadraticLayer(nn.Module):
    def __init__(self, input_dim, num_row=2, net_dropout=0.1):
        super().__init__()
        self.linear = nn.Sequential(nn.Linear(input_dim, input_dim * num_row), nn.Dropout(net_dropout))
        self.num_row, self.input_dim = num_row, input_dim

    def forward(self, x):  # Khatri-Rao product
        h = self.linear(x).view(-1, self.num_row, self.input_dim)
        return torch.einsum("bd,brd->bd", x, h)


class QuadraticNeuralNetworks(nn.Module):
    def __init__(self, input_dim, num_layers=3, net_dropout=0.1, num_row=2, batch_norm=False):
        super().__init__()
        self.num_layers = num_layers
        self.dropout, self.norm, self.layer, self.activation = (nn.ModuleList() for _ in range(4))
        for _ in range(num_layers):
            self.layer.append(QuadraticLayer(input_dim, num_row=num_row, net_dropout=net_dropout))
            if batch_norm:
                self.norm.append(nn.BatchNorm1d(input_dim))
            if net_dropout > 0:
                self.dropout.append(nn.Dropout(net_dropout))
            self.activation.append(nn.PReLU())
        self.fc = nn.Linear(input_dim, 1)

    def forward(self, x):
        for i in range(self.num_layers):
            residual = x
            x = self.layer[i](x)
            if len(self.norm) > i:
                x = self.norm[i](x)
            x = self.activation[i](x)
            if len(self.dropout) > i:
                x = self.dropout[i](x)
            x = x + residual
        return self.fc(x)


class QIN_variety_v9(RefModel):  # salmon1802/QIN src/QIN_variety_v9.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.target_fields, self.sequence_fields = fuxictr_pairs(fmap, p)
        attended = [n for s in self.sequence_fields for n in s]
        pool_unpaired_sequences(fmap, attended)
        targets = {n for t in self.target_fields for n in t}
        self.user_fields = [n for n in fmap.features if n not in targets and n not in set(attended)]
        d = p["embedding_dim"]
        self.embedding_layer = FeatureEmbeddingDict(fmap, d)
        self.attention_layers = nn.ModuleList()
        input_dim = len(self.user_fields) * d
        for t in self.target_fields:
            item_info_dim = len(t) * d
            att = p["attention_dim"] or item_info_dim * 2
            self.attention_layers.append(MultiHeadTargetAttention(item_info_dim, att, p["num_heads"], p["use_scale"]))
            input_dim += 2 * item_info_dim
        self.qnn = QuadraticNeuralNetworks(input_dim=input_dim, num_layers=p["num_layers"], net_dropout=p["dropout"],
                                           num_row=p["num_row"], batch_norm=p["batch_norm"])
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        emb_list = [emb[n] for n in self.user_fields]
        for att, targets, seqs in zip(self.attention_layers, self.target_fields, self.sequence_fields, strict=True):
            target_emb = torch.cat([emb[n] for n in targets], dim=-1)
            sequence_emb = torch.cat([emb[n] for n in seqs], dim=-1)
            mask = (X[seqs[0]].long() > 0).to(target_emb.dtype)  # the authors' (item_seq > 0).float()
            emb_list += [target_emb, att(target_emb, sequence_emb, mask)]
        y_pred = self.qnn(torch.cat(emb_list, dim=-1))
        return {"y_pred": self.output_activation(y_pred)}


def transplant_qin(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    if len(theirs.attention_layers) != len(ours.attention):
        raise ValueError(f"qin: {len(theirs.attention_layers)} attentions in the authors' code vs {len(ours.attention)}")
    for i, (a, b) in enumerate(zip(theirs.attention_layers, ours.attention, strict=True)):
        copy_leaves(a, b, f"attention[{i}]")  # W_q, W_k, W_v, W_o <- query, key, value, output
    q, o = theirs.qnn, ours.qnn
    if q.num_layers != len(o.layers):
        raise ValueError(f"qin: {q.num_layers} quadratic layers in the authors' code vs {len(o.layers)}")
    for i in range(q.num_layers):
        copy_leaves(q.layer[i].linear, o.layers[i].linear, f"qnn.layers[{i}]")
        put(q.activation[i].weight, o.activations[i].weight, f"qnn.activations[{i}]")
    copy_leaves(q.norm, o.norms or nn.ModuleList(), "qnn.norms")
    copy_leaves(q.fc, o.fc, "qnn.fc")


BASE = {**E, "num_layers": 3, "num_row": 2, "dropout": 0.0, "batch_norm": False, "attention_dim": None,
        "num_heads": 1, "use_scale": True, "target_fields": None, "sequence_fields": None}

REFERENCE = Reference(QIN_variety_v9, transplant_qin, {
    # the authors' constructor defaults on the spec's pair: (item, cost) over (item_history, cost_history)
    "inferred-pair": BASE,
    # the authors' MicroLens settings (4 layers, 4 rows, batch norm; dropout 0 here), no scale
    "bn-4x4-no-scale": {**BASE, "num_layers": 4, "num_row": 4, "batch_norm": True, "use_scale": False},
    # one attended history (cost_history mean-pooled as a user-side field), attention width 12, 1 row
    "item-only-width-12": {**BASE, "num_layers": 2, "num_row": 1, "attention_dim": 12,
                           "target_fields": (("item",),), "sequence_fields": (("item_history",),)},
    # two pairs, each with its own attention; two heads (bars generalisation)
    "two-pairs-2-heads": {**BASE, "num_heads": 2, "batch_norm": True, "target_fields": (("item",), ("cost",)),
                          "sequence_fields": (("item_history",), ("cost_history",))},
}, "salmon1802/QIN:src/QIN_variety_v9.py@5d07dd16", data="frappe_seq")
