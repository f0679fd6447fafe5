"""GDCN's gated cross network (Wang et al., "Towards Deeper, Lighter and Interpretable Cross Network for CTR
Prediction", CIKM 2023)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bars.models.layers.kernels import GatedCrossMix, autocast_on, traced


class GatedCrossNet(nn.Module):
    """``num_layers`` gated cross layers over ``x_0 [B, d]``::

        x_{l+1} = x_0 ⊙ (W_l x_l + b_l) ⊙ sigmoid(W_g,l x_l) + x_l

    (a DCN-V2 cross layer whose interactions pass an element-wise "information gate"). Returns ``x_L [B, d]``.

    Parameters: ``weight [L, 2d, d]`` holds ``W_l`` (rows ``:d``) and ``W_g,l`` (rows ``d:``) stacked, so each
    layer is one matrix product; ``bias [L, d]``. Initialisation as FuxiCTR's ``GateCorssLayer``
    (model_zoo/GDCN/src/GDCN.py): ``W_l`` and ``W_g,l`` each xavier-normal as the ``nn.Linear(d, d)`` they are
    there (FuxiCTR's BaseModel resets every Linear so), ``b_l`` uniform on [0, 1) (its own ``nn.init.uniform_``,
    which BaseModel leaves alone)."""

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.input_dim = input_dim
        self.weight = nn.Parameter(torch.empty(num_layers, 2 * input_dim, input_dim))
        self.bias = nn.Parameter(torch.empty(num_layers, input_dim))
        self.reset_parameters()

    @property
    def num_layers(self) -> int:
        return self.weight.shape[0]

    def reset_parameters(self) -> None:
        d = self.input_dim
        with torch.no_grad():
            for w in self.weight:
                nn.init.xavier_normal_(w[:d])
                nn.init.xavier_normal_(w[d:])
            nn.init.uniform_(self.bias)

    def forward(self, x0: Tensor) -> Tensor:
        d = self.input_dim
        x = x0
        # the element-wise part in one autograd node (kernels.GatedCrossMix, the same values) on float32 CPU
        # tensors; autograd's ops where the exporters or autocast need them
        fused = (x0.device.type == "cpu" and x0.dtype == torch.float32 and self.weight.dtype == torch.float32
                 and x0.dim() == 2 and not traced() and not autocast_on())
        for i in range(self.num_layers):
            z = F.linear(x, self.weight[i])  # [B, 2d]: W x | W_g x, one matrix product
            if fused:
                x = GatedCrossMix.apply(z, self.bias[i], x0, x)
            else:
                # split in one op (backward: one cat) rather than two slices (whose backward each fills a zero
                # [B, 2d] gradient and copies into it): the same values
                w, g = z.split(d, dim=1)
                x = x0 * (w + self.bias[i]) * torch.sigmoid(g) + x
        return x
