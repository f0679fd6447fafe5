"""fgcnn: FuxiCTR 2.3.10 composition following model_zoo/FGCNN/src/FGCNN.py, and the transplant of our weights into
it."""

from __future__ import annotations

import numpy as np
import torch
from fuxictr.pytorch.layers import FeatureEmbedding, InnerProductInteraction
from fuxictr.pytorch.torch_utils import get_activation
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves, mlp_block, put
from torch import nn


def per_layer(v, n):
    """FGCNN.validate_input: a non-list value is repeated for every convolution layer."""
    return list(v) if isinstance(v, list | tuple) else [v] * n


class FGCNNLayer(nn.Module):
    """FGCNN_Layer of the model_zoo file: per layer a Sequential (Conv2d (h, 1) with (h - 1) // 2 zero rows on both
    sides, BatchNorm2d when batch_norm, activation, MaxPool2d (p, 1) padded by H % p rows) and a recombination
    Sequential (Linear over the flattened pooled maps, activation); H is tracked as ceil(H / p)."""

    def __init__(self, num_fields, dim, channels, kernel_heights, pooling_sizes, recombined, activation, batch_norm):
        super().__init__()
        self.dim = dim
        convs, recombines, c_in, height = [], [], 1, num_fields
        for c_out, h, p, r in zip(channels, kernel_heights, pooling_sizes, recombined, strict=True):
            convs.append(nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=(h, 1), padding=(int((h - 1) / 2), 0)),
                *([nn.BatchNorm2d(c_out)] if batch_norm else []),
                get_activation(activation),
                nn.MaxPool2d((p, 1), padding=(height % p, 0)),
            ))
            height = int(np.ceil(height / p))
            recombines.append(nn.Sequential(nn.Linear(height * dim * c_out, height * dim * r),
                                            get_activation(activation)))
            c_in = c_out
        self.conv_layers = nn.ModuleList(convs)
        self.recombine_layers = nn.ModuleList(recombines)

    def forward(self, X):
        out, new = X, []
        for conv, rec in zip(self.conv_layers, self.recombine_layers, strict=True):
            out = conv(out)
            new.append(rec(torch.flatten(out, start_dim=1)).reshape(X.size(0), -1, self.dim))
        return torch.cat(new, dim=1)


class FGCNN(RefModel):  # model_zoo/FGCNN/src/FGCNN.py
    """There the DNN's MLP_Block ends with ``output_activation=self.output_activation``; here the sigmoid is applied
    in forward instead (the same function, and RefModel.logits can remove it)."""

    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim, f = p["embedding_dim"], fmap.num_fields
        channels = list(p["channels"])
        n = len(channels)
        heights = per_layer(p["kernel_heights"], n)
        pools = per_layer(p["pooling_sizes"], n)
        recombined = per_layer(p["recombined_channels"], n)
        self.share_embedding = p["share_embedding"]
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        if not self.share_embedding:
            self.fg_embedding_layer = FeatureEmbedding(fmap, dim)
        self.fgcnn_layer = FGCNNLayer(f, dim, channels, heights, pools, recombined, p["conv_activation"],
                                      p["conv_batch_norm"])
        total, height = f, f  # FGCNN.compute_input_dim
        for pool, r in zip(pools, recombined, strict=True):
            height = int(np.ceil(height / pool))
            total += height * r
        self.inner_product_layer = InnerProductInteraction(total, output="inner_product")
        self.dnn = mlp_block(total * (total - 1) // 2 + total * dim, p["dnn_hidden_units"], p["activation"],
                             p["batch_norm"], p["dropout"], output_dim=1)
        self.finish(lr)

    def null_biases(self):
        """Each convolution's bias when BatchNorm2d follows it (it shifts a whole channel, which BN removes)."""
        return [f"fgcnn_layer.conv_layers.{i}.0.bias" for i, seq in enumerate(self.fgcnn_layer.conv_layers)
                if isinstance(seq[1], nn.BatchNorm2d)]

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        emb2 = emb if self.share_embedding else self.fg_embedding_layer(X)
        combined = torch.cat([emb, self.fgcnn_layer(torch.unsqueeze(emb2, 1))], dim=1)
        dense = torch.cat([combined.flatten(start_dim=1), self.inner_product_layer(combined)], dim=1)
        return {"y_pred": self.output_activation(self.dnn(dense))}


