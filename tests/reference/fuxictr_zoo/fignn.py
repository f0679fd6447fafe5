"""fignn: FuxiCTR 2.3.10 composition following model_zoo/FiGNN/src/FiGNN.py, and the transplant of our weights
into it."""

from __future__ import annotations

from itertools import product

import torch
from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves, put
from torch import nn
from torch.nn import functional as F


class GraphLayer(nn.Module):
    """The model_zoo file's GraphLayer: per-field W_out / W_in [F, D, D] (xavier-normal on the 3-d tensors),
    a shared bias; a_i = W_in[i] sum_j g_ij W_out[j] h_j + b."""

    def __init__(self, num_fields, dim):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(num_fields, dim, dim))
        self.W_out = nn.Parameter(torch.empty(num_fields, dim, dim))
        nn.init.xavier_normal_(self.W_in)
        nn.init.xavier_normal_(self.W_out)
        self.bias_p = nn.Parameter(torch.zeros(dim))

    def forward(self, g, h):
        h_out = torch.matmul(self.W_out, h.unsqueeze(-1)).squeeze(-1)
        return torch.matmul(self.W_in, torch.bmm(g, h_out).unsqueeze(-1)).squeeze(-1) + self.bias_p


class FiGNNLayer(nn.Module):
    """The model_zoo file's FiGNN_Layer: attention graph over all (src, dst) field pairs from the concatenated
    embeddings, no self loops; gnn_layers rounds of GraphLayer, then GRUCell or a plain sum, plus the input
    embeddings when residual."""

    def __init__(self, num_fields, dim, gnn_layers, reuse_graph_layer, use_gru, use_residual):
        super().__init__()
        self.num_fields, self.dim, self.gnn_layers = num_fields, dim, gnn_layers
        self.use_residual, self.reuse_graph_layer = use_residual, reuse_graph_layer
        self.gnn = GraphLayer(num_fields, dim) if reuse_graph_layer else \
            nn.ModuleList(GraphLayer(num_fields, dim) for _ in range(gnn_layers))
        self.gru = nn.GRUCell(dim, dim) if use_gru else None
        self.src_nodes, self.dst_nodes = zip(*product(range(num_fields), repeat=2), strict=True)
        self.leaky_relu = nn.LeakyReLU(negative_slope=0.01)
        self.W_attn = nn.Linear(2 * dim, 1, bias=False)

    def graph(self, emb):
        pairs = torch.cat([emb[:, self.src_nodes, :], emb[:, self.dst_nodes, :]], dim=-1)
        alpha = self.leaky_relu(self.W_attn(pairs)).view(-1, self.num_fields, self.num_fields)
        alpha = alpha.masked_fill(torch.eye(self.num_fields, device=emb.device).bool(), float("-inf"))
        return F.softmax(alpha, dim=-1)

    def forward(self, emb):
        g, h = self.graph(emb), emb
        for i in range(self.gnn_layers):
            a = self.gnn(g, h) if self.reuse_graph_layer else self.gnn[i](g, h)
            if self.gru is not None:
                h = self.gru(a.reshape(-1, self.dim), h.reshape(-1, self.dim)).view(-1, self.num_fields, self.dim)
            else:
                h = a + h
            if self.use_residual:
                h = h + emb
        return h


class AttentionalPrediction(nn.Module):  # the model_zoo file's: sum_i sigmoid(W_2 flatten(h))_i * (w_1 . h_i)
    def __init__(self, num_fields, dim):
        super().__init__()
        self.mlp1 = nn.Linear(dim, 1, bias=False)
        self.mlp2 = nn.Sequential(nn.Linear(num_fields * dim, num_fields, bias=False), nn.Sigmoid())

    def forward(self, h):
        return (self.mlp2(h.flatten(start_dim=1)) * self.mlp1(h).squeeze(-1)).sum(dim=1, keepdim=True)


class FiGNN(RefModel):  # model_zoo/FiGNN/src/FiGNN.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim, f = p["embedding_dim"], fmap.num_fields
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        self.fignn = FiGNNLayer(f, dim, p["gnn_layers"], p["reuse_graph_layer"], p["use_gru"], p["use_residual"])
        self.fc = AttentionalPrediction(f, dim)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        return {"y_pred": self.output_activation(self.fc(self.fignn(self.embedding_layer(X))))}


def transplant_fignn(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    t, o = theirs.fignn, ours.fignn
    if t.reuse_graph_layer != o.reuse_graph_layer or (t.gru is None) != (o.gru is None):
        raise ValueError("fignn: graph-layer reuse / GRU differ")
    t_layers = [t.gnn] if t.reuse_graph_layer else list(t.gnn)
    o_layers = [o.gnn] if o.reuse_graph_layer else list(o.gnn)
    if len(t_layers) != len(o_layers):
        raise ValueError("fignn: number of graph layers differs")
    for i, (a, b) in enumerate(zip(t_layers, o_layers, strict=True)):
        for n in ("W_in", "W_out", "bias_p"):
            put(getattr(a, n), getattr(b, n), f"fignn.gnn[{i}].{n}")
    if t.gru is not None:
        for n, w in o.gru.named_parameters():
            put(getattr(t.gru, n), w, f"fignn.gru.{n}")
    put(t.W_attn.weight, o.W_attn.weight, "fignn.W_attn")
    put(theirs.fc.mlp1.weight, ours.fc.mlp1.weight, "fc.mlp1")
    copy_leaves(theirs.fc.mlp2, ours.fc.mlp2, "fc.mlp2")


REFERENCE = Reference(FiGNN, transplant_fignn, {
    "gru-residual": {**E, "gnn_layers": 3, "use_residual": True, "use_gru": True, "reuse_graph_layer": False},
    "reuse-plain": {**E, "gnn_layers": 4, "use_residual": False, "use_gru": False, "reuse_graph_layer": True},
    "reuse-gru": {**E, "gnn_layers": 2, "use_residual": False, "use_gru": True, "reuse_graph_layer": True},
}, "model_zoo/FiGNN/src/FiGNN.py")
