"""Activations and dense blocks: dropout (with a cheaper CPU mask), LayerNorm (a cheaper CPU backward for narrow
widths), MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bars.models.layers.kernels import (
    SMALL_NORM_MAX,
    MaskedDropout,
    SmallLayerNorm,
    layer_norm_forward,
    traced,
)

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def activation(name: str, inplace: bool = False) -> nn.Module:
    """An activation module by (case-insensitive) name; one of :data:`ACTIVATIONS`. ``inplace`` applies to ReLU
    only (safe after Linear or BatchNorm, whose backward does not need their output)."""
    key = name.lower()
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    if key == "relu":
        return nn.ReLU(inplace=inplace)
    return ACTIVATIONS[key]()




class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` (same parameters, state and initialisation; the same forward values) with a cheaper CPU
    backward over a narrow axis. torch's backward runs a vector loop along each row, which a width that is not a
    multiple of 8 leaves mostly in its scalar tail: 27 ms for WuKong's [4096, 80, 10] on two cores, against 1 ms
    at width 16. For one-dimensional widths <= 32 that are not multiples of 8 (with weight and bias, float32, CPU,
    training) the backward is :class:`bars.models.layers.kernels.SmallLayerNorm`'s (5 ms there; 2-5x faster than
    torch's below width 32, no faster above: MaskNet's 50 stays torch's); the gradients agree
    with torch's to float32 rounding (sums in another order). :meth:`forward_dim` normalises another axis than the
    last, without moving it. Other widths, devices and traced graphs (export): ``F.layer_norm``."""

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_dim(x, -1)

    def forward_dim(self, x: Tensor, dim: int) -> Tensor:
        """The normalisation over axis ``dim`` of ``x`` (one-dimensional normalized_shape): the values of moving
        that axis last, normalising and moving it back; on CPU in float32, without the copies."""
        last = dim % x.dim() == x.dim() - 1
        width = self.normalized_shape[0] if len(self.normalized_shape) == 1 else 0
        kernel = (0 < width <= SMALL_NORM_MAX and self.weight is not None and self.bias is not None
                  and x.device.type == "cpu" and x.dtype == torch.float32
                  and not traced())
        grad = torch.is_grad_enabled() and (x.requires_grad or (self.weight is not None and self.weight.requires_grad))
        if not kernel or (last and (width % 8 == 0 or not grad)):
            if last:
                return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
            a, b = dim % x.dim(), x.dim() - 1  # non-negative axes (ONNX's Transpose takes no -1)
            y = F.layer_norm(x.transpose(a, b), self.normalized_shape, self.weight, self.bias, self.eps)
            return y.transpose(a, b)
        x = x.contiguous()
        if grad:
            return SmallLayerNorm.apply(x, self.weight, self.bias, self.eps, dim)
        return layer_norm_forward(x, self.weight, self.bias, self.eps, keep=False, dim=dim)[0]


class Dice(nn.Module):
    """Dice (DIN, Zhou et al., KDD 2018, eq. 9), as FuxiCTR 2.3.10's ``layers.activations.Dice``:
    ``p = sigmoid(BN(x))``, ``f(x) = p * x + alpha * (1 - p) * x``, where BN normalises each of the ``dim`` units
    over the batch (no affine, eps 1e-9, momentum 0.01: running statistics at inference) and ``alpha`` [dim]
    starts at zero. Input ``[N, dim]``."""

    def __init__(self, dim: int, eps: float = 1e-9) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=eps, momentum=0.01)
        self.alpha = nn.Parameter(torch.zeros(dim))

    def reset_parameters(self) -> None:
        self.bn.reset_parameters()
        nn.init.zeros_(self.alpha)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            z = self.bn(x)
        else:  # the BatchNorm's inference formula written out: the ONNX exporter needs no known channel size
            z = (x - self.bn.running_mean) * torch.rsqrt(self.bn.running_var + self.bn.eps)
        p = torch.sigmoid(z)
        return x * (self.alpha + (1 - self.alpha) * p)  # = p x + alpha (1 - p) x, in fewer passes


# ------------------------------------------------------------------------------------------------------------
# Dense blocks
# ------------------------------------------------------------------------------------------------------------
class Dropout(nn.Module):
    """Inverted dropout, as ``nn.Dropout``, with a cheaper mask on CPU.

    ``torch.bernoulli_`` on CPU draws one generator call per element and was a third of DCN's training step on
    two cores. Here one 64-bit key from the (seeded, global) torch generator per call and a counter hash
    (splitmix64) give four 16-bit uniforms per 64-bit value (:mod:`bars.models.layers.kernels`: one pass in the
    optional compiled kernel, the same values in torch ops without it); an element is kept when its uniform is
    >= ``round(p * 65536)``, so the drop probability is ``p`` rounded to a multiple of 1/65536 (0.2 -> 0.199997)
    and kept values are scaled by the exact ``1 / keep_probability``. On other devices it is ``F.dropout``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self._threshold = round(p * 65536) - 32768  # on the signed int16 scale
        self._scale = 65536.0 / (65536 - round(p * 65536))

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        return MaskedDropout.apply(x, self._threshold, self._scale, False)


class ReLUDropout(Dropout):
    """``Dropout(ReLU(x))`` in one mask on CPU while training: ``x * ((x > 0) & keep) / keep_probability`` (one
    pass forward and one multiply backward instead of ReLU + its threshold backward + the dropout multiply). Same
    values and gradients as the two modules in sequence."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return super().forward(torch.relu(x))
        return MaskedDropout.apply(x, self._threshold, self._scale, True)


class MLP(nn.Module):
    """Per hidden layer: Linear -> BatchNorm (optional) -> activation (PReLU: one slope per unit, init 0.1, as
    FuxiCTR; ``dice``: :class:`Dice` of the layer's width) -> :class:`Dropout` (when > 0); then an optional
    output Linear (``output_dim``). With no hidden units and no output_dim it is the identity. ReLU followed by
    dropout is the single module :class:`ReLUDropout` (same function, fewer passes over memory)."""

    def __init__(
        self,
        input_dim: int,
        hidden_units: Sequence[int],
        activation_name: str = "relu",
        batch_norm: bool = False,
        dropout: float = 0.0,
        output_dim: int | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = input_dim
        for h in hidden_units:
            layers.append(nn.Linear(d, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            if dropout > 0 and activation_name.lower() == "relu":
                layers.append(ReLUDropout(dropout))
            else:
                # PReLU as FuxiCTR's MLP_Block: one slope per unit, initialised 0.1
                act = nn.PReLU(h, init=0.1) if activation_name.lower() == "prelu" else None
                if activation_name.lower() == "dice":  # one Dice (its own BatchNorm and alpha) per layer
                    act = Dice(h)
                layers.append(act or activation(activation_name, inplace=True))
                if dropout > 0:
                    layers.append(Dropout(dropout))
            d = h
        if output_dim is not None:
            layers.append(nn.Linear(d, output_dim))
            d = output_dim
        self.net = nn.Sequential(*layers)
        self.output_dim = d

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
