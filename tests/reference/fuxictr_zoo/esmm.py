"""esmm: FuxiCTR 2.3.10 has no ESMM (``git grep -i esmm`` on its HEAD: no hits), so the reference is a public
PyTorch implementation, torch-rechub's (datawhalechina/torch-rechub ``torch_rechub/models/multi_task/esmm.py``,
class ``ESMM``, and its ``MTLTrainer``'s ESMM loss), composed here on FuxiCTR's installed layers and multi-task
base (``RefMultiTaskModel``): the concatenation of every field's embedding feeds two towers (torch-rechub's ``MLP``:
Linear -> BatchNorm -> activation -> Dropout per hidden layer, then Linear(1); FuxiCTR's ``MLP_Block`` computes the
same, with batch norm as a switch, since the project's default towers have none), ``pCVR = sigmoid(cvr tower)``,
``pCTR = sigmoid(ctr tower)``, ``pCTCVR = pCTR * pCVR``. torch-rechub's trainer sums the losses of its outputs
after the first (pCTR and pCTCVR, ``loss_list[1:]``): the composition outputs exactly those two against the two
labels, whose per-task BCE sum is FuxiCTR's ``MultiTaskModel`` loss. torch-rechub's regularisation is not used
(FuxiCTR's, as for every reference here). The paper's equations are checked in the fast suite
(tests/test_models_multitask.py::test_esmm_follows_the_paper)."""

from __future__ import annotations

import torch
from fuxictr.pytorch.layers import FeatureEmbedding
from fuxictr_reference import E, Reference, RefMultiTaskModel, copy_embedding, copy_leaves, mlp_block


class ESMM(RefMultiTaskModel):  # torch_rechub/models/multi_task/esmm.py
    def __init__(self, fmap, p, lr, reg_e, reg_n):
        super().__init__(fmap, reg_e, reg_n)
        act, drop, bn = p["activation"], p["dropout"], p["batch_norm"]
        self.embedding_layer = FeatureEmbedding(fmap, p["embedding_dim"])
        dim = p["embedding_dim"] * fmap.num_fields
        self.tower_ctr = mlp_block(dim, p["tower_hidden_units"], act, bn, drop, output_dim=1)
        self.tower_cvr = mlp_block(dim, p["tower_hidden_units"], act, bn, drop, output_dim=1)
        self.finish(lr)

    def _towers(self, inputs):
        x = self.embedding_layer(self.get_inputs(inputs)).flatten(start_dim=1)
        return self.tower_ctr(x), self.tower_cvr(x)

    def forward(self, inputs):
        ctr_logit, cvr_logit = self._towers(inputs)
        ctr_pred, cvr_pred = torch.sigmoid(ctr_logit), torch.sigmoid(cvr_logit)
        ctr, ctcvr = self.feature_map.labels
        return {f"{ctr}_pred": ctr_pred, f"{ctcvr}_pred": ctr_pred * cvr_pred}

    def logits(self, inputs):
        """[logit(pCTR), logit(pCTCVR)] (the product has no pre-sigmoid output to swap in)."""
        out = self.forward(dict(inputs))
        p = torch.cat([out[f"{n}_pred"].reshape(-1, 1) for n in self.feature_map.labels], dim=1)
        return torch.log(p) - torch.log1p(-p)


def transplant_esmm(ours, theirs):
    copy_embedding(theirs.embedding_layer, ours.embedding, "embedding")
    copy_leaves(theirs.tower_ctr, ours.ctr_tower, "tower_ctr")
    copy_leaves(theirs.tower_cvr, ours.cvr_tower, "tower_cvr")


REFERENCE = Reference(ESMM, transplant_esmm, {
    # torch-rechub's towers (batch norm on every hidden layer; one layer, as the ShareBottom case explains: a bias
    # before a BatchNorm has a zero true gradient and wanders differently under Adam in the two libraries)
    "rechub-bn": {**E, "tower_hidden_units": (32,), "activation": "relu", "batch_norm": True, "dropout": 0.0},
    "prelu-two-layers": {**E, "tower_hidden_units": (64, 16), "activation": "prelu", "batch_norm": False,
                         "dropout": 0.0},
}, "torch_rechub/models/multi_task/esmm.py (datawhalechina/torch-rechub; FuxiCTR has no ESMM)", multi_task=True)
