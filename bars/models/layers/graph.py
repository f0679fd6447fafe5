"""Graph interaction over fields (FiGNN, Li et al. CIKM 2019): fields are nodes of a fully connected graph whose
edge weights come from attention; node states are updated by message passing (and a GRU)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class GraphLayer(nn.Module):
    """One round of message passing ``[B, F, D] -> [B, F, D]`` (FuxiCTR's ``GraphLayer``):

        a_i = W_in[i] (sum_j g_ij W_out[j] h_j) + b

    with a per-field output transform ``W_out [F, D, D]``, input transform ``W_in [F, D, D]`` and a shared bias
    ``bias_p [D]``. Initialisation as FuxiCTR: ``xavier_normal_`` applied to the whole 3-d tensors, whose fans
    torch computes as ``(D * D, F * D)``, so std = sqrt(2 / (D^2 + F D)) (a per-field-matrix xavier would give
    sqrt(1 / D)); bias zero.
    """

    def __init__(self, num_fields: int, dim: int) -> None:
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(num_fields, dim, dim))
        self.W_out = nn.Parameter(torch.empty(num_fields, dim, dim))
        self.bias_p = nn.Parameter(torch.zeros(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.W_in)
        nn.init.xavier_normal_(self.W_out)
        nn.init.zeros_(self.bias_p)

    def forward(self, g: Tensor, h: Tensor) -> Tensor:
        h_out = torch.einsum("fij,bfj->bfi", self.W_out, h)
        aggr = torch.bmm(g, h_out)
        return torch.einsum("fij,bfj->bfi", self.W_in, aggr) + self.bias_p


class FieldGraphNetwork(nn.Module):
    """FiGNN's feature graph ``[B, F, D] -> [B, F, D]`` (FuxiCTR's ``FiGNN_Layer``; same attribute names).

    Edge weights, computed once from the input embeddings ``e``: ``g_ij = softmax_{j != i}(LeakyReLU_0.01(
    w^T [e_i ; e_j]))`` (no self loops; ``W_attn``: ``nn.Linear(2D, 1, bias=False)``, evaluated as
    ``w_src . e_i + w_dst . e_j``, the same map without building the ``F^2`` concatenations). Then for each of
    ``gnn_layers`` rounds: ``a = GraphLayer_t(g, h)``; ``h = GRUCell(a, h)`` (``use_gru``) or ``h = a + h``;
    plus ``e`` when ``use_residual``. ``reuse_graph_layer`` shares one GraphLayer across rounds. The GRUCell
    keeps PyTorch's default initialisation, as in FuxiCTR.
    """

    def __init__(
        self,
        num_fields: int,
        dim: int,
        gnn_layers: int,
        reuse_graph_layer: bool = False,
        use_gru: bool = True,
        use_residual: bool = True,
    ) -> None:
        super().__init__()
        if num_fields < 2:
            raise ValueError(f"a field graph needs at least 2 fields (edges exclude self loops), got {num_fields}")
        if gnn_layers < 1:
            raise ValueError(f"gnn_layers must be >= 1, got {gnn_layers}")
        self.num_fields = num_fields
        self.dim = dim
        self.gnn_layers = gnn_layers
        self.reuse_graph_layer = reuse_graph_layer
        self.use_residual = use_residual
        if reuse_graph_layer:
            self.gnn: nn.Module = GraphLayer(num_fields, dim)
        else:
            self.gnn = nn.ModuleList(GraphLayer(num_fields, dim) for _ in range(gnn_layers))
        self.gru = nn.GRUCell(dim, dim) if use_gru else None
        self.W_attn = nn.Linear(2 * dim, 1, bias=False)
        self.register_buffer("self_loops", torch.eye(num_fields, dtype=torch.bool), persistent=False)

    def graph(self, emb: Tensor) -> Tensor:
        """``[B, F, F]`` attention weights, rows summing to 1 over the other fields."""
        w = self.W_attn.weight.view(2, self.dim)  # [w_src ; w_dst]
        s = torch.matmul(emb, w.t())  # [B, F, 2]
        alpha = F.leaky_relu(s[..., :1] + s[..., 1].unsqueeze(1), negative_slope=0.01)  # [B, F(src), F(dst)]
        return torch.softmax(alpha.masked_fill(self.self_loops, float("-inf")), dim=-1)

    def forward(self, emb: Tensor) -> Tensor:
        b, f, d = emb.shape
        g = self.graph(emb)
        h = emb
        for i in range(self.gnn_layers):
            layer = self.gnn if self.reuse_graph_layer else self.gnn[i]  # type: ignore[index]
            a = layer(g, h)
            if self.gru is not None:
                h = self.gru(a.reshape(b * f, d), h.reshape(b * f, d)).view(b, f, d)
            else:
                h = a + h
            if self.use_residual:
                h = h + emb
        return h
