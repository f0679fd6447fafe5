"""wukong: FuxiCTR 2.3.10 composition following model_zoo/WuKong/src/WuKong.py, and the transplant of our weights
into it."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves, mlp_block, put
from torch import nn


class FMB(nn.Module):
    """FactorizationMachineBlock of the model_zoo file: projection ``proj_Y`` (torch.randn, rank_k) or the full
    X X^T (rank_k None), LayerNorm over the flattened matrix, MLP_Block to output_features * dim with a ReLU
    output activation and the dropout on its hidden layers."""

    def __init__(self, n_in, n_out, dim, rank_k, units, activation, dropout):
        super().__init__()
        self.n_out, self.dim, self.rank_k = n_out, dim, rank_k
        if rank_k is not None:
            self.proj_Y = nn.Parameter(torch.randn(n_in, rank_k))
            fm_dim = n_in * rank_k
        else:
            fm_dim = n_in * n_in
        self.layer_norm = nn.LayerNorm(fm_dim)
        self.mlp = mlp_block(fm_dim, units, activation, False, dropout, output_dim=n_out * dim,
                             output_activation="relu")

    def forward(self, x):
        if self.rank_k is not None:
            fm = torch.bmm(x, x.transpose(1, 2) @ self.proj_Y)
        else:
            fm = torch.bmm(x, x.transpose(1, 2))
        return self.mlp(self.layer_norm(fm.flatten(start_dim=1))).view(-1, self.n_out, self.dim)


class LCB(nn.Module):
    """LinearCompressionBlock: a bias-free Linear over the feature axis."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out, bias=False)

    def forward(self, x):
        return self.linear(x.transpose(1, 2)).transpose(1, 2)


class WuKongLayer(nn.Module):
    """WuKongLayer: [FMB; LCB] + residual (the input, or residual_proj over the feature axis when the widths
    differ), then LayerNorm over the embedding dimension when layer_norm."""

    def __init__(self, n_in, lcb, fmb, dim, rank_k, units, activation, dropout, layer_norm):
        super().__init__()
        self.fmb = FMB(n_in, fmb, dim, rank_k, units, activation, dropout)
        self.lcb = LCB(n_in, lcb)
        self.layer_norm = nn.LayerNorm(dim) if layer_norm else None
        if n_in != lcb + fmb:
            self.residual_proj = nn.Linear(n_in, lcb + fmb)

    def forward(self, x):
        out = torch.cat([self.fmb(x), self.lcb(x)], dim=1)
        res = self.residual_proj(x.transpose(1, 2)).transpose(1, 2) if out.shape[1] != x.shape[1] else x
        out = out + res
        return self.layer_norm(out) if self.layer_norm is not None else out


class WuKong(RefModel):  # model_zoo/WuKong/src/WuKong.py
    """There ``fc`` (MLP_Block) ends with ``output_activation=self.output_activation``; here the sigmoid is applied
    in forward instead (the same function, and RefModel.logits can remove it)."""

    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim = p["embedding_dim"]
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        n_out = p["lcb_features"] + p["fmb_features"]
        self.wukong_stack = nn.Sequential(*[
            WuKongLayer(fmap.num_fields if i == 0 else n_out, p["lcb_features"], p["fmb_features"], dim,
                        p["fmb_rank_k"], list(p["fmb_mlp_units"]), p["fmb_mlp_activation"], p["dropout"],
                        p["layer_norm"])
            for i in range(p["num_wukong_layers"])
        ])
        self.fc = mlp_block(n_out * dim, p["mlp_hidden_units"], p["mlp_activation"], p["batch_norm"], 0,
                            output_dim=1)
        self.finish(lr)

    def null_biases(self):
        """Biases whose true gradient is zero (biases_before_batchnorm): residual_proj's bias when LayerNorm over
        the embedding dimension follows (it adds one constant to all D values of a feature, which that LayerNorm
        subtracts); and, when the top MLP starts Linear -> BatchNorm1d, the last layer's additive constant that
        reaches it unchanged (its LayerNorm bias, or without LayerNorm its residual_proj bias): the Linear maps
        it to one offset per unit, which BatchNorm subtracts."""
        out = [f"wukong_stack.{i}.residual_proj.bias" for i, layer in enumerate(self.wukong_stack)
               if hasattr(layer, "residual_proj") and layer.layer_norm is not None]
        if any(isinstance(m, nn.BatchNorm1d) for m in self.fc.modules()):
            i, last = len(self.wukong_stack) - 1, self.wukong_stack[-1]
            if last.layer_norm is not None:
                out.append(f"wukong_stack.{i}.layer_norm.bias")
            elif hasattr(last, "residual_proj"):
                out.append(f"wukong_stack.{i}.residual_proj.bias")
        return out

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        out = self.wukong_stack(self.embedding_layer(X))
        return {"y_pred": self.output_activation(self.fc(out.flatten(start_dim=1)))}


