"""dssm: FuxiCTR 2.3.10 composition following model_zoo/DSSM/src/DSSM.py, and the transplant of our weights into
it. The cases run on BARS's Frappe_x1 grouping (conf/data/frappe_x1.yaml: every field in the user or item group),
the one the published DSSM runs used."""

from __future__ import annotations

from types import SimpleNamespace

from fuxictr.pytorch.layers import FeatureEmbeddingDict
from fuxictr_reference import FRAPPE_X1_GROUPS, E, Reference, RefModel, copy_embedding, copy_leaves, mlp_block


class DSSM(RefModel):  # model_zoo/DSSM/src/DSSM.py: two MLP towers over the user / item sources, dot product
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim = p["embedding_dim"]
        self.embedding_layer = FeatureEmbeddingDict(fmap, dim)
        n = {s: sum(spec["source"] == s for spec in fmap.features.values()) for s in ("user", "item")}
        assert n["user"] > 0 and n["item"] > 0, "feature source is not configured"
        towers = {}
        for side in ("user", "item"):
            units = list(p[f"{side}_tower_units"])
            towers[side] = mlp_block(dim * n[side], units[:-1], p[f"{side}_tower_activation"], p["batch_norm"],
                                     p[f"{side}_tower_dropout"], output_dim=units[-1])
        self.user_tower, self.item_tower = towers["user"], towers["item"]
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        u = self.user_tower(self.embedding_layer.dict2tensor(emb, feature_source="user").flatten(start_dim=1))
        v = self.item_tower(self.embedding_layer.dict2tensor(emb, feature_source="item").flatten(start_dim=1))
        return {"y_pred": self.output_activation((u * v).sum(dim=-1, keepdim=True))}


def transplant_dssm(ours, theirs):
    # FeatureEmbeddingDict is the table set FuxiCTR's FeatureEmbedding wraps (copy_embedding reads .embedding_layer)
    copy_embedding(SimpleNamespace(embedding_layer=theirs.embedding_layer), ours.embedding, "embedding")
    copy_leaves(theirs.user_tower, ours.user_tower, "user_tower")
    copy_leaves(theirs.item_tower, ours.item_tower, "item_tower")


_TOWERS = {"user_tower_activation": "relu", "item_tower_activation": "relu", "user_tower_dropout": 0.0,
           "item_tower_dropout": 0.0}
REFERENCE = Reference(DSSM, transplant_dssm, {
    "bn-400x3": {**E, **_TOWERS, "user_tower_units": (400, 400, 400), "item_tower_units": (400, 400, 400),
                 "batch_norm": True},
    "no-bn-uneven-towers": {**E, **_TOWERS, "user_tower_units": (128, 32), "item_tower_units": (64, 64, 32),
                            "item_tower_activation": "tanh", "batch_norm": False},
    "single-linear": {**E, **_TOWERS, "user_tower_units": (16,), "item_tower_units": (16,), "batch_norm": False},
}, "model_zoo/DSSM/src/DSSM.py", groups=FRAPPE_X1_GROUPS)
