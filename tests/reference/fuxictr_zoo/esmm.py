"""esmm: FuxiCTR has no ESMM (``git grep -i esmm`` on its HEAD: no hits), so the model is checked against the
paper's equations (Ma et al., SIGIR 2018, eqs. 1-3) written out here on real Frappe rows with a synthetic second
label: pCTR and pCVR are sigmoids of two MLP towers over the same concatenated embeddings, pCTCVR = pCTR * pCVR,
and the loss is BCE(pCTR, y) + BCE(pCTCVR, y AND z) over every row, with no term on pCVR."""

from __future__ import annotations

import dataclasses

import torch
from fuxictr_reference import SECOND_LABEL, PaperOnly
from torch.nn import functional as F

from bars.models import build
from bars.models.layers import init_bars_
from bars.objective import loss_function


def _tower(layers, e: torch.Tensor) -> torch.Tensor:
    """Linear -> ReLU per hidden layer, then the output Linear, from the tower's weights (no dropout, no BN)."""
    linears = [m for m in layers.modules() if isinstance(m, torch.nn.Linear)]
    h = e
    for lin in linears[:-1]:
        h = torch.relu(h @ lin.weight.T + lin.bias)
    return (h @ linears[-1].weight.T + linears[-1].bias).reshape(-1)


def check(spec, batch) -> None:
    spec2 = dataclasses.replace(spec, labels=(spec.label, SECOND_LABEL))
    torch.manual_seed(0)
    model = init_bars_(build("esmm", spec2, {"embedding_dim": 10, "tower_hidden_units": (32, 16)})).eval()
    with torch.no_grad():  # weights with some spread, so the probabilities are far from 1/2
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    e = model.embedding.flat(batch).double()
    p_ctr = torch.sigmoid(_tower(model.ctr_tower.double(), e))
    p_cvr = torch.sigmoid(_tower(model.cvr_tower.double(), e))
    p_ctcvr = p_ctr * p_cvr  # eq. (1)
    model.double()
    out = model(batch)
    assert out.shape == (len(p_ctr), 2)
    assert torch.allclose(torch.sigmoid(out[:, 0]), p_ctr, atol=1e-12), "pCTR"
    assert torch.allclose(torch.sigmoid(out[:, 1]), p_ctcvr, atol=1e-12), "pCTCVR = pCTR x pCVR"
    assert torch.allclose(torch.sigmoid(model.cvr_logits(batch)), p_cvr, atol=1e-12), "pCVR"
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(len(p_ctr), generator=g) < 0.3).double()
    z = y * (torch.rand(len(p_ctr), generator=g) < 0.5).double()
    want = F.binary_cross_entropy(p_ctr, y) + F.binary_cross_entropy(p_ctcvr, z)  # eqs. (2)-(3), no CVR term
    got = model.training_loss(out, torch.stack([y, z], 1), loss_function("bce"))
    assert torch.allclose(got, want, rtol=1e-10), (float(got), float(want))


PAPER_ONLY = PaperOnly("FuxiCTR 2.3.10 has no ESMM (not in its model_zoo); checked against the paper's equations",
                       check)
