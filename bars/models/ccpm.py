"""CCPM: Convolutional Click Prediction Model (Liu, Yu, Wu, Wang, "A Convolutional Click Prediction Model",
CIKM 2015).

The field embeddings form an ``F x D`` matrix; ``l`` layers of wide convolution along the field axis (kernel
``(h_i, 1)``, ``C_{i-1} -> C_i`` channels, zero padding ``h_i - 1`` on both sides), each followed by k-max
pooling over fields and the activation, with ``k_i = max(3, int((1 - (i/l)^(l-i)) F))`` and ``k_l = 3``:

    logit = fc(flatten(FieldConvolution(E)))         fc: Linear(3 * D * C_l, 1)

Parameter names (ours -> FuxiCTR CCPM): embedding -> embedding_layer; conv.convs[i] (nn.Conv2d, weight
``[C_i, C_{i-1}, h_i, 1]``) -> conv_layer.conv_layer[4 * i + 1]; fc -> fc. The Conv2d weights keep PyTorch's
default initialisation (kaiming-uniform), as FuxiCTR does; fc is xavier-normal. FuxiCTR truncates ``k_i`` with
``int`` where the paper rounds up; we follow FuxiCTR (bars/models/layers/convolution.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_units, logits
from bars.models.layers import FeatureEmbedding, FieldConvolution
from bars.models.registry import ModelConfigError, register


@dataclass(frozen=True)
class CCPMConfig:
    embedding_dim: int
    channels: tuple[int, ...] = (3, 3)
    kernel_heights: tuple[int, ...] = (3, 3)
    activation: str = "tanh"

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_units("channels", self.channels)
        check_units("kernel_heights", self.kernel_heights)
        if not self.channels:
            raise ValueError("channels must have at least one layer")
        if len(self.channels) != len(self.kernel_heights):
            raise ValueError(
                f"channels {self.channels} and kernel_heights {self.kernel_heights} must have the same length "
                f"(one kernel height per convolution layer)"
            )
        check_activation("activation", self.activation)


@register("ccpm", CCPMConfig)
class CCPM(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: CCPMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        try:
            self.conv = FieldConvolution(self.embedding.num_fields, cfg.channels, cfg.kernel_heights, cfg.activation)
        except ValueError as e:
            raise ModelConfigError(f"ccpm: {e}") from None
        self.fc = nn.Linear(3 * cfg.embedding_dim * cfg.channels[-1], 1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return logits(self.fc(self.conv(self.embedding(batch)).flatten(start_dim=1)))
