"""HOFM: higher-order factorization machine (Blondel et al., "Higher-Order Factorization Machines", NIPS 2016;
FuxiCTR ``model_zoo/HOFM``).

    logit = b + sum_f w_f[x_f] + sum_{t=2..order} sum_d sum_{i_1<...<i_t} prod_s e^(t)_{i_s, d}

The degree-t term is the ANOVA kernel of degree t over the fields, on its own embedding table e^(t) (dimension
``embedding_dim`` for t = 2, ``high_order_embedding_dims[t-3]`` for t >= 3, or ``embedding_dim`` for every t when
that list is empty), or on one shared table (``reuse_embedding``). FuxiCTR sums an explicit product per
combination of fields (C(F, t) of them); here the kernel comes from Newton's identities (``anova_kernels``): the
same value up to float rounding, O(order) tensor operations.

Parameters <-> FuxiCTR 2.3.10 ``HOFM``: ``lr`` = ``lr_layer`` (dim-1 weights + bias); ``embeddings.<t-2>`` =
``embedding_layers.<t-2>`` (``embedding_dim`` list ``[embedding_dim, *high_order_embedding_dims]``), or
``embedding`` = ``embedding_layer`` with ``reuse_embedding``. FuxiCTR's single ``regularizer`` applies to embeddings
and net weights; every HOFM weight lives in a FeatureEmbedding here but the LR bias, so it maps to
``train.embedding_regularizer`` (+ ``train.net_regularizer`` for the bias). FuxiCTR's ``embedding_dropout`` argument,
accepted and unused there, does not exist here.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_dim, check_units, logits
from bars.models.layers import FeatureEmbedding, LogisticRegression, anova_kernels
from bars.models.registry import ModelConfigError, register


@dataclass(frozen=True)
class HOFMConfig:
    embedding_dim: int
    order: int = 3
    reuse_embedding: bool = False
    high_order_embedding_dims: tuple[int, ...] = ()  # dims of the tables of degree 3..order; empty: embedding_dim

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        if self.order < 2:
            raise ValueError(f"order must be >= 2 (degree 2 is the FM term), got {self.order}")
        check_units("high_order_embedding_dims", self.high_order_embedding_dims)
        if self.high_order_embedding_dims:
            if self.reuse_embedding:
                raise ValueError(
                    "high_order_embedding_dims needs a table per degree; with reuse_embedding=true every degree "
                    f"shares the embedding_dim table (got {self.high_order_embedding_dims})"
                )
            if len(self.high_order_embedding_dims) != self.order - 2:
                raise ValueError(
                    f"high_order_embedding_dims gives the dims of degrees 3..order: {self.order - 2} values for "
                    f"order {self.order}, got {self.high_order_embedding_dims}"
                )

    @property
    def dims(self) -> tuple[int, ...]:
        """Embedding dim per degree 2..order."""
        return (self.embedding_dim, *(self.high_order_embedding_dims or (self.embedding_dim,) * (self.order - 2)))


@register("hofm", HOFMConfig)
class HOFM(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: HOFMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if len(spec.features) < cfg.order:
            raise ModelConfigError(
                f"hofm order {cfg.order} sums products of {cfg.order} distinct fields; the spec has only "
                f"{len(spec.features)}: {spec.names}"
            )
        self.lr = LogisticRegression(spec, use_bias=True)
        self.embedding: FeatureEmbedding | None = None
        self.embeddings: nn.ModuleList | None = None
        if cfg.reuse_embedding:
            self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        else:
            self.embeddings = nn.ModuleList(FeatureEmbedding(spec, d) for d in cfg.dims)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        out = self.lr(batch)
        if self.embedding is not None:
            for k in anova_kernels(self.embedding(batch), self.cfg.order)[1:]:  # degrees 2..order
                out = out + k.sum(dim=1, keepdim=True)
        else:
            assert self.embeddings is not None
            for t, emb in enumerate(self.embeddings, start=2):
                out = out + anova_kernels(emb(batch), t)[-1].sum(dim=1, keepdim=True)
        return logits(out)
