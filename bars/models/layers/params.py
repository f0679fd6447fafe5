"""Parameters of a whole model: regulariser split, BARS initialisation, counting."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from bars.models.layers.embedding import FeatureEmbedding


# ------------------------------------------------------------------------------------------------------------
# Parameters: regulariser split and initialisation
# ------------------------------------------------------------------------------------------------------------
def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(embedding_params, net_params)``: every parameter inside a :class:`FeatureEmbedding` (first-order LR
    weights and FinalMLP context embeddings included) is an embedding parameter, everything else a net
    parameter. Each parameter appears once (shared parameters are deduplicated)."""
    emb_ids: set[int] = set()
    emb: list[nn.Parameter] = []
    for m in model.modules():
        if isinstance(m, FeatureEmbedding):
            for p in m.parameters():
                if id(p) not in emb_ids:
                    emb_ids.add(id(p))
                    emb.append(p)
    net: list[nn.Parameter] = []
    seen = set(emb_ids)
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            net.append(p)
    return emb, net


def init_bars_(model: nn.Module, embedding_std: float = 1e-4) -> nn.Module:
    """The BARS initialisation, in place; returns ``model``.

    1. every module with its own ``reset_parameters`` (BatchNorm/LayerNorm: ones/zeros, CrossNet bias: zeros,
       FinalMLP context bias: zeros or N(0, 1) by its ``bias_init``, bilinear fusion weight: xavier-normal, an
       MLP's PReLU: 0.1 per unit as FuxiCTR) is reset;
    2. every ``nn.Linear``: weight xavier-normal, bias 0;
    3. every :class:`FeatureEmbedding`: rows N(0, embedding_std), padding row zero; numeric vectors
       xavier-normal (FuxiCTR initialises its ``Linear(1, dim)`` that way).
    """
    for m in model.modules():
        if isinstance(m, (nn.Linear, FeatureEmbedding)):
            continue
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, FeatureEmbedding):
            m.reset_parameters(embedding_std)
    return model


def count_parameters(model: nn.Module, params: Iterable[nn.Parameter] | None = None) -> int:
    """Number of trainable scalars (each shared parameter counted once)."""
    ps = {id(p): p for p in (params if params is not None else model.parameters()) if p.requires_grad}
    return sum(p.numel() for p in ps.values())
