"""apg_dcnv2: FuxiCTR 2.3.10 composition following model_zoo/APG/src/APG_DCNv2.py (its APG layers from
model_zoo/APG/src/APG.py, written in fuxictr_apg.py), and the transplant of our weights into it. FuxiCTR's
``use_low_rank_mixture`` (CrossNetMix) is not a switch of ours (the full-rank CrossNetV2 only)."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import CrossNetV2, FeatureEmbedding
from fuxictr_apg import apg_mlp, condition_setup, condition_z, transplant_apg_mlp, transplant_conditions
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves
from torch import nn


class APG_DCNv2(RefModel):  # model_zoo/APG/src/APG_DCNv2.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])  # .embedding_layer: the dict
        condition_dim = condition_setup(self, fmap, p)
        d = fmap.sum_emb_out_dim()
        self.crossnet = CrossNetV2(d, p["num_cross_layers"])
        self.model_structure = s = p["model_structure"]
        stacked, parallel = list(p["stacked_dnn_hidden_units"]), list(p["parallel_dnn_hidden_units"])
        self.stacked_dnn = self.parallel_dnn = None
        if s in ("stacked", "stacked_parallel"):
            self.stacked_dnn = apg_mlp(p, d, stacked, condition_dim, None)
            final = stacked[-1]
        if s in ("parallel", "stacked_parallel"):
            self.parallel_dnn = apg_mlp(p, d, parallel, condition_dim, None)
            final = d + parallel[-1]
        if s == "stacked_parallel":
            final = stacked[-1] + parallel[-1]
        if s == "crossnet_only":
            final = d
        self.fc = nn.Linear(final, 1)
        self.finish(lr)

    def null_biases(self):
        out = set()
        for name in ("stacked_dnn", "parallel_dnn"):
            if getattr(self, name) is not None:
                out |= getattr(self, name).null_biases(name)
        return out

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb_dict = self.embedding_layer.embedding_layer(X)
        z = condition_z(self, X, emb_dict)
        emb = self.embedding_layer.embedding_layer.dict2tensor(emb_dict, flatten_emb=True)
        cross = self.crossnet(emb)
        s = self.model_structure
        if s == "crossnet_only":
            out = cross
        elif s == "stacked":
            out = self.stacked_dnn(cross, z)
        elif s == "parallel":
            out = torch.cat([cross, self.parallel_dnn(emb, z)], dim=-1)
        else:
            out = torch.cat([self.stacked_dnn(cross, z), self.parallel_dnn(emb, z)], dim=-1)
        return {"y_pred": self.output_activation(self.fc(out))}


def transplant_apg_dcnv2(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_leaves(theirs.crossnet, ours.crossnet, "crossnet")
    for name in ("stacked_dnn", "parallel_dnn"):
        t, o = getattr(theirs, name), getattr(ours, name)
        if (t is None) != (o is None):
            raise ValueError(f"apg_dcnv2: {name} present in one side only")
        if t is not None:
            transplant_apg_mlp(t, o, name)
    copy_leaves(theirs.fc, ours.fc, "fc")
    transplant_conditions(theirs, ours)


_APG = {"hypernet_hidden_units": (64, 32), "hypernet_activation": "relu", "hypernet_dropout": 0.0,
        "condition_features": (), "condition_mode": "self-wise", "new_condition_emb": False,
        "rank_k": (8,), "overparam_p": (64,), "generate_bias": True}
_NET = {**E, "num_cross_layers": 3, "stacked_dnn_hidden_units": (100, 100),
        "parallel_dnn_hidden_units": (100, 100), "activation": "relu", "dropout": 0.0, "batch_norm": False}

REFERENCE = Reference(APG_DCNv2, transplant_apg_dcnv2, {
    "parallel-self-wise": {**_NET, **_APG, "model_structure": "parallel"},
    "stacked-low-rank-bn": {**_NET, **_APG, "model_structure": "stacked", "overparam_p": (), "batch_norm": True},
    "stacked-parallel-group-wise": {**_NET, **_APG, "model_structure": "stacked_parallel",
                                    "stacked_dnn_hidden_units": (64, 32), "parallel_dnn_hidden_units": (48,),
                                    "rank_k": (), "overparam_p": (), "generate_bias": False,
                                    "hypernet_hidden_units": (), "condition_mode": "group-wise",
                                    "condition_features": ("user", "city"), "new_condition_emb": True},
    "crossnet-only": {**_NET, **_APG, "model_structure": "crossnet_only", "num_cross_layers": 2},
}, "model_zoo/APG/src/APG_DCNv2.py")
