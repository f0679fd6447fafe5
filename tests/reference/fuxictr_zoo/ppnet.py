"""ppnet: FuxiCTR 2.3.10 composition following model_zoo/PEPNet/src/PPNet.py (its PPNet_MLP and GateNU written
here from that file), and the transplant of our weights into it. Our ``gate_prior_groups`` (the fields of feature
groups) become FuxiCTR ``gate_priors`` field names (the fields whose ``source`` is such a group); the cases run on
BARS's Frappe_x1 grouping (conf/data/frappe_x1.yaml). No case without priors: FuxiCTR's ``gate_priors=[]`` embeds
every field for the gates while sizing their input for none (a shape error), so it has no counterpart."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr.pytorch.torch_utils import get_activation
from fuxictr_reference import FRAPPE_X1_GROUPS, E, Reference, RefModel, copy_embedding, copy_leaves
from torch import nn


class GateNU(nn.Module):
    """``2 * sigmoid(Linear(act(Linear(x))))`` (hidden width = output width when not given)."""

    def __init__(self, input_dim, hidden_dim, output_dim, hidden_activation="ReLU"):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(input_dim, hidden_dim or output_dim), get_activation(hidden_activation),
                                  nn.Linear(hidden_dim or output_dim, output_dim), nn.Sigmoid())

    def forward(self, x):
        return self.gate(x) * 2


class PPNetMLP(nn.Module):
    """PPNet_MLP: per hidden layer ``(Linear -> BN? -> act -> Dropout?)(h) * GateNU_l([stop_grad(x); prior])``, then
    an output Linear; the gates are registered before the layers, as in the model_zoo file."""

    def __init__(self, input_dim, gate_input_dim, gate_hidden_dim, hidden_units, activation, dropout, batch_norm):
        super().__init__()
        self.gate_layers = nn.ModuleList()
        self.mlp_layers = nn.ModuleList()
        dims = [input_dim, *hidden_units]
        for i in range(len(hidden_units)):
            layers = [nn.Linear(dims[i], dims[i + 1])]
            if batch_norm:
                layers.append(nn.BatchNorm1d(dims[i + 1]))
            layers.append(get_activation(activation, dims[i + 1]))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            self.mlp_layers.append(nn.Sequential(*layers))
            self.gate_layers.append(GateNU(gate_input_dim, gate_hidden_dim, dims[i + 1]))
        self.mlp_layers.append(nn.Linear(dims[-1], 1))

    def forward(self, feature_emb, gate_emb):
        gate_input = torch.cat([feature_emb.detach(), gate_emb], dim=-1)
        h = feature_emb
        for i in range(len(self.gate_layers)):
            h = self.mlp_layers[i](h) * self.gate_layers[i](gate_input)
        return self.mlp_layers[-1](h)


class PPNet(RefModel):  # model_zoo/PEPNet/src/PPNet.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        groups = set(p["gate_prior_groups"])
        priors = list(p["gate_priors"]) + [n for n, s in fmap.features.items() if s["source"] in groups]
        self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])
        self.gate_embed_layer = FeatureEmbedding(fmap, p["gate_emb_dim"], required_feature_columns=priors)
        x_dim = fmap.sum_emb_out_dim()
        self.ppn = PPNetMLP(x_dim, x_dim + len(priors) * p["gate_emb_dim"], p["gate_hidden_dim"],
                            list(p["hidden_units"]), p["activation"], p["dropout"], p["batch_norm"])
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        y = self.ppn(self.embedding_layer(X, flatten_emb=True), self.gate_embed_layer(X, flatten_emb=True))
        return {"y_pred": self.output_activation(y)}


def transplant_ppnet(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_embedding(theirs.gate_embed_layer, ours.gate_embedding, "gate_embedding")
    t, o = theirs.ppn, ours.ppn
    if len(t.gate_layers) != len(o.gate_layers):
        raise ValueError(f"ppnet: {len(t.gate_layers)} gated layers in FuxiCTR vs {len(o.gate_layers)} in bars")
    for i in range(len(t.gate_layers)):
        copy_leaves(t.mlp_layers[i], o.mlp_layers[i], f"ppn.mlp_layers[{i}]")
        copy_leaves(t.gate_layers[i], o.gate_layers[i], f"ppn.gate_layers[{i}]")
    copy_leaves(t.mlp_layers[-1], o.mlp_layers[-1], "ppn.mlp_layers[-1]")


_C = {**E, "gate_emb_dim": 10, "gate_priors": (), "gate_prior_groups": (), "gate_hidden_dim": 64,
      "hidden_units": (64, 64, 64), "activation": "relu", "dropout": 0.0, "batch_norm": False}
REFERENCE = Reference(PPNet, transplant_ppnet, {
    "priors-user-item": {**_C, "gate_priors": ("user", "item")},
    "priors-out-of-order-bn": {**_C, "gate_priors": ("city", "weekday"), "batch_norm": True, "gate_emb_dim": 6,
                               "gate_hidden_dim": 32, "hidden_units": (400, 400, 400)},
    "prior-group-item": {**_C, "gate_prior_groups": ("item",), "activation": "tanh", "hidden_units": (128, 64)},
    "priors-and-group": {**_C, "gate_priors": ("homework",), "gate_prior_groups": ("item",), "gate_hidden_dim": 16},
}, "model_zoo/PEPNet/src/PPNet.py", groups=FRAPPE_X1_GROUPS)
