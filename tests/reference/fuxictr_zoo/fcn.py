"""fcn: FuxiCTR 2.3.10 composition following the authors' salmon1802/FCN ``src/DCNv3.py`` (class ``DCNv3``, the same
file FuxiCTR shipped as model_zoo/DCNv3 from v2.3.3 until its removal in 20c8af2), and the transplant of our weights
into it. MultiHeadFeatureEmbedding, ExponentialCrossNetwork and LinearCrossNetwork are defined in that file, so they
are written here from it, on FuxiCTR's installed FeatureEmbedding. Also used by ecn.py (``src/ECN.py``: the same
embedding and exponential network, its output Linear named ``fc``).

The authors' file targets FuxiCTR 2.0.1: its ``add_loss(inputs)`` runs the forward itself (2.0.1's ``train_step``
calls ``add_loss(inputs)``); 2.3.10's ``train_step`` runs the forward and calls ``add_loss(return_dict, y_true)``
(the signature FuxiCTR's own model_zoo/DCNv3 took in 7b98a49). The composition keeps the authors' Tri-BCE under
2.3.10's signature: ``L + L_d * max(0, L_d - L) + L_s * max(0, L_s - L)`` with the weights not detached; its
zeros take the loss's dtype (see ``add_loss``) so the float64 comparison is not rounded to float32."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves, put
from torch import nn


class MultiHeadFeatureEmbedding(nn.Module):
    """B x F x (H*D) -> per head the fields' first halves, then their second halves: B x H x F*D."""

    def __init__(self, feature_map, embedding_dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)

    def forward(self, X):
        emb = self.embedding_layer(X)
        heads = torch.stack(torch.tensor_split(emb, self.num_heads, dim=-1), dim=1)
        first, second = torch.tensor_split(heads, 2, dim=-1)
        return torch.cat([first.flatten(start_dim=2), second.flatten(start_dim=2)], dim=-1)


