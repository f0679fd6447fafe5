"""flen: FuxiCTR 2.3.10 composition following model_zoo/FLEN/src/FLEN.py, and the transplant of our weights into
it. The cases run on Frappe's fields in three groups (user / item / context: FuxiCTR cannot run FLEN with an empty
group, so not on BARS's Frappe_x1 grouping, which has no context group)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from fuxictr.pytorch.layers import (
    FeatureEmbeddingDict,
    InnerProductInteraction,
    LogisticRegression,
    MLP_Block,
)
from fuxictr_reference import (
    FRAPPE_THREE_GROUPS,
    E,
    Reference,
    RefModel,
    copy_embedding,
    copy_leaves,
    copy_lr,
    put,
)
from torch import nn


class FLEN(RefModel):  # model_zoo/FLEN/src/FLEN.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim, units = p["embedding_dim"], list(p["dnn_hidden_units"])
        self.embedding_layer = FeatureEmbeddingDict(fmap, dim)
        self.lr_layer = LogisticRegression(fmap)
        self.mf_interaction = InnerProductInteraction(num_fields=3, output="elementwise_product")
        self.fm_interaction = InnerProductInteraction(fmap.num_fields, output="bi_interaction")
        self.dnn = MLP_Block(input_dim=dim * fmap.num_fields, output_dim=None, hidden_units=units,
                             hidden_activations=p["activation"], output_activation=None, dropout_rates=p["dropout"],
                             batch_norm=p["batch_norm"])
        self.r_ij = nn.Linear(3, 1, bias=False)
        self.r_mm = nn.Linear(3, 1, bias=False)
        self.w_FwBI = nn.Sequential(nn.Linear(dim + 1, dim + 1, bias=False), nn.ReLU())
        self.w_F = nn.Linear(units[-1] + dim + 1, 1, bias=False)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        d = self.embedding_layer(X)
        user, item, context = (self.embedding_layer.dict2tensor(d, feature_source=s) for s in ("user", "item", "context"))
        emb = self.embedding_layer.dict2tensor(d)
        lr_out = self.lr_layer(X)
        field_emb = torch.stack([user.sum(dim=1), item.sum(dim=1), context.sum(dim=1)], dim=1)
        h_mf = self.r_ij(self.mf_interaction(field_emb).transpose(1, 2))
        h_fm = self.r_mm(torch.stack([self.fm_interaction(g) for g in (user, item, context)], dim=1).transpose(1, 2))
        h_fwbi = self.w_FwBI(torch.cat([lr_out, (h_mf + h_fm).squeeze(-1)], dim=-1))
        y = self.w_F(torch.cat([h_fwbi, self.dnn(emb.flatten(start_dim=1))], dim=-1))
        return {"y_pred": self.output_activation(y)}


def transplant_flen(ours, theirs):
    copy_embedding(SimpleNamespace(embedding_layer=theirs.embedding_layer), ours.embedding, "embedding")
    copy_lr(theirs.lr_layer, ours.lr, "lr")
    put(theirs.mf_interaction.triu_index, torch.stack([ours.pair_p, ours.pair_q]), "group pairs")  # frozen int
    for name in ("r_ij", "r_mm", "w_FwBI", "w_F"):
        copy_leaves(getattr(theirs, name), getattr(ours, name), name)
    copy_leaves(theirs.dnn, ours.dnn, "dnn")


_C = {**E, "activation": "relu", "dropout": 0.0}
REFERENCE = Reference(FLEN, transplant_flen, {
    "bn-400x3": {**_C, "dnn_hidden_units": (400, 400, 400), "batch_norm": True},
    "tanh-no-bn": {**_C, "dnn_hidden_units": (64, 32), "activation": "tanh", "batch_norm": False},
}, "model_zoo/FLEN/src/FLEN.py", groups=FRAPPE_THREE_GROUPS)
