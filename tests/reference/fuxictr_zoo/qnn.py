"""qnn: FuxiCTR 2.3.10 composition following model_zoo/QNN/src/QNN_alpha.py (QNN-alpha), and the transplant of our
weights into it. QuadraticNeuralNetworks and QuadraticLayer are defined in the model_zoo file, so they are written
here from that file.

The model_zoo file targets FuxiCTR 2.0.1 and does not run on 2.3.10 as shipped: its forward calls
``embedding_layer(X, dynamic_emb_dim=True)`` (2.0.1's flag: concatenate the field embeddings on the last axis; here
``flatten_emb=True``, the same tensor) and its ``add_loss(inputs)`` has 2.0.1's signature (2.3.10's ``train_step``
calls ``add_loss(return_dict, y_true)``). The composition keeps the authors' computation under 2.3.10's signatures:
the same self-ensemble loss, ``BCE(p, y) + BCE(p1, sg(p)) + BCE(p2, sg(p))`` with ``p = (p1 + p2) / 2``. In
training mode it also returns ``y_pred`` = ``(y_pred1 + y_pred2) / 2`` (what that loss calls ``y_pred``), so the
suite's logit check can read it."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves
from torch import nn


class QuadraticLayer(nn.Module):
    def __init__(self, input_dim, num_fields, num_row=2, num_heads=2, batch_norm=False, net_dropout=0.1):
        super().__init__()
        self.linear = nn.Sequential(nn.Linear(input_dim, input_dim * num_row),
                                    nn.BatchNorm1d(input_dim * num_row) if batch_norm else nn.Identity(),
                                    nn.ReLU())
        if net_dropout > 0:
            self.dropout = nn.Dropout(net_dropout)
        self.net_dropout = net_dropout
        self.num_fields, self.num_row, self.num_heads, self.input_dim = num_fields, num_row, num_heads, input_dim
        self.embedding_dim = input_dim // num_fields
        self.head_dim = input_dim // num_heads

    def forward(self, x):
        ego_x = x
        x = x.view(-1, self.num_fields, self.embedding_dim)
        multihead_x = torch.stack(torch.tensor_split(x, self.num_heads, dim=-1), dim=1).view(
            -1, self.num_heads, self.head_dim)
        h = self.linear(ego_x).view(-1, self.num_heads, self.num_row, self.head_dim)
        if self.net_dropout > 0:
            h = self.dropout(h)
        return torch.einsum("bhd,bhrd->bhrd", multihead_x, h).sum(dim=-2).view(-1, self.input_dim) + ego_x


class QuadraticNeuralNetworks(nn.Module):
    def __init__(self, input_dim, num_fields, num_layers, net_dropout, num_heads, num_row, batch_norm):
        super().__init__()
        self.num_layers = num_layers
        self.dropout = nn.ModuleList()
        self.layer = nn.ModuleList()
        for _ in range(num_layers):
            self.layer.append(QuadraticLayer(input_dim, num_row=num_row, num_heads=num_heads, batch_norm=batch_norm,
                                             num_fields=num_fields, net_dropout=net_dropout))
            if net_dropout > 0:
                self.dropout.append(nn.Dropout(net_dropout))
        self.fc = nn.Linear(input_dim, 1)

    def forward(self, x):
        for i in range(self.num_layers):
            x = self.layer[i](x)
            if len(self.dropout) > i:
                x = self.dropout[i](x)
        return self.fc(x)


class QNN_alpha(RefModel):  # model_zoo/QNN/src/QNN_alpha.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])
        self.qnn = QuadraticNeuralNetworks(input_dim=fmap.sum_emb_out_dim(), num_fields=fmap.num_fields,
                                           num_layers=p["num_layers"], net_dropout=p["dropout"],
                                           num_heads=p["num_heads"], num_row=p["num_row"],
                                           batch_norm=p["batch_norm"])
        self.finish(lr)

    def forward(self, inputs):
        feature_emb = self.embedding_layer(self.get_inputs(inputs), flatten_emb=True)  # 2.0.1: dynamic_emb_dim
        if self.training:
            y_pred1 = self.output_activation(self.qnn(feature_emb))
            y_pred2 = self.output_activation(self.qnn(feature_emb))
            return {"y_pred1": y_pred1, "y_pred2": y_pred2, "y_pred": (y_pred1 + y_pred2) * 0.5}
        return {"y_pred": self.output_activation(self.qnn(feature_emb))}

    def add_loss(self, return_dict, y_true):
        y_pred1, y_pred2 = return_dict["y_pred1"], return_dict["y_pred2"]
        y_pred = (y_pred1 + y_pred2) * 0.5
        loss = self.loss_fn(y_pred, y_true, reduction="mean")
        loss1 = self.loss_fn(y_pred1, y_pred.detach(), reduction="mean")
        loss2 = self.loss_fn(y_pred2, y_pred.detach(), reduction="mean")
        return loss + loss1 + loss2


def transplant_qnn(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    for i, (a, b) in enumerate(zip(theirs.qnn.layer, ours.layers, strict=True)):
        copy_leaves(a.linear, b, f"layers[{i}]")  # Linear, then BatchNorm (when on), in both
    copy_leaves(theirs.qnn.fc, ours.fc, "fc")


REFERENCE = Reference(QNN_alpha, transplant_qnn, {
    "one_head_bn": {**E, "num_layers": 3, "num_heads": 1, "num_row": 3, "dropout": 0.0, "batch_norm": True},
    "two_heads": {**E, "num_layers": 2, "num_heads": 2, "num_row": 2, "dropout": 0.0, "batch_norm": False},
}, "model_zoo/QNN/src/QNN_alpha.py")
