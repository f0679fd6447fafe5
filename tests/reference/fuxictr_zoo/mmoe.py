"""mmoe: FuxiCTR 2.3.10 composition following model_zoo/multitask/MMoE/src/MMoE.py (its MMoE_Layer written here
from that file on the installed MLP_Block; the model on the installed MultiTaskModel), and the transplant of our
weights into it. Multi-task: the cases run on Frappe's label and a synthetic second one."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr_reference import E, Reference, RefMultiTaskModel, copy_embedding, copy_leaves, mlp_block
from torch import nn


class MMoE_Layer(nn.Module):  # model_zoo/multitask/MMoE/src/MMoE.py
    def __init__(self, num_experts, num_tasks, input_dim, expert_hidden_units, gate_hidden_units, hidden_activations,
                 net_dropout, batch_norm):
        super().__init__()
        self.experts = nn.ModuleList(mlp_block(input_dim, expert_hidden_units, hidden_activations, batch_norm,
                                               net_dropout) for _ in range(num_experts))
        self.gate = nn.ModuleList(mlp_block(input_dim, gate_hidden_units, hidden_activations, batch_norm, net_dropout,
                                            output_dim=num_experts) for _ in range(num_tasks))
        self.gate_activation = nn.Softmax(dim=-1)

    def forward(self, x):
        experts = torch.stack([e(x) for e in self.experts], dim=1)
        return [torch.sum(self.gate_activation(g(x)).unsqueeze(-1) * experts, dim=1) for g in self.gate]


class MMoE(RefMultiTaskModel):
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        act, drop, bn = p["activation"], p["dropout"], p["batch_norm"]
        self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])
        self.mmoe_layer = MMoE_Layer(p["num_experts"], self.num_tasks, p["embedding_dim"] * fmap.num_fields,
                                     p["expert_hidden_units"], p["gate_hidden_units"], act, drop, bn)
        self.tower = nn.ModuleList(mlp_block(p["expert_hidden_units"][-1], p["tower_hidden_units"], act, bn, drop,
                                             output_dim=1) for _ in range(self.num_tasks))
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        experts = self.mmoe_layer(self.embedding_layer(X).flatten(start_dim=1))
        labels = self.feature_map.labels
        return {f"{labels[i]}_pred": self.output_activation[i](self.tower[i](experts[i]))
                for i in range(self.num_tasks)}


def transplant_mmoe(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_leaves(theirs.mmoe_layer, ours.moe, "mmoe_layer")
    for i, (a, b) in enumerate(zip(theirs.tower, ours.towers, strict=True)):
        copy_leaves(a, b, f"tower[{i}]")


REFERENCE = Reference(MMoE, transplant_mmoe, {
    "bn-3-experts": {**E, "num_experts": 3, "expert_hidden_units": (64, 32), "gate_hidden_units": (16,),
                     "tower_hidden_units": (16,), "activation": "relu", "batch_norm": True, "dropout": 0.0},
    "linear-gates-prelu": {**E, "num_experts": 2, "expert_hidden_units": (32,), "gate_hidden_units": (),
                           "tower_hidden_units": (), "activation": "prelu", "batch_norm": False, "dropout": 0.0},
}, "model_zoo/multitask/MMoE/src/MMoE.py", multi_task=True)
