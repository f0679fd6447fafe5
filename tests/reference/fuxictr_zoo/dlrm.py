"""dlrm: FuxiCTR 2.3.10 composition following model_zoo/DLRM/src/DLRM.py, and the transplant of our weights into it."""

from __future__ import annotations

from fuxictr.pytorch.layers import FeatureEmbedding, InnerProductInteraction
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves, mlp_block
from torch import nn


class DLRM(RefModel):  # model_zoo/DLRM/src/DLRM.py
    """Categorical fields only: with numeric fields FuxiCTR 2.3.10's forward concatenates the 1-d numeric columns
    along the batch axis (``torch.cat(..., dim=-1)``) and fails (bars/models/dlrm.py), so there is no bottom MLP to
    compare. There the top MLP_Block ends with ``output_activation=self.output_activation``; here the sigmoid is
    applied in forward (the same function, and RefModel.logits can remove it)."""

    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        if any(f["type"] == "numeric" for f in fmap.features.values()):
            raise NotImplementedError("FuxiCTR 2.3.10 DLRM fails on numeric fields (see the class docstring)")
        dim, n = p["embedding_dim"], fmap.num_fields
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        self.interaction_op = p["interaction_op"]
        if self.interaction_op == "dot":
            self.interact = InnerProductInteraction(num_fields=n, output="inner_product")
            top_in = n * (n - 1) // 2
        else:
            self.interact = nn.Flatten(start_dim=1)
            top_in = n * dim
        self.top_mlp = mlp_block(top_in, p["top_mlp_units"], p["top_mlp_activation"], p["batch_norm"],
                                 p["top_mlp_dropout"], output_dim=1)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        return {"y_pred": self.output_activation(self.top_mlp(self.interact(self.embedding_layer(X))))}


def transplant_dlrm(ours, theirs):
    if ours.bottom_mlp is not None:
        raise ValueError("dlrm: numeric fields are not compared (FuxiCTR 2.3.10 fails on them)")
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_leaves(theirs.top_mlp, ours.top_mlp, "top_mlp")


_BOTTOM = {"bottom_mlp_units": (), "bottom_mlp_activation": "relu", "bottom_mlp_dropout": 0.0}
REFERENCE = Reference(DLRM, transplant_dlrm, {
    f"{op}-{'bn' if bn else 'no-bn'}": {**E, "top_mlp_units": (400, 400), "top_mlp_activation": "relu",
                                          "top_mlp_dropout": 0.0, **_BOTTOM, "interaction_op": op, "batch_norm": bn}
    for op in ("dot", "cat") for bn in (True, False)
}, "model_zoo/DLRM/src/DLRM.py")