def transplant_fgcnn(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    if (ours.fg_embedding is None) != theirs.share_embedding:
        raise ValueError("fgcnn: share_embedding differs")
    if ours.fg_embedding is not None:
        copy_embedding(theirs.fg_embedding_layer, ours.fg_embedding, "fg_embedding")
    gen = ours.generator
    if len(theirs.fgcnn_layer.conv_layers) != len(gen.convs):
        raise ValueError("fgcnn: number of convolution layers differs")
    for i, (seq, rec) in enumerate(zip(theirs.fgcnn_layer.conv_layers, theirs.fgcnn_layer.recombine_layers,
                                       strict=True)):
        conv = seq[0]
        put(conv.weight, gen.convs[i].weight, f"generator.convs[{i}].weight")
        put(conv.bias, gen.convs[i].bias, f"generator.convs[{i}].bias")
        if isinstance(seq[1], nn.BatchNorm2d) != isinstance(gen.norms[i], nn.BatchNorm2d):
            raise ValueError(f"fgcnn: layer {i}: BatchNorm2d in one library only")
        if isinstance(seq[1], nn.BatchNorm2d):
            src = dict(gen.norms[i].named_parameters()) | dict(gen.norms[i].named_buffers())
            for name, t in list(seq[1].named_parameters()) + list(seq[1].named_buffers()):
                put(t, src[name], f"generator.norms[{i}].{name}")
        pool = seq[-1]
        if (pool.kernel_size, pool.padding) != (gen.pools[i].kernel_size, gen.pools[i].padding):
            raise ValueError(f"fgcnn: layer {i}: pooling differs: FuxiCTR {pool} vs bars {gen.pools[i]}")
        copy_leaves(rec, gen.recombine[i], f"generator.recombine[{i}]")
    copy_leaves(theirs.dnn, ours.mlp, "mlp")


REFERENCE = Reference(FGCNN, transplant_fgcnn, {
    # FuxiCTR's FGCNN_test structure (four layers, per-layer lists) with a small MLP
    "four-layers": {**E, "share_embedding": False, "channels": (14, 16, 18, 20), "kernel_heights": (7, 7, 7, 7),
                    "pooling_sizes": (2, 2, 2, 2), "recombined_channels": (3, 3, 3, 3), "conv_activation": "tanh",
                    "conv_batch_norm": True, "dnn_hidden_units": (64, 64, 64), "activation": "relu",
                    "batch_norm": False, "dropout": 0.0},
    # shared table, no conv batch norm, scalar per-layer keys, relu convolutions, MLP with batch norm
    "shared-no-bn": {**E, "share_embedding": True, "channels": (6, 8), "kernel_heights": 3, "pooling_sizes": 2,
                     "recombined_channels": 2, "conv_activation": "relu", "conv_batch_norm": False,
                     "dnn_hidden_units": (32,), "activation": "relu", "batch_norm": True, "dropout": 0.0},
    # pooling 1 (no padding) and a mixed per-layer list, no hidden layer in the MLP
    "pool-1-no-mlp": {**E, "share_embedding": False, "channels": (4, 4, 4), "kernel_heights": (5, 3, 1),
                      "pooling_sizes": (1, 2, 2), "recombined_channels": (1, 2, 3), "conv_activation": "tanh",
                      "conv_batch_norm": True, "dnn_hidden_units": (), "activation": None, "batch_norm": None,
                      "dropout": None},
}, "model_zoo/FGCNN/src/FGCNN.py")
