"""ccpm: FuxiCTR 2.3.10 composition following model_zoo/CCPM/src/CCPM.py, and the transplant of our weights into
it."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding, KMaxPooling
from fuxictr.pytorch.torch_utils import get_activation
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves, put
from torch import nn


def ccpm_conv_layer(num_fields, channels, kernel_heights, activation):
    """CCPM_ConvLayer of the model_zoo file, as one Sequential: per layer i (1-based, l layers) zero padding of
    h_i - 1 rows above and below, Conv2d (h_i, 1), k-max pooling over fields with
    k_i = max(3, int((1 - (i / l) ** (l - i)) * F)) (k_l = 3), then the activation."""
    if len(channels) != len(kernel_heights):
        raise ValueError(f"channels {channels} / kernel_heights {kernel_heights}: lengths differ")
    layers, blocks, c_in = len(channels), [], 1
    for i, (c_out, h) in enumerate(zip(channels, kernel_heights, strict=True), start=1):
        k = max(3, int((1 - pow(float(i) / layers, layers - i)) * num_fields)) if i < layers else 3
        blocks += [nn.ZeroPad2d((0, 0, h - 1, h - 1)), nn.Conv2d(c_in, c_out, kernel_size=(h, 1)),
                   KMaxPooling(k, dim=2), get_activation(activation)]
        c_in = c_out
    return nn.Sequential(*blocks)


class CCPM(RefModel):  # model_zoo/CCPM/src/CCPM.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim = p["embedding_dim"]
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        self.conv_layer = ccpm_conv_layer(fmap.num_fields, list(p["channels"]), list(p["kernel_heights"]),
                                          p["activation"])
        self.fc = nn.Linear(3 * dim * p["channels"][-1], 1)
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        conv = self.conv_layer(torch.unsqueeze(self.embedding_layer(X), 1))  # [B, 1, F, D] -> [B, C, 3, D]
        return {"y_pred": self.output_activation(self.fc(conv.flatten(start_dim=1)))}


def transplant_ccpm(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    convs = [m for m in theirs.conv_layer if isinstance(m, nn.Conv2d)]
    if len(convs) != len(ours.conv.convs):
        raise ValueError("ccpm: number of convolution layers differs")
    for i, (t, o) in enumerate(zip(convs, ours.conv.convs, strict=True)):
        put(t.weight, o.weight, f"conv.convs[{i}].weight")
        put(t.bias, o.bias, f"conv.convs[{i}].bias")
    pools = [m.k for m in theirs.conv_layer if isinstance(m, KMaxPooling)]
    if pools != [m.k for m in ours.conv.pools]:
        raise ValueError(f"ccpm: k-max pooling sizes differ: FuxiCTR {pools} vs bars {ours.conv.pooling_sizes}")
    copy_leaves(theirs.fc, ours.fc, "fc")


REFERENCE = Reference(CCPM, transplant_ccpm, {
    "three-layers": {**E, "channels": (16, 16, 8), "kernel_heights": (6, 5, 3), "activation": "tanh"},
    "one-layer-relu": {**E, "channels": (8,), "kernel_heights": (4,), "activation": "relu"},
}, "model_zoo/CCPM/src/CCPM.py")
