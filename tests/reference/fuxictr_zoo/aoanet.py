"""aoanet: FuxiCTR 2.3.10 composition following model_zoo/AOANet/src/AOANet.py, and the transplant of our weights
into it. The generalized interaction network is defined in the model_zoo file, so it is written here from that
file: the explicit ``[B, S_in * F, D, D]`` outer products, mixed by ``alpha``, gated by ``W``, projected by ``h``
(ours computes the same sum without materialising the outer products)."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr_reference import MLP, E, Reference, RefModel, copy_embedding, copy_leaves, mlp_block, put
from torch import nn


class OuterProductInteraction(nn.Module):
    """The model_zoo file's GeneralizedInteraction: for every (input subspace s, field f) the outer product
    ``B_0[f] B_i[s]^T`` (row ``s * F + f``), a weighted sum of them per output subspace (``alpha``), element-wise
    ``W_o``, then ``@ h_o``. Parameters as FuxiCTR builds them: W identity, alpha and h ones."""

    def __init__(self, input_subspaces, output_subspaces, num_fields, embedding_dim):
        super().__init__()
        self.input_subspaces, self.num_fields, self.embedding_dim = input_subspaces, num_fields, embedding_dim
        self.W = nn.Parameter(torch.eye(embedding_dim).expand(output_subspaces, -1, -1).clone())
        self.alpha = nn.Parameter(torch.ones(input_subspaces * num_fields, output_subspaces))
        self.h = nn.Parameter(torch.ones(output_subspaces, embedding_dim, 1))

    def forward(self, B_0, B_i):
        b = B_i.size(0)
        fields = B_0.repeat(1, self.input_subspaces, 1)  # row s*F + f: B_0[f]
        subspaces = B_i.unsqueeze(2).expand(-1, -1, self.num_fields, -1).reshape(b, -1, self.embedding_dim)
        outer = fields.unsqueeze(-1) * subspaces.unsqueeze(-2)  # [B, S_in*F, D, D]
        mixed = torch.matmul(outer.permute(0, 2, 3, 1), self.alpha).permute(0, 3, 1, 2)  # [B, S_out, D, D]
        return torch.matmul(self.W * mixed, self.h).squeeze(-1)  # [B, S_out, D]


class AOANet(RefModel):  # model_zoo/AOANet/src/AOANet.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim, s = p["embedding_dim"], p["num_subspaces"]
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        self.dnn = mlp_block(fmap.sum_emb_out_dim(), p["dnn_hidden_units"], p["activation"], p["batch_norm"],
                             p["dropout"])
        self.gin = nn.ModuleList(OuterProductInteraction(fmap.num_fields if i == 0 else s, s, fmap.num_fields, dim)
                                 for i in range(p["num_interaction_layers"]))
        self.fc = nn.Linear(list(p["dnn_hidden_units"])[-1] + s * dim, 1)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        B = emb
        for layer in self.gin:
            B = layer(emb, B)
        y = self.fc(torch.cat([self.dnn(emb.flatten(start_dim=1)), B.flatten(start_dim=1)], dim=-1))
        return {"y_pred": self.output_activation(y)}


def transplant_aoanet(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_leaves(theirs.dnn, ours.dnn, "dnn")
    for i, (t, o) in enumerate(zip(theirs.gin, ours.gin.layers, strict=True)):
        for n in ("W", "alpha", "h"):
            put(getattr(t, n), getattr(o, n), f"gin.layers[{i}].{n}")
    copy_leaves(theirs.fc, ours.fc, "fc")


REFERENCE = Reference(AOANet, transplant_aoanet, {
    "3-layers-4-subspaces": {**E, "dnn_hidden_units": (400, 400, 400), "num_interaction_layers": 3,
                             "num_subspaces": 4, **MLP},
    "1-layer-no-bn": {**E, "dnn_hidden_units": (64, 64), "num_interaction_layers": 1, "num_subspaces": 2,
                      "activation": "relu", "batch_norm": False, "dropout": 0.0},
}, "model_zoo/AOANet/src/AOANet.py")
