"""finalnet: FuxiCTR 2.3.10 composition following model_zoo/FinalNet/src/FinalNet.py, and the transplant of our
weights into it. FeatureGating, FinalBlock and FactorizedInteraction are defined in the model_zoo file, so they are
written here from that file (FinalBlock keeps its layers, norms, dropouts and activations in separate ModuleLists,
as FuxiCTR does). The training loss is the model_zoo file's ``add_loss`` (2.3.10 signature): for "2B" the BCE of
the mean prediction plus each block's BCE against the detached mean prediction; ``BaseModel.train_step`` calls it,
so the 20-step comparison runs FuxiCTR's own loss against ours (``FinalNet.training_loss``)."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr.pytorch.torch_utils import get_activation
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves, put
from torch import nn

from bars.models.layers import FactorizedInteraction as OurFactorizedInteraction


class FeatureGating(nn.Module):
    def __init__(self, num_fields, gate_residual="concat"):
        super().__init__()
        self.linear = nn.Linear(num_fields, num_fields)
        self.gate_residual = gate_residual

    def init_weights(self):
        nn.init.zeros_(self.linear.weight)
        nn.init.ones_(self.linear.bias)

    def forward(self, feature_emb):
        gates = self.linear(feature_emb.transpose(1, 2)).transpose(1, 2)
        if self.gate_residual == "concat":
            return torch.cat([feature_emb, feature_emb * gates], dim=1)
        return feature_emb + feature_emb * gates


class FactorizedInteraction(nn.Module):
    def __init__(self, input_dim, output_dim, bias=True, residual_type="sum"):
        super().__init__()
        self.residual_type = residual_type
        if residual_type == "sum":
            output_dim = output_dim * 2
        self.linear = nn.Linear(input_dim, output_dim, bias=bias)

    def forward(self, x):
        h2, h1 = torch.chunk(self.linear(x), chunks=2, dim=-1)
        if self.residual_type == "concat":
            return torch.cat([h2, h1 * h2], dim=-1)
        return h2 + h1 * h2


class FinalBlock(nn.Module):
    def __init__(self, input_dim, hidden_units, hidden_activations, dropout_rates, batch_norm, residual_type):
        super().__init__()
        dropout_rates = [dropout_rates] * len(hidden_units)
        hidden_activations = [hidden_activations] * len(hidden_units)
        self.layer, self.norm, self.dropout, self.activation = (nn.ModuleList() for _ in range(4))
        units = [input_dim, *hidden_units]
        for i in range(len(units) - 1):
            self.layer.append(FactorizedInteraction(units[i], units[i + 1], residual_type=residual_type))
            if batch_norm:
                self.norm.append(nn.BatchNorm1d(units[i + 1]))
            if dropout_rates[i] > 0:
                self.dropout.append(nn.Dropout(dropout_rates[i]))
            self.activation.append(get_activation(hidden_activations[i]))

    def forward(self, X):
        for i in range(len(self.layer)):
            X = self.layer[i](X)
            if len(self.norm) > i:
                X = self.norm[i](X)
            if self.activation[i] is not None:
                X = self.activation[i](X)
            if len(self.dropout) > i:
                X = self.dropout[i](X)
        return X


class FinalNet(RefModel):  # model_zoo/FinalNet/src/FinalNet.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        d, f = p["embedding_dim"], fmap.num_fields
        self.embedding_layer = FeatureEmbedding(fmap, d)
        self.use_feature_gating = p["use_feature_gating"]
        if self.use_feature_gating:
            self.feature_gating = FeatureGating(f, gate_residual="concat")
        self.block_type = p["block_type"]
        self.block1 = FinalBlock(d * f * (2 if self.use_feature_gating else 1), list(p["block1_hidden_units"]),
                                 p["block1_activation"], p["block1_dropout"], p["batch_norm"], p["residual_type"])
        self.fc1 = nn.Linear(p["block1_hidden_units"][-1], 1)
        if self.block_type == "2B":
            self.block2 = FinalBlock(d * f, list(p["block2_hidden_units"]), p["block2_activation"],
                                     p["block2_dropout"], p["batch_norm"], p["residual_type"])
            self.fc2 = nn.Linear(p["block2_hidden_units"][-1], 1)
        self.finish(lr)

    def forward(self, inputs):
        feature_emb = self.embedding_layer(self.get_inputs(inputs))
        y1 = y2 = None
        if self.block_type == "1B":
            y_pred = self.forward1(feature_emb)
        else:
            y1 = self.forward1(feature_emb)
            y2 = self.fc2(self.block2(feature_emb.flatten(start_dim=1)))
            y_pred = 0.5 * (y1 + y2)
        return {"y_pred": self.output_activation(y_pred), "y1": y1, "y2": y2}

    def forward1(self, X):
        if self.use_feature_gating:
            X = self.feature_gating(X)
        return self.fc1(self.block1(X.flatten(start_dim=1)))

    def add_loss(self, return_dict, y_true):
        loss = self.loss_fn(return_dict["y_pred"], y_true, reduction="mean")
        if self.block_type == "2B":
            y1 = self.output_activation(return_dict["y1"])
            y2 = self.output_activation(return_dict["y2"])
            loss1 = self.loss_fn(y1, return_dict["y_pred"].detach(), reduction="mean")
            loss2 = self.loss_fn(y2, return_dict["y_pred"].detach(), reduction="mean")
            loss = loss + loss1 + loss2
        return loss


def _copy_block(dst: FinalBlock, src, where: str) -> None:
    """FuxiCTR's FinalBlock (layers, then norms, in separate lists) <- our FinalBlock (one Sequential per layer:
    factorized interaction, BatchNorm, ...): the i-th factorized Linear and the i-th BatchNorm pair up."""
    ours_fi = [m for m in src.net if isinstance(m, OurFactorizedInteraction)]
    ours_bn = [m for m in src.net if isinstance(m, nn.BatchNorm1d)]
    if len(ours_fi) != len(dst.layer) or len(ours_bn) != len(dst.norm):
        raise ValueError(f"{where}: {len(dst.layer)}/{len(dst.norm)} layers/norms in FuxiCTR vs "
                         f"{len(ours_fi)}/{len(ours_bn)} in bars")
    for i, (a, b) in enumerate(zip(dst.layer, ours_fi, strict=True)):
        copy_leaves(a.linear, b.linear, f"{where}.layer[{i}]")
    for i, (a, b) in enumerate(zip(dst.norm, ours_bn, strict=True)):
        copy_leaves(a, b, f"{where}.norm[{i}]")


def transplant_finalnet(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    if ours.gating is not None:
        put(theirs.feature_gating.linear.weight, ours.gating.weight, "gating.weight")
        put(theirs.feature_gating.linear.bias, ours.gating.bias, "gating.bias")
    _copy_block(theirs.block1, ours.block1, "block1")
    copy_leaves(theirs.fc1, ours.fc1, "fc1")
    if ours.block2 is not None:
        _copy_block(theirs.block2, ours.block2, "block2")
        copy_leaves(theirs.fc2, ours.fc2, "fc2")


_NO_BLOCK2 = {"block2_hidden_units": None, "block2_activation": None, "block2_dropout": None}
REFERENCE = Reference(FinalNet, transplant_finalnet, {
    "2B_gated": {**E, "block_type": "2B", "batch_norm": True, "use_feature_gating": True,
                 "block1_hidden_units": (64, 32), "block1_activation": "relu", "block1_dropout": 0.0,
                 "block2_hidden_units": (32,), "block2_activation": "relu", "block2_dropout": 0.0,
                 "residual_type": "concat"},
    "2B_sum_plain": {**E, "block_type": "2B", "batch_norm": False, "use_feature_gating": False,
                     "block1_hidden_units": (30, 20), "block1_activation": None, "block1_dropout": 0.0,
                     "block2_hidden_units": (25,), "block2_activation": "tanh", "block2_dropout": 0.0,
                     "residual_type": "sum"},
    "1B_gated": {**E, "block_type": "1B", "batch_norm": True, "use_feature_gating": True,
                 "block1_hidden_units": (64, 64, 64), "block1_activation": None, "block1_dropout": 0.0,
                 **_NO_BLOCK2, "residual_type": "concat"},
}, "model_zoo/FinalNet/src/FinalNet.py")
