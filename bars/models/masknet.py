"""MaskNet (Wang, She, Zhang, "MaskNet: Introducing Feature-Wise Multiplication to CTR Ranking Models by
Instance-Guided Mask", DLP-KDD 2021), serial or parallel, as FuxiCTR computes it (model_zoo/MaskNet/src/MaskNet.py;
the BARS runs' FuxiCTR 1.2.1 and 2.2.0 compute the same function).

    v_emb    = flat field embeddings [B, F*D]                      (the mask input, never normalised)
    v_hidden = per-field LayerNorm(embeddings), flat  (emb_layernorm; else v_emb)
    MaskBlock(v_emb, h) = Dropout(act(LN?(W_h (mask(v_emb) ⊙ h)))),  mask = W_2 ReLU(W_1 v_emb + b_1) + b_2
    serial:   h_0 = v_hidden, h_k = MaskBlock_k(v_emb, h_{k-1}) with widths dnn_hidden_units;  logit = fc(h_K)
    parallel: logit = MLP([MaskBlock_1(v_emb, v_hidden); ...; MaskBlock_N(v_emb, v_hidden)])
              N = parallel_num_blocks blocks of width parallel_block_dim; MLP = dnn_hidden_units (no batch norm,
              the same activation and dropout) + an output Linear

Config -> FuxiCTR ``MaskNet``: ``model_type`` serial / parallel = SerialMaskNet / ParallelMaskNet,
``dnn_hidden_units``, ``activation`` = dnn_hidden_activations, ``reduction_ratio`` (the mask's first layer has
``int(H * reduction_ratio)`` units, H the width the mask multiplies), ``emb_layernorm``, ``net_layernorm``,
``dropout`` = net_dropout (after each mask block's activation and each hidden layer of the parallel MLP),
``parallel_num_blocks``, ``parallel_block_dim`` (parallel only: null with serial, a key that would be ignored is an
error). A serial MaskNet needs at least one block (``dnn_hidden_units`` non-empty); a parallel one may have no
hidden layer (its blocks then feed the output Linear). BARS names both variants "MaskNet" (its READMEs print the
``model_type`` of the run); the leaderboard row is the model config's ``bars_name``.
Parameters: ``embedding`` = embedding_layer, ``emb_norm.weight[f]`` / ``.bias[f]`` = emb_norm[f].weight / .bias,
``blocks[k]`` = mask_net.mask_blocks[k] (``mask_layer``, ``hidden_layer``), ``fc`` = serial mask_net.fc,
``dnn`` = parallel mask_net.dnn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, check_units, logits, part_keys
from bars.models.layers import MLP, FeatureEmbedding, FieldLayerNorm, MaskBlock, mask_width
from bars.models.registry import register


@dataclass(frozen=True)
class MaskNetConfig:
    embedding_dim: int
    model_type: Literal["serial", "parallel"] = "serial"
    dnn_hidden_units: tuple[int, ...] = (400, 400, 400)
    activation: str = "relu"
    reduction_ratio: float = 1.0
    emb_layernorm: bool = True
    net_layernorm: bool = True
    dropout: float = 0.0
    # parallel only (None = the defaults below; with serial they must stay None)
    parallel_num_blocks: int | None = None
    parallel_block_dim: int | None = None

    def __post_init__(self) -> None:
        part_keys(self, self.model_type == "parallel", {"parallel_num_blocks": 1, "parallel_block_dim": 64},
                  "model_type is 'serial' (no parallel blocks)")
        check_dim("embedding_dim", self.embedding_dim)
        check_units("dnn_hidden_units", self.dnn_hidden_units)
        check_activation("activation", self.activation)
        if self.activation.lower() == "prelu":
            raise ValueError("activation 'prelu': FuxiCTR's MaskBlock builds its activation without a width, "
                             "which PReLU needs; choose another")
        check_dropout("dropout", self.dropout)
        if not self.reduction_ratio > 0:
            raise ValueError(f"reduction_ratio must be > 0, got {self.reduction_ratio}")
        if self.model_type == "serial" and not self.dnn_hidden_units:
            raise ValueError("dnn_hidden_units is empty: a serial MaskNet needs at least one mask block "
                             "(model_type 'parallel' may have no hidden layer)")
        if self.model_type == "parallel":
            check_dim("parallel_num_blocks", self.parallel_num_blocks or 0)
            check_dim("parallel_block_dim", self.parallel_block_dim or 0)


@register("masknet", MaskNetConfig)
class MaskNet(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: MaskNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        e = self.embedding.output_dim
        self.emb_norm = FieldLayerNorm(self.embedding.num_fields, cfg.embedding_dim) if cfg.emb_layernorm else None
        self.serial = cfg.model_type == "serial"
        if self.serial:
            widths = (e, *cfg.dnn_hidden_units)
            inputs = widths[:-1]
        else:
            assert cfg.parallel_num_blocks is not None and cfg.parallel_block_dim is not None
            inputs = (e,) * cfg.parallel_num_blocks
            widths = (e, *(cfg.parallel_block_dim,) * cfg.parallel_num_blocks)
        small = [h for h in inputs if mask_width(h, cfg.reduction_ratio) < 1]
        if small:
            raise ValueError(f"model.params.reduction_ratio {cfg.reduction_ratio}: the mask layer over a width-"
                             f"{small[0]} input would have int({small[0]} * {cfg.reduction_ratio}) = 0 units")
        self.blocks = nn.ModuleList(
            MaskBlock(e, h, out, cfg.activation, cfg.reduction_ratio, cfg.dropout, cfg.net_layernorm)
            for h, out in zip(inputs, widths[1:], strict=True)
        )
        self.fc = self.dnn = None
        if self.serial:
            self.fc = nn.Linear(widths[-1], 1)
        else:
            assert cfg.parallel_num_blocks is not None and cfg.parallel_block_dim is not None
            self.dnn = MLP(cfg.parallel_num_blocks * cfg.parallel_block_dim, cfg.dnn_hidden_units, cfg.activation,
                           batch_norm=False, dropout=cfg.dropout, output_dim=1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(batch)
        v_emb = emb.flatten(start_dim=1)
        v_hidden = v_emb if self.emb_norm is None else self.emb_norm(emb).flatten(start_dim=1)
        if self.fc is not None:
            h = v_hidden
            for block in self.blocks:
                h = block(v_emb, h)
            return logits(self.fc(h))
        assert self.dnn is not None
        return logits(self.dnn(torch.cat([block(v_emb, v_hidden) for block in self.blocks], dim=-1)))