def transplant_wukong(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    if len(theirs.wukong_stack) != len(ours.layers):
        raise ValueError("wukong: number of layers differs")
    for i, (t, o) in enumerate(zip(theirs.wukong_stack, ours.layers, strict=True)):
        if (t.fmb.rank_k is None) != (o.fmb.proj is None):
            raise ValueError(f"wukong: layer {i}: projection in one library only")
        if o.fmb.proj is not None:
            put(t.fmb.proj_Y, o.fmb.proj, f"layers[{i}].fmb.proj")
        copy_leaves(t.fmb.layer_norm, o.fmb.layer_norm, f"layers[{i}].fmb.layer_norm")
        copy_leaves(t.fmb.mlp, o.fmb.mlp, f"layers[{i}].fmb.mlp")
        copy_leaves(t.lcb.linear, o.lcb, f"layers[{i}].lcb")
        if hasattr(t, "residual_proj") != (o.residual_proj is not None):
            raise ValueError(f"wukong: layer {i}: residual projection in one library only")
        if o.residual_proj is not None:
            copy_leaves(t.residual_proj, o.residual_proj, f"layers[{i}].residual_proj")
        if (t.layer_norm is None) != isinstance(o.layer_norm, nn.Identity):
            raise ValueError(f"wukong: layer {i}: layer norm in one library only")
        if t.layer_norm is not None:
            copy_leaves(t.layer_norm, o.layer_norm, f"layers[{i}].layer_norm")
    copy_leaves(theirs.fc, ours.mlp, "mlp")


REFERENCE = Reference(WuKong, transplant_wukong, {
    # FuxiCTR's WuKong_test structure: 3 layers of 8 + 8 features (the first with a residual projection)
    "test-config": {**E, "num_wukong_layers": 3, "lcb_features": 8, "fmb_features": 8, "fmb_mlp_units": (32, 32),
                    "fmb_mlp_activation": "relu", "fmb_rank_k": 8, "mlp_hidden_units": (32, 32),
                    "mlp_activation": "relu", "batch_norm": True, "layer_norm": True, "dropout": 0.0},
    # vanilla FM (no projection), no layer norm, no batch norm, width kept at the field count (10 = 6 + 4: the
    # residual is the input itself), no hidden units in either MLP
    "vanilla-fm-identity-residual": {**E, "num_wukong_layers": 2, "lcb_features": 6, "fmb_features": 4,
                                     "fmb_mlp_units": (), "fmb_mlp_activation": "relu", "fmb_rank_k": None,
                                     "mlp_hidden_units": (), "mlp_activation": "relu", "batch_norm": False,
                                     "layer_norm": False, "dropout": 0.0},
    # no layer norm with residual projections (10 -> 16 features, then the identity), top MLP with batch norm
    "no-layer-norm": {**E, "num_wukong_layers": 2, "lcb_features": 8, "fmb_features": 8, "fmb_mlp_units": (16,),
                      "fmb_mlp_activation": "relu", "fmb_rank_k": 4, "mlp_hidden_units": (16,),
                      "mlp_activation": "relu", "batch_norm": True, "layer_norm": False, "dropout": 0.0},
}, "model_zoo/WuKong/src/WuKong.py")
