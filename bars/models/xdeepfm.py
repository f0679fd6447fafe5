"""xDeepFM (Lian et al. 2018): logit = first-order LR + CIN(field embeddings) + MLP(flat embeddings)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import MLP_DEFAULTS, check_deep, check_units, logits, part_keys
from bars.models.layers import CIN, MLP, FeatureEmbedding, LogisticRegression
from bars.models.registry import register


@dataclass(frozen=True)
class XDeepFMConfig:
    embedding_dim: int
    cin_hidden_units: tuple[int, ...] = (32, 32, 32)
    dnn_hidden_units: tuple[int, ...] = (400, 400, 400)  # empty: no DNN part (then it is "CIN + LR")
    activation: str | None = None  # MLP keys: None = MLP_DEFAULTS; must stay None without a DNN part
    batch_norm: bool | None = None
    dropout: float | None = None

    def __post_init__(self) -> None:
        part_keys(self, bool(self.dnn_hidden_units), MLP_DEFAULTS, "dnn_hidden_units is empty (CIN + LR only)")
        check_deep(self, "dnn_hidden_units")
        check_units("cin_hidden_units", self.cin_hidden_units)
        if not self.cin_hidden_units:
            raise ValueError("cin_hidden_units must have at least one layer")


@register("xdeepfm", XDeepFMConfig)
class XDeepFM(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: XDeepFMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        self.lr = LogisticRegression(spec, use_bias=False)  # the CIN's output Linear carries the bias
        self.cin = CIN(self.embedding.num_fields, cfg.cin_hidden_units, output_dim=1)
        self.dnn = (
            MLP(self.embedding.output_dim, cfg.dnn_hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout, 1)
            if cfg.dnn_hidden_units
            else None
        )

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(batch)
        out = self.lr(batch) + self.cin(emb)
        if self.dnn is not None:
            out = out + self.dnn(emb.flatten(start_dim=1))
        return logits(out)
