"""hfm: FuxiCTR 2.3.10 composition following model_zoo/HFM/src/HFM.py (``use_dnn=False``), and the transplant of
our weights into it. The same composition with ``use_dnn=True`` is hfm_plus's reference (fuxictr_zoo/hfm_plus.py)."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding, HolographicInteraction, LogisticRegression
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves, copy_lr, mlp_block, put
from torch import nn


class HFM(RefModel):  # model_zoo/HFM/src/HFM.py; use_dnn = our params have hidden_units (hfm_plus)
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim, f = p["embedding_dim"], fmap.num_fields
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        self.lr_layer = LogisticRegression(fmap)
        self.hfm_layer = HolographicInteraction(f, interaction_type=p["interaction_type"])
        self.use_dnn = "hidden_units" in p
        if self.use_dnn:
            self.dnn = mlp_block(f * (f - 1) // 2 * dim, p["hidden_units"], p["activation"], p["batch_norm"],
                                 p["dropout"], output_dim=1)
        else:
            self.proj_h = nn.Linear(dim, 1, bias=False)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        pairs = self.hfm_layer(self.embedding_layer(X))  # [B, P, D]
        out = self.dnn(pairs.flatten(start_dim=1)) if self.use_dnn else self.proj_h(pairs.sum(dim=1))
        return {"y_pred": self.output_activation(out + self.lr_layer(X))}


def restore_holographic(layer: HolographicInteraction, num_fields: int) -> None:
    """The layer's constant (requires_grad=False) parameters: the pair indices and, for circular correlation,
    the conjugation sign, as FuxiCTR's constructor sets them (the tests poison every tensor first)."""
    put(layer.triu_index, torch.triu_indices(num_fields, num_fields, offset=1), "hfm_layer.triu_index")
    if hasattr(layer, "conj_sign"):
        put(layer.conj_sign, torch.tensor([1.0, -1.0]), "hfm_layer.conj_sign")


def transplant_hfm(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_lr(theirs.lr_layer, ours.lr, "lr")
    if ours.hfm.interaction_type != theirs.hfm_layer.interaction_type:
        raise ValueError("hfm: interaction types differ")
    restore_holographic(theirs.hfm_layer, ours.embedding.num_fields)
    if theirs.use_dnn != hasattr(ours, "dnn"):
        raise ValueError("hfm: DNN present in one side only")
    if theirs.use_dnn:
        copy_leaves(theirs.dnn, ours.dnn, "dnn")
    else:
        put(theirs.proj_h.weight, ours.proj_h.weight, "proj_h")


REFERENCE = Reference(HFM, transplant_hfm, {
    t: {**E, "interaction_type": t} for t in ("circular_convolution", "circular_correlation", "hadamard_product")
}, "model_zoo/HFM/src/HFM.py")
