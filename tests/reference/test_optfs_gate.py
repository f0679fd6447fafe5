"""OptFS's gate (bars.models.layers.FeatureGate hooked on a FeatureEmbedding) against the official code's
``MaskEmbedding`` (https://github.com/fuyuanlyu/OptFS, commit 9500f1f7, MIT), on real Frappe_x1 rows: the gated
embeddings, their gradients with respect to the embedding table and to the gate weights, and the sparsity penalty,
for soft gates at several temperatures and for the hard mask (``ticket``).

Two references:

- ``transcribed_gate``: the official equations written out (``modules/mask.py``: ``compute_mask`` lines 25-32,
  ``forward`` lines 38-40, ``reg`` lines 58-59), always run;
- the official ``modules/mask.py`` itself, imported from a copy of the repository (``OPTFS_REPO``: a checkout or a
  bare git mirror, default ``/work/.mirror/fuyuanlyu+OptFS/repo``; skipped with the reason when absent, failed
  under ``BARS_REQUIRE_OFFICIAL=1``). Its module imports only torch and numpy.

Layout: the official code embeds global feature ids ``0..N-1`` in one table; bars packs row 0 as padding and
value ``i >= 1`` of field ``f`` at row ``offset_f + i - 1``, so official id = bars row - 1 (the gate's rows are
laid out the same way, per categorical field in spec order).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import import_official

from bars.models.layers import FeatureEmbedding, FeatureGate

ROWS = 4096
INIT = 0.5
CASES = [(1.0, False), (7.3, False), (200.0, False), (1.0, True)]  # (temperature, hard)


def transcribed_gate(mask_weight: torch.Tensor, x: torch.Tensor, temp: float, ticket: bool, init: float):
    """modules/mask.py@9500f1f7 MaskEmbedding.compute_mask (lines 25-32): scaling * (sigmoid(temp * m) or m > 0)."""
    scaling = 1.0 / (1.0 / (1.0 + torch.exp(torch.tensor(-init, dtype=torch.float64)))).item()
    m = torch.nn.functional.embedding(x, mask_weight)
    mask = (m > 0).to(m.dtype) if ticket else torch.sigmoid(temp * m)
    return scaling * mask


def _official_module(tmp_path: Path):
    (mask,) = import_official(tmp_path, "OptFS", "OPTFS_REPO", "/work/.mirror/fuyuanlyu+OptFS/repo",
                              {f"modules/{n}": f"modules/{n}" for n in ("mask.py", "layers.py")}, ["modules.mask"])
    return mask

def _ours(frappe, dim: int = 10, seed: int = 0):
    spec, cols, _ = frappe
    torch.manual_seed(seed)
    emb = FeatureEmbedding(spec, dim).double()
    with torch.no_grad():
        emb.weight.normal_(0, 0.1)
        emb.weight[0].zero_()
    gate = FeatureGate(spec, init=INIT).double()
    with torch.no_grad():
        gate.weight.normal_(0, 0.05)  # some gates open, some closed, all near the boundary
    gate.attach(emb)
    batch = {k: v[:ROWS] for k, v in cols.items()}
    rows = torch.stack([batch[n].long() + gate.offsets[n] - 1 for n in gate.field_names], dim=1)  # bars rows
    return emb, gate, batch, rows


@pytest.mark.parametrize("temp,hard", CASES)
def test_gate_equals_the_transcribed_equations(frappe, temp, hard):
    emb, gate, batch, rows = _ours(frappe)
    gate.temperature, gate.hard = temp, hard
    out = emb(batch)
    w = gate.weight.detach().clone().requires_grad_(True)
    table = emb.weight.detach().clone().requires_grad_(True)
    ref = torch.nn.functional.embedding(rows, table) * transcribed_gate(w, rows, temp, hard, INIT)
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    (ref * g).sum().backward()
    assert torch.allclose(emb.weight.grad, table.grad, rtol=0, atol=1e-12)
    if not hard:
        assert torch.allclose(gate.weight.grad, w.grad, rtol=0, atol=1e-12)
    assert torch.allclose(gate.penalty(), torch.sigmoid(temp * w[1:]).sum(), rtol=1e-12)


@pytest.mark.parametrize("temp,hard", CASES)
def test_gate_equals_the_official_mask_embedding(frappe, tmp_path, temp, hard):
    official = _official_module(tmp_path)
    emb, gate, batch, rows = _ours(frappe)
    gate.temperature, gate.hard = temp, hard
    n = emb.weight.shape[0] - 1
    ref = official.MaskEmbedding(n, emb.dim, mask_initial_value=INIT).double()
    with torch.no_grad():  # transplant: official id = bars row - 1
        ref.embedding.copy_(emb.weight[1:])
        ref.mask_weight.copy_(gate.weight[1:])
    out = emb(batch)
    want = ref(rows - 1, temp=temp, ticket=hard)
    # the official hard mask is `(m > 0).float()`: float32, so its scale 1/sigmoid(0.5) is rounded to float32
    rtol = 1e-7 if hard else 0.0
    assert torch.allclose(out, want, rtol=rtol, atol=1e-12)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    (want * g).sum().backward()
    assert torch.allclose(emb.weight.grad[1:], ref.embedding.grad, rtol=rtol, atol=1e-12)
    if not hard:
        assert torch.allclose(gate.weight.grad[1:], ref.mask_weight.grad, rtol=0, atol=1e-12)
    assert torch.allclose(gate.penalty(), ref.reg(temp), rtol=1e-12)
    kept_official = ref.compute_remaining_weights(temp, ticket=True)  # official "feature remain" (ticket)
    assert float(gate.kept().double().mean()) == pytest.approx(kept_official, rel=1e-12)
