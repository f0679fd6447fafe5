"""ple: FuxiCTR 2.3.10 composition following model_zoo/multitask/PLE/src/PLE.py (its CGC_Layer written here from
that file on the installed MLP_Block; the model on the installed MultiTaskModel), and the transplant of our weights
into it. Multi-task: the cases run on Frappe's label and a synthetic second one."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr_reference import E, Reference, RefMultiTaskModel, copy_embedding, copy_leaves, mlp_block
from torch import nn


class CGC_Layer(nn.Module):  # model_zoo/multitask/PLE/src/PLE.py
    def __init__(self, num_shared_experts, num_specific_experts, num_tasks, input_dim, expert_hidden_units,
                 gate_hidden_units, hidden_activations, net_dropout, batch_norm):
        super().__init__()
        self.num_shared_experts, self.num_specific_experts, self.num_tasks = (num_shared_experts,
                                                                              num_specific_experts, num_tasks)

        def expert():
            return mlp_block(input_dim, expert_hidden_units, hidden_activations, batch_norm, net_dropout)

        self.shared_experts = nn.ModuleList(expert() for _ in range(num_shared_experts))
        self.specific_experts = nn.ModuleList(nn.ModuleList(expert() for _ in range(num_specific_experts))
                                              for _ in range(num_tasks))
        self.gate = nn.ModuleList(
            mlp_block(input_dim, gate_hidden_units, hidden_activations, batch_norm, net_dropout,
                      output_dim=num_specific_experts + num_shared_experts if i < num_tasks else num_shared_experts)
            for i in range(num_tasks + 1))
        self.gate_activation = nn.Softmax(dim=-1)

    def forward(self, x):
        specific = [[e(x[i]) for e in self.specific_experts[i]] for i in range(self.num_tasks)]
        shared = [e(x[-1]) for e in self.shared_experts]
        out = []
        for i in range(self.num_tasks + 1):
            experts = torch.stack(specific[i] + shared if i < self.num_tasks else shared, dim=1)
            gate = self.gate_activation(self.gate[i](x[i] if i < self.num_tasks else x[-1]))
            out.append(torch.sum(gate.unsqueeze(-1) * experts, dim=1))
        return out


class PLE(RefMultiTaskModel):
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        act, drop, bn = p["activation"], p["dropout"], p["batch_norm"]
        self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])
        self.num_layers = p["num_layers"]
        units = p["expert_hidden_units"]
        self.cgc_layers = nn.ModuleList(
            CGC_Layer(p["num_shared_experts"], p["num_specific_experts"], self.num_tasks,
                      p["embedding_dim"] * fmap.num_fields if i == 0 else units[-1], units, p["gate_hidden_units"],
                      act, drop, bn)
            for i in range(self.num_layers))
        self.tower = nn.ModuleList(mlp_block(units[-1], p["tower_hidden_units"], act, bn, drop, output_dim=1)
                                   for _ in range(self.num_tasks))
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        flat = self.embedding_layer(X).flatten(start_dim=1)
        xs = [flat for _ in range(self.num_tasks + 1)]
        for layer in self.cgc_layers:
            xs = layer(xs)
        labels = self.feature_map.labels
        return {f"{labels[i]}_pred": self.output_activation[i](self.tower[i](xs[i])) for i in range(self.num_tasks)}


def transplant_ple(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    for i, (a, b) in enumerate(zip(theirs.cgc_layers, ours.cgc, strict=True)):
        copy_leaves(a, b, f"cgc_layers[{i}]")
    for i, (a, b) in enumerate(zip(theirs.tower, ours.towers, strict=True)):
        copy_leaves(a, b, f"tower[{i}]")


REFERENCE = Reference(PLE, transplant_ple, {
    "two-layers-bn": {**E, "num_layers": 2, "num_shared_experts": 2, "num_specific_experts": 1,
                      "expert_hidden_units": (64, 32), "gate_hidden_units": (16,), "tower_hidden_units": (16,),
                      "activation": "relu", "batch_norm": True, "dropout": 0.0},
    "linear-gates-prelu": {**E, "num_layers": 1, "num_shared_experts": 1, "num_specific_experts": 2,
                           "expert_hidden_units": (32,), "gate_hidden_units": (), "tower_hidden_units": (),
                           "activation": "prelu", "batch_norm": False, "dropout": 0.0},
}, "model_zoo/multitask/PLE/src/PLE.py", multi_task=True)
