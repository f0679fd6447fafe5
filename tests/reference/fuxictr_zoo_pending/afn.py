"""afn: FuxiCTR 2.3.10 composition following model_zoo/AFN/src/AFN.py (``ensemble_dnn=False``), and the transplant
of our weights into it. With ``ensemble_dnn=True`` the same composition is afn_plus's reference
(fuxictr_zoo/afn_plus.py)."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr_reference import E, Reference, RefModel, copy_embedding, copy_leaves, mlp_block, put
from torch import nn


class AFN(RefModel):  # model_zoo/AFN/src/AFN.py; ensemble_dnn = our params have dnn_hidden_units (afn_plus)
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        dim, f, neurons = p["embedding_dim"], fmap.num_fields, p["logarithmic_neurons"]
        self.embedding_layer = FeatureEmbedding(fmap, dim)
        self.coefficient_W = nn.Linear(f, neurons, bias=False)
        self.dense_layer = mlp_block(dim * neurons, p["afn_hidden_units"], p["afn_activation"], p["batch_norm"],
                                     p["afn_dropout"], output_dim=1)
        self.log_batch_norm = nn.BatchNorm1d(f)
        self.exp_batch_norm = nn.BatchNorm1d(neurons)
        self.ensemble_dnn = "dnn_hidden_units" in p
        if self.ensemble_dnn:
            self.embedding_layer2 = FeatureEmbedding(fmap, dim)
            self.dnn = mlp_block(dim * f, p["dnn_hidden_units"], p["dnn_activation"], p["batch_norm"],
                                 p["dnn_dropout"], output_dim=1)
            self.fc = nn.Linear(2, 1)
        self.finish(lr)

    def logarithmic_net(self, emb):
        """[B, F, D] -> [B, L * D]: BN_L(exp(W . BN_F(log(max(|e|, 1e-5))))), W acting on the field axis."""
        log_emb = self.log_batch_norm(torch.log(torch.clamp(emb.abs(), min=1e-5)))
        cross = torch.exp(self.coefficient_W(log_emb.transpose(2, 1)).transpose(1, 2))
        return self.exp_batch_norm(cross).flatten(start_dim=1)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        y = self.dense_layer(self.logarithmic_net(self.embedding_layer(X)))
        if self.ensemble_dnn:
            dnn_out = self.dnn(self.embedding_layer2(X).flatten(start_dim=1))
            y = self.fc(torch.cat([y, dnn_out], dim=-1))
        return {"y_pred": self.output_activation(y)}


def transplant_afn(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    put(theirs.coefficient_W.weight, ours.log_net.coefficient_W.weight, "log_net.coefficient_W")
    copy_leaves(theirs.log_batch_norm, ours.log_net.log_batch_norm, "log_net.log_batch_norm")
    copy_leaves(theirs.exp_batch_norm, ours.log_net.exp_batch_norm, "log_net.exp_batch_norm")
    copy_leaves(theirs.dense_layer, ours.dense_layer, "dense_layer")
    if theirs.ensemble_dnn != hasattr(ours, "dnn"):
        raise ValueError("afn: the ensemble DNN is present in one side only")
    if theirs.ensemble_dnn:
        copy_embedding(theirs.embedding_layer2, ours.embedding2, "embedding2")
        copy_leaves(theirs.dnn, ours.dnn, "dnn")
        copy_leaves(theirs.fc, ours.fc, "fc")


REFERENCE = Reference(AFN, transplant_afn, {
    "bn": {**E, "logarithmic_neurons": 20, "afn_hidden_units": (64, 64), "afn_activation": "relu",
           "afn_dropout": 0.0, "batch_norm": True},
    "plain": {**E, "logarithmic_neurons": 8, "afn_hidden_units": (32,), "afn_activation": "tanh",
              "afn_dropout": 0.0, "batch_norm": False},
}, "model_zoo/AFN/src/AFN.py")
