"""FinalMLP (Mao et al. 2023): two MLP streams over the flat embeddings, each input gated by its own
feature-selection module (context = embeddings of chosen fields, or a learned bias when none, zero-initialised
as FuxiCTR unless ``fs_context_bias_init="normal"``), fused by a multi-head bilinear layer:
logit = w1.o1 + b1 + w2.o2 + b2 + sum_h o1_h^T W_h o2_h."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, check_units, logits, part_keys
from bars.models.layers import MLP, BilinearFusion, FeatureEmbedding, FeatureSelection
from bars.models.registry import ModelConfigError, register


@dataclass(frozen=True)
class FinalMLPConfig:
    embedding_dim: int
    mlp1_hidden_units: tuple[int, ...] = (400,)
    mlp1_activation: str = "relu"
    mlp1_batch_norm: bool = True
    mlp1_dropout: float = 0.4
    mlp2_hidden_units: tuple[int, ...] = (100,)
    mlp2_activation: str = "relu"
    mlp2_batch_norm: bool = True
    mlp2_dropout: float = 0.4
    use_fs: bool = True
    fs_hidden_units: tuple[int, ...] | None = None  # None = (400,) with use_fs; must stay None without it
    fs1_context: tuple[str, ...] = ()  # field names of the spec; empty = a learned bias as context
    fs2_context: tuple[str, ...] = ()
    num_heads: int = 5
    # init of the context bias of a stream with an empty context: "zeros" (FuxiCTR) or "normal" (N(0, 1)); only
    # meaningful when use_fs and some context is empty ("normal" otherwise is an ignored key, hence an error)
    fs_context_bias_init: Literal["zeros", "normal"] = "zeros"

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        for i in (1, 2):
            check_units(f"mlp{i}_hidden_units", getattr(self, f"mlp{i}_hidden_units"))
            check_activation(f"mlp{i}_activation", getattr(self, f"mlp{i}_activation"))
            check_dropout(f"mlp{i}_dropout", getattr(self, f"mlp{i}_dropout"))
        part_keys(self, self.use_fs, {"fs_hidden_units": (400,)}, "use_fs is false (no feature selection)")
        check_units("fs_hidden_units", self.fs_hidden_units or ())
        check_dim("num_heads", self.num_heads)
        if not self.use_fs:
            ignored = [k for k in ("fs1_context", "fs2_context") if getattr(self, k)]
            if ignored:
                raise ValueError(f"use_fs is false, so {ignored} would be ignored: set them to []")
        has_bias = self.use_fs and not (self.fs1_context and self.fs2_context)
        if self.fs_context_bias_init != "zeros" and not has_bias:
            raise ValueError(
                f"fs_context_bias_init {self.fs_context_bias_init!r} would be ignored: no stream uses a context "
                "bias (use_fs is false or both fs1_context and fs2_context are set)"
            )


@register("finalmlp", FinalMLPConfig)
class FinalMLP(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: FinalMLPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        for key in ("fs1_context", "fs2_context"):
            unknown = [n for n in getattr(cfg, key) if n not in spec.names]
            if unknown:
                raise ModelConfigError(
                    f"finalmlp {key}: fields {unknown} are not in the spec; fields: {spec.names}"
                )
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        d = self.embedding.output_dim
        self.mlp1 = MLP(d, cfg.mlp1_hidden_units, cfg.mlp1_activation, cfg.mlp1_batch_norm, cfg.mlp1_dropout)
        self.mlp2 = MLP(d, cfg.mlp2_hidden_units, cfg.mlp2_activation, cfg.mlp2_batch_norm, cfg.mlp2_dropout)
        self.fs1 = self.fs2 = None
        if cfg.use_fs:
            init = cfg.fs_context_bias_init
            self.fs1 = FeatureSelection(spec, cfg.embedding_dim, d, cfg.fs_hidden_units, cfg.fs1_context, init)
            self.fs2 = FeatureSelection(spec, cfg.embedding_dim, d, cfg.fs_hidden_units, cfg.fs2_context, init)
        try:
            self.fusion = BilinearFusion(self.mlp1.output_dim, self.mlp2.output_dim, cfg.num_heads)
        except ValueError as e:
            raise ModelConfigError(f"finalmlp: {e}") from None

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        flat = self.embedding.flat(batch)
        x1 = x2 = flat
        if self.fs1 is not None and self.fs2 is not None:
            x1, x2 = self.fs1(batch, flat), self.fs2(batch, flat)
        return logits(self.fusion(self.mlp1(x1), self.mlp2(x2)))
