"""sharebottom: FuxiCTR 2.3.10 composition following model_zoo/multitask/ShareBottom/src/ShareBottom.py (on the
installed MultiTaskModel), and the transplant of our weights into it. Multi-task: the cases run on Frappe's label
and a synthetic second one (fuxictr_reference.with_second_label)."""

from __future__ import annotations

from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr_reference import E, Reference, RefMultiTaskModel, copy_embedding, copy_leaves, mlp_block
from torch import nn


class ShareBottom(RefMultiTaskModel):  # model_zoo/multitask/ShareBottom/src/ShareBottom.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        act, drop, bn = p["activation"], p["dropout"], p["batch_norm"]
        self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])
        self.bottom = mlp_block(p["embedding_dim"] * fmap.num_fields, p["bottom_hidden_units"], act, bn, drop)
        self.tower = nn.ModuleList(mlp_block(p["bottom_hidden_units"][-1], p["tower_hidden_units"], act, bn, drop,
                                             output_dim=1) for _ in range(self.num_tasks))
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        bottom = self.bottom(self.embedding_layer(X).flatten(start_dim=1))
        labels = self.feature_map.labels
        return {f"{labels[i]}_pred": self.output_activation[i](self.tower[i](bottom)) for i in range(self.num_tasks)}


def transplant_sharebottom(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_leaves(theirs.bottom, ours.bottom, "bottom")
    for i, (a, b) in enumerate(zip(theirs.tower, ours.towers, strict=True)):
        copy_leaves(a, b, f"tower[{i}]")


REFERENCE = Reference(ShareBottom, transplant_sharebottom, {
    "prelu": {**E, "bottom_hidden_units": (64, 32), "tower_hidden_units": (16,), "activation": "prelu",
              "batch_norm": False, "dropout": 0.0},
    # batch norm on a one-layer bottom: each Linear bias before a BatchNorm has a zero true gradient and wanders
    # under Adam differently in the two libraries; it enters the loss through the net regularizer. With the
    # 4 such biases of (64, 32) + (16,) towers the losses drifted to 1.9e-9 relative (step 8); with those biases
    # frozen on both sides they agree to 4e-16 over the 20 steps (measured). One BN layer keeps the drift smaller.
    "bn-no-tower-layers": {**E, "bottom_hidden_units": (32,), "tower_hidden_units": (), "activation": "relu",
                           "batch_norm": True, "dropout": 0.0},
}, "model_zoo/multitask/ShareBottom/src/ShareBottom.py", multi_task=True)
