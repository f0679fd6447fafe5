"""afm: FuxiCTR 2.3.10 composition following model_zoo/AFM/src/AFM.py, and the transplant of our weights into it.

FuxiCTR builds the attention network and weight_p whatever use_attention says; unused (use_attention false) they are
still net-regularised. Our ``unused_attention_params: true`` (the default) builds them as well, so the
"no-attention" case compares them too (they are transplanted and must stay equal through the 20 steps). Its
non-default ``false`` (no unused parameters) has no FuxiCTR counterpart, so no case: with it, the loss lacks FuxiCTR's
``net_regularizer / 2 * ||unused||^2`` (Frappe, attention_dim 16, net regularizer 0.01: +0.0923 at step 1, +0.0839
at step 20, 11 % of the loss), the predictions and used weights stay equal (max diff 0.0 / 7e-18)."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding, InnerProductInteraction, LogisticRegression
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves, copy_lr, put
from torch import nn


class AFM(RefModel):  # model_zoo/AFM/src/AFM.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim = p["embedding_dim"]
        self.use_attention = p["use_attention"]
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        self.product_layer = InnerProductInteraction(fmap.num_fields, output="elementwise_product")
        self.lr_layer = LogisticRegression(fmap, use_bias=True)
        # built whatever use_attention says, as there
        self.attention = nn.Sequential(nn.Linear(dim, p["attention_dim"]), nn.ReLU(),
                                       nn.Linear(p["attention_dim"], 1, bias=False), nn.Softmax(dim=1))
        self.weight_p = nn.Linear(dim, 1, bias=False)
        self.dropout1 = nn.Dropout(p["attention_dropout"][0])
        self.dropout2 = nn.Dropout(p["attention_dropout"][1])
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        products = self.product_layer(self.embedding_layer(X))  # B x P x D
        if self.use_attention:
            weights = self.dropout1(self.attention(products))
            out = self.weight_p(self.dropout2(torch.sum(weights * products, dim=1)))
        else:
            out = torch.flatten(products, start_dim=1).sum(dim=-1).unsqueeze(-1)
        return {"y_pred": self.output_activation(self.lr_layer(X) + out)}


def transplant_afm(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    # FuxiCTR's pair indices are a frozen int Parameter: ours (the same pairs, same order) fill it
    put(theirs.product_layer.triu_index, torch.stack([ours.product.left, ours.product.right]), "product.pairs")
    copy_lr(theirs.lr_layer, ours.lr, "lr")
    if ours.attention is None:  # unused_attention_params false: FuxiCTR has no such structure
        raise ValueError("afm: no attention network in bars (unused_attention_params false); FuxiCTR builds it")
    if ours.cfg.use_attention != theirs.use_attention:
        raise ValueError("afm: use_attention differs")
    copy_leaves(theirs.attention, ours.attention, "attention")
    copy_leaves(theirs.weight_p, ours.weight_p, "weight_p")


REFERENCE = Reference(AFM, transplant_afm, {
    "attention": {**E, "attention_dim": 16, "attention_dropout": (0.0, 0.0), "use_attention": True,
                  "unused_attention_params": True},
    "no-attention": {**E, "attention_dim": 16, "attention_dropout": (0.0, 0.0), "use_attention": False,
                     "unused_attention_params": True},
}, "model_zoo/AFM/src/AFM.py")
