"""apg_deepfm: FuxiCTR 2.3.10 composition following model_zoo/APG/src/APG_DeepFM.py (its APG layers from
model_zoo/APG/src/APG.py, written in fuxictr_apg.py), and the transplant of our weights into it."""

from __future__ import annotations

from fuxictr.pytorch.layers import FactorizationMachine, FeatureEmbedding
from fuxictr_apg import apg_mlp, condition_setup, condition_z, transplant_apg_mlp, transplant_conditions
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_lr


class APG_DeepFM(RefModel):  # model_zoo/APG/src/APG_DeepFM.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])  # .embedding_layer: the dict
        self.fm = FactorizationMachine(fmap)
        condition_dim = condition_setup(self, fmap, p)
        self.mlp = apg_mlp(p, fmap.sum_emb_out_dim(), p["hidden_units"], condition_dim, 1)
        self.finish(lr)

    def null_biases(self):
        return self.mlp.null_biases("mlp")

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb_dict = self.embedding_layer.embedding_layer(X)
        z = condition_z(self, X, emb_dict)
        emb = self.embedding_layer.embedding_layer.dict2tensor(emb_dict)
        y = self.fm(X, emb) + self.mlp(emb.flatten(start_dim=1), z)
        return {"y_pred": self.output_activation(y)}


def transplant_apg_deepfm(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_lr(theirs.fm.lr_layer, ours.lr, "lr")
    transplant_apg_mlp(theirs.mlp, ours.mlp, "mlp")
    transplant_conditions(theirs, ours)


_APG = {"hypernet_hidden_units": (64, 32), "hypernet_activation": "relu", "hypernet_dropout": 0.0,
        "condition_features": (), "condition_mode": "self-wise", "new_condition_emb": False,
        "rank_k": (8,), "overparam_p": (64,), "generate_bias": True}
_MLP = {**E, "hidden_units": (100, 100), "activation": "relu", "dropout": 0.0, "batch_norm": False}

REFERENCE = Reference(APG_DeepFM, transplant_apg_deepfm, {
    "self-wise-overparam": {**_MLP, **_APG},
    "self-wise-low-rank-bn-static-bias": {**_MLP, **_APG, "overparam_p": (), "rank_k": (4, 16),
                                          "generate_bias": False, "batch_norm": True},
    "group-wise-full-rank": {**_MLP, **_APG, "hidden_units": (32, 16), "rank_k": (), "overparam_p": (),
                             "hypernet_hidden_units": (), "condition_mode": "group-wise",
                             "condition_features": ("user", "daytime", "city")},
    "group-wise-own-emb-bn": {**_MLP, **_APG, "condition_mode": "group-wise", "condition_features": ("item",
                              "weather"), "new_condition_emb": True, "batch_norm": True},
}, "model_zoo/APG/src/APG_DeepFM.py")
