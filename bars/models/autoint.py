"""AutoInt (Song et al. 2019) and AutoInt+ (``use_dnn``): stacked multi-head self-attention over the field
embeddings, flattened into a Linear; AutoInt+ adds an MLP over the flat embeddings, ``use_wide`` a first-order
LR term. logit = Linear(flatten(attention^L(E))) [+ MLP(flat E)] [+ LR].

As FuxiCTR: separate query/key/value projections (each initialised on its own), and one dropout rate
(``dropout``, FuxiCTR's net_dropout) for the attention weights and the MLP unless ``attention_dropout`` is set.
Without the MLP (``use_dnn`` false) there is one rate only: ``dropout`` (with ``attention_dropout`` null) or
``attention_dropout`` (with ``dropout`` null); setting both would ignore ``dropout``, an error."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import (
    MLP_DEFAULTS,
    check_activation,
    check_dim,
    check_dropout,
    check_units,
    logits,
    part_keys,
)
from bars.models.layers import MLP, FeatureEmbedding, LogisticRegression, MultiHeadSelfAttention
from bars.models.registry import register


@dataclass(frozen=True)
class AutoIntConfig:
    embedding_dim: int
    attention_layers: int = 3
    num_heads: int = 2
    attention_dim: int = 40
    use_residual: bool = True
    use_scale: bool = False
    layer_norm: bool = False
    # None = the same rate as `dropout` (FuxiCTR's net_dropout drops the attention weights too); a number gives
    # attention its own rate (0.0 = no dropout in attention)
    attention_dropout: float | None = None
    use_wide: bool = False
    use_dnn: bool = True
    # MLP keys (AutoInt+): None = the defaults in __post_init__; must stay None when use_dnn is false
    dnn_hidden_units: tuple[int, ...] | None = None
    activation: str | None = None
    batch_norm: bool | None = None
    # FuxiCTR's net_dropout: after every MLP layer and (attention_dropout None) in attention; None = 0.2, except
    # without MLP and with attention_dropout set, where it must stay None (it would be ignored)
    dropout: float | None = None

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_dim("attention_layers", self.attention_layers)
        check_dim("num_heads", self.num_heads)
        check_dim("attention_dim", self.attention_dim)
        if self.attention_dim % self.num_heads:
            raise ValueError(
                f"attention_dim {self.attention_dim} is not divisible by num_heads {self.num_heads}"
            )
        if self.attention_dropout is not None:
            check_dropout("attention_dropout", self.attention_dropout)
        if not self.use_dnn and self.attention_dropout is not None:
            if self.dropout is not None:
                raise ValueError(
                    "use_dnn is false (plain AutoInt) and attention_dropout is set, so ['dropout'] would be "
                    "ignored: set one rate (model.params.dropout=null, or model.params.attention_dropout=null)"
                )
        elif self.dropout is None:
            object.__setattr__(self, "dropout", 0.2)
        if self.dropout is not None:
            check_dropout("dropout", self.dropout)
        part_keys(
            self,
            self.use_dnn,
            {"dnn_hidden_units": (400, 400, 400), "activation": MLP_DEFAULTS["activation"],
             "batch_norm": MLP_DEFAULTS["batch_norm"]},
            "use_dnn is false (plain AutoInt)",
        )
        check_units("dnn_hidden_units", self.dnn_hidden_units or ())
        if self.use_dnn and not self.dnn_hidden_units:
            raise ValueError("use_dnn needs dnn_hidden_units")
        if self.activation is not None:
            check_activation("activation", self.activation)

    @property
    def attention_dropout_rate(self) -> float:
        rate = self.dropout if self.attention_dropout is None else self.attention_dropout
        assert rate is not None  # __post_init__ sets dropout unless attention_dropout is set
        return rate


@register("autoint", AutoIntConfig)
class AutoInt(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: AutoIntConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        self.attention = nn.Sequential(
            *(
                MultiHeadSelfAttention(
                    cfg.embedding_dim if i == 0 else cfg.attention_dim,
                    cfg.attention_dim,
                    cfg.num_heads,
                    cfg.attention_dropout_rate,
                    cfg.use_residual,
                    cfg.use_scale,
                    cfg.layer_norm,
                )
                for i in range(cfg.attention_layers)
            )
        )
        self.fc = nn.Linear(self.embedding.num_fields * cfg.attention_dim, 1)
        self.dnn = (
            MLP(self.embedding.output_dim, cfg.dnn_hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout, 1)
            if cfg.use_dnn
            else None
        )
        self.lr = LogisticRegression(spec, use_bias=False) if cfg.use_wide else None

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(batch)
        out = self.fc(self.attention(emb).flatten(start_dim=1))
        if self.dnn is not None:
            out = out + self.dnn(emb.flatten(start_dim=1))
        if self.lr is not None:
            out = out + self.lr(batch)
        return logits(out)
