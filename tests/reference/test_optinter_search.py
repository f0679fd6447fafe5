"""OptInter's pair layer (bars.models.layers.PairInteraction) against the official code
(https://github.com/fuyuanlyu/OptInter, commit 72735504, Apache-2.0) on real Frappe_x1 rows (45 pairs of its ten
fields): the search's mixed pair embeddings (memorise / factorise / naive weighted by the architecture weights),
their gradients with respect to alpha and both tables, and the memorised pair vocabulary.

Two references:

- ``transcribed_mix``: the official equations written out in this file (``learn/model/model_search.py@72735504``,
  ``DNN_cart_search.forward``: line 70 ``comb_embedding = comb_embeddings_table(combs)``, line 73
  ``addition_cate_embedding = addition_embedding_table(cates)``, lines 74-82 ``e_i * e_j`` per selected pair,
  line 85 the null embedding, lines 88-90 ``t = max(0.01, 1 - tau * step)`` (a float32 tensor) and
  ``softmax(arch_parameters / t, dim=1)``, lines 93-95 the weighted sum); and the vocabulary of the memorised
  pairs (``preprocess/utils.py@72735504``: ``generate_comb_dict`` line 54, a value with ``count >= Y`` in train
  gets its own id, every other value the pair's one OOV id; ``process_comb`` line 111, unknown values -> OOV),
  always run;
- the official ``DNN_cart_search`` itself, imported from a copy of the repository (``OPTINTER_REPO``: a checkout
  or a bare git mirror, default ``/work/.mirror/fuyuanlyu+OptInter/repo``; skipped with the reason when absent,
  failed under ``BARS_REQUIRE_OFFICIAL=1``; its module imports only torch and numpy): its pair part of the MLP
  input ``X`` (captured before ``fc_layers[0]``) and that part's gradients.

Layout: the official code embeds global ids in one table per kind; bars packs row 0 as padding and index ``i >= 1``
of pair (or field) ``k`` at row ``offset_k + i - 1``, so the transplant copies the packed tables whole and feeds
the official model bars' global rows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import import_official

from bars.models.layers import PairInteraction, all_pairs, pair_vocabulary

ROWS = 4096
Y = 20  # the official min count of a memorised pair value (CriteoSearch.py --Y)
CASES = [(0.0, 0), (5e-5, 12_600), (5e-5, 30_000)]  # (tau, step): t = 1, 0.37, 0.01 (the floor)


def _ours(frappe, dim: int = 10, seed: int = 0, dtype=torch.float64):
    spec, cols, _ = frappe
    pairs = all_pairs(spec)
    keys = pair_vocabulary(cols, spec, pairs, Y)  # the vocabulary of all 57,722 rows (the "train" of this test)
    layer = PairInteraction(spec, dim, pairs, keys).to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for emb in (layer.memorised, layer.factorised):
            emb.weight.copy_(torch.randn(emb.weight.shape, generator=g, dtype=dtype) * 0.1)
            emb.weight[0].zero_()
        layer.alpha.copy_(torch.randn(layer.alpha.shape, generator=g, dtype=dtype))
    batch = {k: v[:ROWS] for k, v in cols.items()}
    # bars' global rows: the official model's combs (memorised) and cates (factorisation table) ids
    combs = torch.stack([torch.where(i > 0, i + layer.memorised._offset[name] - 1, 0)
                         for name, i in ((n, layer.memorise_index(batch, k))
                                         for k, n in enumerate(layer.mem_names))], dim=1)
    cates = torch.stack([torch.where(batch[n].long() > 0, batch[n].long() + layer.factorised._offset[n] - 1, 0)
                         for n in layer.fac_fields], dim=1)
    selected = [(layer.fac_fields.index(a), layer.fac_fields.index(b)) for a, b in pairs]
    return layer, batch, combs, cates, selected


def transcribed_mix(comb_table, addition_table, arch, combs, cates, selected, tau: float, step: int):
    """model_search.py@72735504 DNN_cart_search.forward, lines 70-95 (the pair part)."""
    comb_embedding = torch.nn.functional.embedding(combs, comb_table)
    addition_cate_embedding = torch.nn.functional.embedding(cates, addition_table)
    comp = torch.stack([addition_cate_embedding[:, i] * addition_cate_embedding[:, j] for i, j in selected], dim=1)
    null_embedding = torch.zeros_like(comb_embedding)
    t = torch.tensor(max(0.01, 1 - tau * step), dtype=torch.float32)
    w = torch.softmax(arch / t, dim=1)
    return (comb_embedding * w[:, 0].unsqueeze(0).unsqueeze(2) + comp * w[:, 1].unsqueeze(0).unsqueeze(2)
            + null_embedding * w[:, 2].unsqueeze(0).unsqueeze(2))


def _temperature(tau: float, step: int) -> float:
    return float(torch.tensor(max(0.01, 1 - tau * step), dtype=torch.float32))  # as the official float32 tensor


@pytest.mark.parametrize("tau,step", CASES)
def test_search_mix_and_gradients_equal_the_transcribed_equations(frappe, tau, step):
    layer, batch, combs, cates, selected = _ours(frappe)
    layer.temperature = _temperature(tau, step)
    out = layer(batch)
    comb = layer.memorised.weight.detach().clone().requires_grad_(True)
    add = layer.factorised.weight.detach().clone().requires_grad_(True)
    arch = layer.alpha.detach().clone().requires_grad_(True)
    ref = transcribed_mix(comb, add, arch, combs, cates, selected, tau, step)
    assert out.shape == (ROWS, 45, 10)
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    (out * g).sum().backward()
    (ref * g).sum().backward()
    assert torch.allclose(layer.alpha.grad, arch.grad, rtol=1e-10, atol=1e-12)
    assert torch.allclose(layer.memorised.weight.grad, comb.grad, rtol=0, atol=1e-12)
    assert torch.allclose(layer.factorised.weight.grad, add.grad, rtol=0, atol=1e-12)
    # the retrain's choice is the argmax per pair (CriteoTrain.py line 141: cont_arch.argmax(1))
    assert layer.chosen() == [("memorise", "factorise", "naive")[i] for i in arch.detach().argmax(1).tolist()]


def test_memorised_vocabulary_is_the_official_count_threshold_partition(frappe):
    """generate_comb_dict / process_comb: per pair, a value with count >= Y has an id of its own, every other value
    the pair's OOV id. bars' ids are another numbering of the same partition (the official ids come from
    ``list(set(...))``, an arbitrary order), so: OOV exactly where the count is below Y, one id per known value."""
    _, cols, _ = frappe
    layer, _, _, _, _ = _ours(frappe)
    for k, (a, b) in enumerate(layer.pairs):
        va = [str(x) for x in cols[a].tolist()]
        vb = [str(x) for x in cols[b].tolist()]
        values = [x + "-" + y for x, y in zip(va, vb, strict=True)]  # utils.py line 52: str(x1) + '-' + str(x2)
        count: dict[str, int] = {}
        for v in values:
            count[v] = count.get(v, 0) + 1
        idx = layer.memorise_index(cols, k).tolist()
        ids: dict[str, int] = {}
        for v, i in zip(values, idx, strict=True):
            if count[v] >= Y:
                assert i >= 2 and ids.setdefault(v, i) == i
            else:
                assert i == 1
        assert len(set(ids.values())) == len(ids)  # distinct known values, distinct rows (no hashing here)
        assert layer.rows[k] == 2 + len(ids)


def _official_module(tmp_path: Path):
    (search,) = import_official(tmp_path, "OptInter", "OPTINTER_REPO", "/work/.mirror/fuyuanlyu+OptInter/repo",
                                {"learn/model/model_search.py": "optinter_model_search.py"}, ["optinter_model_search"])
    return search

@pytest.mark.parametrize("tau,step", CASES)
def test_search_mix_and_gradients_equal_the_official_dnn_cart_search(frappe, tmp_path, tau, step):
    official = _official_module(tmp_path)
    layer, batch, combs, cates, selected = _ours(frappe, dtype=torch.float32)
    layer.temperature = _temperature(tau, step)
    n_fields = len(layer.fac_fields)
    ref = official.DNN_cart_search(0, n_fields, len(selected), layer.factorised.weight.shape[0],
                                   layer.memorised.weight.shape[0], torch.nn.BCELoss(), selected,
                                   orig_embedding_dim=4, comb_embedding_dim=10, hidden_dims=[8], tau=tau)
    with torch.no_grad():  # transplant
        ref.comb_embeddings_table.weight.copy_(layer.memorised.weight)
        ref.addition_embedding_table.weight.copy_(layer.factorised.weight)
        ref.arch_parameters.copy_(layer.alpha)
    ref.step = step
    captured = {}
    ref.fc_layers[0].register_forward_pre_hook(lambda mod, args: captured.setdefault("X", args[0]))
    ref(torch.zeros(ROWS, 0), cates, combs)
    want = captured["X"][:, n_fields * 4:].reshape(ROWS, len(selected), 10)
    out = layer(batch)
    assert _close32(out, want)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * g).sum().backward()
    grads = torch.autograd.grad((want * g).sum(), [ref.arch_parameters, ref.comb_embeddings_table.weight,
                                                  ref.addition_embedding_table.weight])
    assert _close32(layer.alpha.grad, grads[0])
    assert _close32(layer.memorised.weight.grad, grads[1])
    assert _close32(layer.factorised.weight.grad, grads[2])


def _close32(a: torch.Tensor, b: torch.Tensor) -> bool:
    """float32 on both sides, sums over 4,096 rows (and 9 pairs per field) in different orders: equal up to
    1e-5 of the largest magnitude."""
    return float((a - b).abs().max()) <= 1e-5 * float(b.abs().max())
