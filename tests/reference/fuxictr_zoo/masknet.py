"""masknet: FuxiCTR 2.3.10 composition following model_zoo/MaskNet/src/MaskNet.py (its MaskBlock, SerialMaskNet
and ParallelMaskNet are defined in that file, so they are written here from it, on FuxiCTR's installed
FeatureEmbedding, MLP_Block and get_activation), and the transplant of our weights into it. The output sigmoid is
applied by ``forward`` (the model_zoo file puts BaseModel's output activation inside its mask nets; the same
function) so that ``RefModel.logits`` can read the logit."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr.pytorch.torch_utils import get_activation
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves, mlp_block, put
from torch import nn

MODEL_TYPES = {"serial": "SerialMaskNet", "parallel": "ParallelMaskNet"}


class MaskBlock(nn.Module):  # model_zoo MaskBlock: mask MLP (width int(H * ratio)), product, Linear, LN, act, dropout
    def __init__(self, input_dim, hidden_dim, output_dim, hidden_activation, reduction_ratio, dropout_rate,
                 layer_norm):
        super().__init__()
        width = int(hidden_dim * reduction_ratio)
        self.mask_layer = nn.Sequential(nn.Linear(input_dim, width), nn.ReLU(), nn.Linear(width, hidden_dim))
        layers = [nn.Linear(hidden_dim, output_dim, bias=False)]
        if layer_norm:
            layers.append(nn.LayerNorm(output_dim))
        layers.append(get_activation(hidden_activation))
        if dropout_rate > 0:
            layers.append(nn.Dropout(p=dropout_rate))
        self.hidden_layer = nn.Sequential(*layers)

    def forward(self, V_emb, V_hidden):
        return self.hidden_layer(self.mask_layer(V_emb) * V_hidden)


class SerialMaskNet(nn.Module):  # blocks input_dim -> units[0] -> ...; then Linear(units[-1], 1)
    def __init__(self, input_dim, hidden_units, hidden_activations, reduction_ratio, dropout_rates, layer_norm):
        super().__init__()
        self.hidden_units = [input_dim] + list(hidden_units)
        self.mask_blocks = nn.ModuleList(
            MaskBlock(input_dim, self.hidden_units[i], self.hidden_units[i + 1], hidden_activations,
                      reduction_ratio, dropout_rates, layer_norm)
            for i in range(len(self.hidden_units) - 1)
        )
        self.fc = nn.Sequential(nn.Linear(self.hidden_units[-1], 1))

    def forward(self, V_emb, V_hidden):
        v_out = V_hidden
        for block in self.mask_blocks:
            v_out = block(V_emb, v_out)
        return self.fc(v_out)


class ParallelMaskNet(nn.Module):  # num_blocks blocks over the embeddings, concatenated, MLP_Block -> 1
    def __init__(self, input_dim, num_blocks, block_dim, hidden_units, hidden_activations, reduction_ratio,
                 dropout_rates, layer_norm):
        super().__init__()
        self.mask_blocks = nn.ModuleList(
            MaskBlock(input_dim, input_dim, block_dim, hidden_activations, reduction_ratio, dropout_rates, layer_norm)
            for _ in range(num_blocks)
        )
        self.dnn = mlp_block(block_dim * num_blocks, hidden_units, hidden_activations, False, dropout_rates,
                             output_dim=1)

    def forward(self, V_emb, V_hidden):
        return self.dnn(torch.cat([block(V_emb, V_hidden) for block in self.mask_blocks], dim=-1))


class MaskNet(RefModel):  # model_zoo/MaskNet/src/MaskNet.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim = p["embedding_dim"]
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        input_dim = fmap.num_fields * dim
        self.model_type = MODEL_TYPES[p["model_type"]]
        if self.model_type == "SerialMaskNet":
            self.mask_net = SerialMaskNet(input_dim, p["dnn_hidden_units"], p["activation"], p["reduction_ratio"],
                                          p["dropout"], p["net_layernorm"])
        else:
            self.mask_net = ParallelMaskNet(input_dim, p["parallel_num_blocks"], p["parallel_block_dim"],
                                            p["dnn_hidden_units"], p["activation"], p["reduction_ratio"],
                                            p["dropout"], p["net_layernorm"])
        self.num_fields = fmap.num_fields
        self.emb_norm = nn.ModuleList(nn.LayerNorm(dim) for _ in range(self.num_fields)) if p["emb_layernorm"] \
            else None
        self.finish(lr)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X)
        if self.emb_norm is not None:
            fields = feature_emb.chunk(self.num_fields, dim=1)
            V_hidden = torch.cat([self.emb_norm[i](f) for i, f in enumerate(fields)], dim=1)
        else:
            V_hidden = feature_emb
        y = self.mask_net(feature_emb.flatten(start_dim=1), V_hidden.flatten(start_dim=1))
        return {"y_pred": self.output_activation(y)}


def transplant_masknet(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    if (theirs.emb_norm is None) != (ours.emb_norm is None):
        raise ValueError("masknet: embedding layer norm in one side only")
    if theirs.emb_norm is not None:
        for i, ln in enumerate(theirs.emb_norm):
            put(ln.weight, ours.emb_norm.weight[i], f"emb_norm.weight[{i}]")
            put(ln.bias, ours.emb_norm.bias[i], f"emb_norm.bias[{i}]")
    blocks = theirs.mask_net.mask_blocks
    if len(blocks) != len(ours.blocks):
        raise ValueError(f"masknet: {len(blocks)} mask blocks in FuxiCTR vs {len(ours.blocks)} in bars")
    for i, (a, b) in enumerate(zip(blocks, ours.blocks, strict=True)):
        copy_leaves(a, b, f"blocks[{i}]")
    if theirs.model_type == "SerialMaskNet":
        copy_leaves(theirs.mask_net.fc, ours.fc, "fc")
    else:
        copy_leaves(theirs.mask_net.dnn, ours.dnn, "dnn")


_S = {**E, "model_type": "serial", "dnn_hidden_units": (400, 400, 400), "activation": "relu",
      "reduction_ratio": 1.0, "emb_layernorm": True, "net_layernorm": True, "dropout": 0.0,
      "parallel_num_blocks": None, "parallel_block_dim": None}
_P = {**_S, "model_type": "parallel", "parallel_num_blocks": 3, "parallel_block_dim": 50, "emb_layernorm": False}
REFERENCE = Reference(MaskNet, transplant_masknet, {
    "serial-layernorms": _S,
    "serial-ratio-0.2-no-layernorm": {**_S, "reduction_ratio": 0.2, "emb_layernorm": False, "net_layernorm": False,
                                      "dnn_hidden_units": (64, 32)},
    "serial-ratio-4-tanh": {**_S, "reduction_ratio": 4.0, "activation": "tanh", "dnn_hidden_units": (40,)},
    "parallel-3x50": {**_P, "reduction_ratio": 2.0},
    "parallel-2x64-emb-layernorm-ratio-0.1": {**_P, "parallel_num_blocks": 2, "parallel_block_dim": 64,
                                             "reduction_ratio": 0.1, "emb_layernorm": True, "net_layernorm": False,
                                             "dnn_hidden_units": (100, 50)},
    "parallel-no-mlp": {**_P, "dnn_hidden_units": (), "reduction_ratio": 0.8},
}, "model_zoo/MaskNet/src/MaskNet.py")
