"""deepcrossing: FuxiCTR 2.3.10 composition following model_zoo/DeepCrossing/src/DeepCrossing.py, and the transplant
of our weights into it."""

from __future__ import annotations

from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr.pytorch.torch_utils import get_activation
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves
from torch import nn


class ResidualBlock(nn.Module):
    """DeepCrossing's residual unit as model_zoo/DeepCrossing/src/DeepCrossing.py defines it: Linear (in -> hidden),
    activation, Linear (hidden -> in), + input when use_residual, BatchNorm, the same activation module again,
    dropout."""

    def __init__(self, input_dim, hidden_dim, hidden_activation, dropout_rate, use_residual, batch_norm):
        super().__init__()
        self.activation_layer = get_activation(hidden_activation)
        self.layer = nn.Sequential(nn.Linear(input_dim, hidden_dim), self.activation_layer,
                                   nn.Linear(hidden_dim, input_dim))
        self.use_residual = use_residual
        self.batch_norm = nn.BatchNorm1d(input_dim) if batch_norm else None
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else None

    def forward(self, X):
        out = self.layer(X)
        if self.use_residual:
            out = out + X
        if self.batch_norm is not None:
            out = self.batch_norm(out)
        out = self.activation_layer(out)
        return self.dropout(out) if self.dropout is not None else out


class DeepCrossing(RefModel):  # model_zoo/DeepCrossing/src/DeepCrossing.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])
        d = fmap.num_fields * p["embedding_dim"]
        self.crossing_layer = nn.Sequential(
            *[ResidualBlock(d, h, p["activation"], p["dropout"], p["use_residual"], p["batch_norm"])
              for h in p["residual_blocks"]],
            nn.Linear(d, 1),
        )
        self.finish(lr)

    def null_biases(self):
        """The bias of each unit's second Linear when BatchNorm follows (after the residual sum, which adds the
        same thing to every row): BatchNorm removes it, its true gradient is zero (biases_before_batchnorm)."""
        return {f"crossing_layer.{i}.layer.2.bias" for i, b in enumerate(self.crossing_layer[:-1])
                if b.batch_norm is not None}

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        y = self.crossing_layer(self.embedding_layer(X).flatten(start_dim=1))
        return {"y_pred": self.output_activation(y)}


def transplant_deepcrossing(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_leaves(theirs.crossing_layer, ours.crossing_layer, "crossing_layer")


_CASE = {**E, "residual_blocks": (200, 100), "activation": "relu", "batch_norm": True, "dropout": 0.0,
         "use_residual": True}
REFERENCE = Reference(DeepCrossing, transplant_deepcrossing, {
    "residual-bn": _CASE,
    "no-residual": {**_CASE, "use_residual": False},
    "tanh-no-bn": {**_CASE, "activation": "tanh", "batch_norm": False},
}, "model_zoo/DeepCrossing/src/DeepCrossing.py")
