"""fwfm: FuxiCTR 2.3.10 composition following model_zoo/FwFM/src/FwFM.py, and the transplant of our weights into it."""

from __future__ import annotations

from fuxictr.pytorch.layers import FeatureEmbedding, InnerProductInteraction
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves
from torch import nn


class FwFM(RefModel):  # model_zoo/FwFM/src/FwFM.py (its one `regularizer` = our two, set by the test)
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim, f = p["embedding_dim"], fmap.num_fields
        self.interaction_weight = nn.Linear(f * (f - 1) // 2, 1)
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        self.inner_product_layer = InnerProductInteraction(f, output="inner_product")
        self._linear_type = p["linear_type"]
        if self._linear_type == "LW":
            self.linear_weight_layer = FeatureEmbedding(fmap, 1, use_pretrain=False)
        elif self._linear_type == "FeLV":
            self.linear_weight_layer = FeatureEmbedding(fmap, dim)
        else:
            self.linear_weight_layer = nn.Linear(f * dim, 1, bias=False)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        y = self.interaction_weight(self.inner_product_layer(emb))  # the bias lives here
        if self._linear_type == "LW":
            y = y + self.linear_weight_layer(X).sum(dim=1)
        elif self._linear_type == "FeLV":
            y = y + (emb * self.linear_weight_layer(X)).sum((1, 2)).view(-1, 1)
        else:
            y = y + self.linear_weight_layer(emb.flatten(start_dim=1))
        return {"y_pred": self.output_activation(y)}


def transplant_fwfm(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_leaves(theirs.interaction_weight, ours.interaction_weight, "interaction_weight")
    if theirs._linear_type == "LW":
        copy_embedding(theirs.linear_weight_layer, ours.linear.embedding, "linear.embedding")
    elif theirs._linear_type == "FeLV":
        copy_embedding(theirs.linear_weight_layer, ours.linear_embedding, "linear_embedding")
    else:
        copy_leaves(theirs.linear_weight_layer, ours.linear, "linear")


REFERENCE = Reference(FwFM, transplant_fwfm, {t: {**E, "linear_type": t} for t in ("LW", "FeLV", "FiLV")},
                      "model_zoo/FwFM/src/FwFM.py")
