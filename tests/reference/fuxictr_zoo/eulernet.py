"""eulernet: FuxiCTR 2.3.10 composition following model_zoo/EulerNet/src/EulerNet.py, and the transplant of our
weights into it. The Euler interaction layer is defined in the model_zoo file, so it is written here from that
file, step by step as it computes: log-modulus and phase reshaped to ``[B, F, D]``, transposed, multiplied by the
orders on the right, transposed back; the ``im`` Linear applied to the real and imaginary parts separately; two
``reg`` calls summed. The construction order is the file's too: ``reset_parameters()`` runs after the embedding
and BEFORE the interaction layers and ``reg`` exist, so those keep their own initialisation (not :meth:`finish`,
which would reset them)."""

from __future__ import annotations

import itertools

import torch
from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves, put
from torch import nn


class EulerInteractionLayer(nn.Module):  # model_zoo/EulerNet/src/EulerNet.py: EulerInteractionLayer
    def __init__(self, inshape, outshape, embedding_dim, apply_norm, net_ex_dropout, net_im_dropout):
        super().__init__()
        self.feature_dim, self.apply_norm = embedding_dim, apply_norm
        n_in, n_out = inshape // embedding_dim, outshape // embedding_dim
        if inshape == outshape:
            orders = torch.eye(n_in, n_out)
        else:
            orders = torch.softmax(torch.randn(n_in, n_out) / 0.01, dim=0)
        self.inter_orders = nn.Parameter(orders)
        self.im = nn.Linear(inshape, outshape)
        nn.init.xavier_uniform_(self.im.weight)
        self.bias_lam = nn.Parameter(torch.randn(1, embedding_dim, n_out) * 0.01)
        self.bias_theta = nn.Parameter(torch.randn(1, embedding_dim, n_out) * 0.01)
        self.drop_ex = nn.Dropout(p=net_ex_dropout)
        self.drop_im = nn.Dropout(p=net_im_dropout)
        self.norm_r = nn.LayerNorm([embedding_dim])
        self.norm_p = nn.LayerNorm([embedding_dim])

    def forward(self, complex_features):
        r, p = complex_features
        b, d = r.shape[0], self.feature_dim
        lam = 0.5 * torch.log((r ** 2 + p ** 2 + 1e-8).reshape(b, -1, d))
        theta = torch.atan2(p, r).reshape(b, -1, d)
        lam, theta = self.drop_ex(lam).transpose(-2, -1), self.drop_ex(theta).transpose(-2, -1)
        lam = torch.exp(lam @ self.inter_orders + self.bias_lam).transpose(-2, -1)
        theta = (theta @ self.inter_orders + self.bias_theta).transpose(-2, -1)
        r = torch.relu(self.im(self.drop_im(r.reshape(b, -1)))).reshape(b, -1, d)
        p = torch.relu(self.im(self.drop_im(p.reshape(b, -1)))).reshape(b, -1, d)
        o_r, o_p = r + lam * torch.cos(theta), p + lam * torch.sin(theta)
        if self.apply_norm:
            o_r, o_p = self.norm_r(o_r), self.norm_p(o_p)
        return o_r, o_p


class EulerNet(RefModel):  # model_zoo/EulerNet/src/EulerNet.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim, f = p["embedding_dim"], fmap.num_fields
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        shapes = [dim * f] + [n * dim for n in p["shape"]]
        self.reset_parameters()  # here, as the model_zoo file: only the embedding exists yet
        self.Euler_interaction_layers = nn.Sequential(*(
            EulerInteractionLayer(a, b, dim, p["layer_norm"], p["ex_dropout"], p["im_dropout"])
            for a, b in itertools.pairwise(shapes)))
        self.mu = nn.Parameter(torch.ones(1, f, 1))
        self.reg = nn.Linear(shapes[-1], 1)
        nn.init.xavier_normal_(self.reg.weight)
        self.compile("adam", "binary_crossentropy", lr)
        self.model_to_device()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        r, p = self.mu * torch.cos(emb), self.mu * torch.sin(emb)
        o_r, o_p = self.Euler_interaction_layers((r, p))
        y = self.reg(o_r.reshape(o_r.shape[0], -1)) + self.reg(o_p.reshape(o_p.shape[0], -1))
        return {"y_pred": self.output_activation(y)}


def transplant_eulernet(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    put(theirs.mu, ours.net.mu, "net.mu")
    put(theirs.reg.weight, ours.net.weight, "net.weight")
    put(theirs.reg.bias, ours.net.bias, "net.bias")
    for i, (t, o) in enumerate(zip(theirs.Euler_interaction_layers, ours.net.layers, strict=True)):
        for n in ("inter_orders", "bias_lam", "bias_theta"):
            put(getattr(t, n), getattr(o, n), f"net.layers[{i}].{n}")
        put(t.im.weight, o.weight, f"net.layers[{i}].weight")
        put(t.im.bias, o.bias, f"net.layers[{i}].bias")
        copy_leaves(t.norm_r, o.norm_r, f"net.layers[{i}].norm_r")
        copy_leaves(t.norm_p, o.norm_p, f"net.layers[{i}].norm_p")


REFERENCE = Reference(EulerNet, transplant_eulernet, {
    "one-layer-ln": {**E, "shape": (52,), "ex_dropout": 0.0, "im_dropout": 0.0, "layer_norm": True},
    "three-layers-no-ln": {**E, "shape": (40, 40, 40), "ex_dropout": 0.0, "im_dropout": 0.0, "layer_norm": False},
    "same-width-ln": {**E, "shape": (10, 16), "ex_dropout": 0.0, "im_dropout": 0.0, "layer_norm": True},
    "no-layer": {**E, "shape": (), "ex_dropout": 0.0, "im_dropout": 0.0, "layer_norm": False},
}, "model_zoo/EulerNet/src/EulerNet.py")