class CrossNetwork(nn.Module):
    """The authors' ExponentialCrossNetwork (``linear=False``) / LinearCrossNetwork (``linear=True``); ``out``:
    the name of its output Linear (``dfc``, ``sfc``, or ECN's ``fc``)."""

    def __init__(self, input_dim, num_cross_layers, layer_norm, batch_norm, net_dropout, num_heads, linear, out):
        super().__init__()
        self.num_cross_layers, self.linear, self.out = num_cross_layers, linear, out
        self.layer_norm, self.batch_norm, self.dropout = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.w, self.b = nn.ModuleList(), nn.ParameterList()
        for i in range(num_cross_layers):
            self.w.append(nn.Linear(input_dim, input_dim // 2, bias=False))
            self.b.append(nn.Parameter(torch.zeros((input_dim,))))
            if layer_norm:
                self.layer_norm.append(nn.LayerNorm(input_dim // 2))
            if batch_norm:
                self.batch_norm.append(nn.BatchNorm1d(num_heads))
            if net_dropout > 0:
                self.dropout.append(nn.Dropout(net_dropout))
            nn.init.uniform_(self.b[i].data)
        self.masker = nn.ReLU()
        setattr(self, out, nn.Linear(input_dim, 1))

    def forward(self, x):
        x0 = x
        for i in range(self.num_cross_layers):
            H = self.w[i](x)
            if len(self.batch_norm) > i:
                H = self.batch_norm[i](H)
            mask = self.masker(self.layer_norm[i](H)) if len(self.layer_norm) > i else self.masker(H)
            H = torch.cat([H, H * mask], dim=-1)
            x = (x0 if self.linear else x) * (H + self.b[i]) + x
            if len(self.dropout) > i:
                x = self.dropout[i](x)
        return getattr(self, self.out)(x)


class DCNv3(RefModel):  # salmon1802/FCN src/DCNv3.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        heads = p["num_heads"]
        self.embedding_layer = MultiHeadFeatureEmbedding(fmap, p["embedding_dim"] * heads, heads)
        input_dim = fmap.sum_emb_out_dim()
        self.ECN = CrossNetwork(input_dim, p["num_deep_cross_layers"], p["layer_norm"], p["batch_norm"],
                                p["deep_dropout"], heads, linear=False, out="dfc")
        self.LCN = CrossNetwork(input_dim, p["num_shallow_cross_layers"], p["layer_norm"], p["batch_norm"],
                                p["shallow_dropout"], heads, linear=True, out="sfc")
        self.finish(lr)

    def forward(self, inputs):
        feature_emb = self.embedding_layer(self.get_inputs(inputs))
        dlogit = self.ECN(feature_emb).mean(dim=1)
        slogit = self.LCN(feature_emb).mean(dim=1)
        logit = (dlogit + slogit) * 0.5
        return {"y_pred": self.output_activation(logit), "y_d": self.output_activation(dlogit),
                "y_s": self.output_activation(slogit)}

    def add_loss(self, return_dict, y_true):  # 2.0.1: add_loss(inputs), the forward inside
        loss = self.loss_fn(return_dict["y_pred"], y_true, reduction="mean")
        loss_d = self.loss_fn(return_dict["y_d"], y_true, reduction="mean")
        loss_s = self.loss_fn(return_dict["y_s"], y_true, reduction="mean")
        weight_d, weight_s = loss_d - loss, loss_s - loss
        # the authors' torch.zeros(1) is float32 and, being 1-d, sets torch.where's dtype: in the suite's float64
        # steps it would round the weights to float32 (measured: losses off by 3e-8 relative); in their float32
        # runs the zeros' dtype changes nothing. So the zeros take the loss's dtype here.
        zero = torch.zeros(1, dtype=weight_d.dtype, device=weight_d.device)
        weight_d = torch.where(weight_d > 0, weight_d, zero)
        weight_s = torch.where(weight_s > 0, weight_s, zero)
        return loss + loss_d * weight_d + loss_s * weight_s


def copy_cross(theirs, ours, where):
    if theirs.num_cross_layers != ours.num_layers:
        raise ValueError(f"{where}: {theirs.num_cross_layers} layers in the authors' code vs {ours.num_layers}")
    copy_leaves(theirs.w, ours.w, f"{where}.w")
    for i in range(theirs.num_cross_layers):
        put(theirs.b[i], ours.bias[i], f"{where}.bias[{i}]")
    copy_leaves(theirs.layer_norm, ours.layer_norm or nn.ModuleList(), f"{where}.layer_norm")
    copy_leaves(theirs.batch_norm, ours.batch_norm or nn.ModuleList(), f"{where}.batch_norm")
    copy_leaves(getattr(theirs, theirs.out), ours.fc, f"{where}.fc")


def transplant_fcn(ours, theirs):
    copy_embedding(theirs.embedding_layer.embedding_layer, ours.embedding, "embedding")
    copy_cross(theirs.ECN, ours.ecn, "ecn")
    copy_cross(theirs.LCN, ours.lcn, "lcn")


REFERENCE = Reference(DCNv3, transplant_fcn, {
    "one_head_ln": {**E, "num_heads": 1, "num_deep_cross_layers": 3, "num_shallow_cross_layers": 4,
                    "deep_dropout": 0.0, "shallow_dropout": 0.0, "layer_norm": True, "batch_norm": False},
    "four_heads_ln_bn": {**E, "num_heads": 4, "num_deep_cross_layers": 4, "num_shallow_cross_layers": 5,
                         "deep_dropout": 0.0, "shallow_dropout": 0.0, "layer_norm": True, "batch_norm": True},
    "three_heads_plain": {**E, "num_heads": 3, "num_deep_cross_layers": 2, "num_shallow_cross_layers": 1,
                          "deep_dropout": 0.0, "shallow_dropout": 0.0, "layer_norm": False, "batch_norm": False},
}, "salmon1802/FCN:src/DCNv3.py@1835ffe0")
