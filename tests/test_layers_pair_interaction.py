"""OptInter's pair layer (bars.models.layers.PairInteraction): the pair vocabulary and its deterministic indexing
(exact and hashed), the mixed search output and its gradients, the fixed choices of the retrain, the parameter
accounting and the memory check."""

from __future__ import annotations

import pytest
import torch

from bars.data.spec import Feature, FeatureSpec
from bars.models.layers import PairInteraction, all_pairs, pair_keys, pair_vocabulary
from bars.models.layers.field_aware import EmbeddingMemoryError

SPEC = FeatureSpec(dataset="tiny3", label="click", features=(
    Feature("a", "categorical", vocab_size=6), Feature("price", "numeric"), Feature("b", "categorical", vocab_size=5),
    Feature("c", "categorical", vocab_size=4)))


def _columns(n: int = 400, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randint(0, 6, (n,), generator=g, dtype=torch.int32),
            "b": torch.randint(1, 5, (n,), generator=g, dtype=torch.int32),
            "c": torch.randint(1, 4, (n,), generator=g, dtype=torch.int32),
            "price": torch.randn(n, generator=g)}


def _layer(min_count: int = 1, hash_rows: int = 1000, choices=None, seed: int = 0) -> PairInteraction:
    cols = _columns()
    pairs = all_pairs(SPEC)
    keys = pair_vocabulary(cols, SPEC, pairs, min_count)
    torch.manual_seed(seed)
    layer = PairInteraction(SPEC, 3, pairs, keys, hash_rows=hash_rows, choices=choices)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
        for emb in (layer.memorised, layer.factorised):
            if emb is not None:
                emb.weight[0].zero_()
    return layer


def test_pairs_and_vocabulary_count_the_training_values():
    pairs = all_pairs(SPEC)
    assert pairs == [("a", "b"), ("a", "c"), ("b", "c")]  # categorical fields in spec order, the numeric skipped
    assert all_pairs(SPEC, ["c", "a"]) == [("a", "c")]
    with pytest.raises(ValueError, match=r"fields \['price'\] are not categorical"):
        all_pairs(SPEC, ["a", "price"])
    cols = _columns()
    for min_count in (1, 5, 30):
        keys = pair_vocabulary(cols, SPEC, pairs, min_count)
        for a, b in pairs:
            counts: dict[tuple[int, int], int] = {}
            for x, y in zip(cols[a].tolist(), cols[b].tolist(), strict=True):
                if x > 0 and y > 0:
                    counts[(x, y)] = counts.get((x, y), 0) + 1
            expected = sorted(x * SPEC[b].vocab_size + y for (x, y), c in counts.items() if c >= min_count)
            assert keys[(a, b)].tolist() == expected


def test_memorise_index_is_exact_below_hash_rows_and_deterministic_hashed_above():
    cols = _columns()
    exact = _layer(min_count=3)
    batch = {k: v[:200] for k, v in cols.items()}
    for k, (a, b) in enumerate(exact.pairs):
        known = getattr(exact, f"keys_{k}").tolist()
        idx = exact.memorise_index(batch, k).tolist()
        for r in range(200):
            x, y = int(batch[a][r]), int(batch[b][r])
            key = int(pair_keys(torch.tensor(x), torch.tensor(y), SPEC[b].vocab_size))
            want = 0 if x == 0 or y == 0 else (2 + known.index(key) if key in known else 1)
            assert idx[r] == want
    hashed = _layer(min_count=1, hash_rows=4)
    assert all(hashed.hashed) and hashed.rows == [6, 6, 6]
    again = _layer(min_count=1, hash_rows=4, seed=9)  # the hash is fixed, not seeded
    for k in range(3):
        i1, i2 = hashed.memorise_index(batch, k), again.memorise_index(batch, k)
        assert torch.equal(i1, i2) and int(i1.max()) <= 5
        a, b = hashed.pairs[k]
        assert torch.equal(i1 == 0, (batch[a] == 0) | (batch[b] == 0))
        # the same value always lands in the same row: a function of the pair value
        seen: dict[tuple[int, int], int] = {}
        for x, y, r in zip(batch[a].tolist(), batch[b].tolist(), i1.tolist(), strict=True):
            assert seen.setdefault((x, y), r) == r
    unseen = {"a": torch.tensor([5]), "b": torch.tensor([4]), "c": torch.tensor([3])}
    small = _layer(min_count=1000)  # nothing known: every value is the pair's OOV row
    assert [int(small.memorise_index(unseen, k)) for k in range(3)] == [1, 1, 1]


def test_search_output_is_the_softmax_mix_of_memorise_factorise_and_zero():
    layer = _layer(min_count=2)
    layer.temperature = 0.7
    batch = {k: v[:32] for k, v in _columns().items()}
    out = layer(batch)
    w = torch.softmax(layer.alpha / 0.7, dim=1)
    assert out.shape == (32, 3, 3)
    mem_table, fac = layer.memorised, layer.factorised
    for k, (a, b) in enumerate(layer.pairs):
        idx = layer.memorise_index(batch, k)
        rows = mem_table.table(layer.mem_names[k])
        m = torch.stack([rows[i - 1] if i > 0 else torch.zeros(3) for i in idx.tolist()])
        fa = torch.stack([fac.table(a)[i - 1] if i > 0 else torch.zeros(3) for i in batch[a].tolist()])
        fb = torch.stack([fac.table(b)[i - 1] if i > 0 else torch.zeros(3) for i in batch[b].tolist()])
        torch.testing.assert_close(out[:, k], w[k, 0] * m + w[k, 1] * fa * fb + w[k, 2] * 0)


def test_gradient_of_alpha_and_of_the_tables():
    layer = _layer(min_count=2)
    layer.temperature = 0.5
    batch = {k: v[:32] for k, v in _columns().items()}
    g = torch.randn(32, 3, 3, generator=torch.Generator().manual_seed(2))
    (layer(batch) * g).sum().backward()
    mem = layer.memorised_embeddings(batch).detach()
    fac = layer.factorised_embeddings(batch).detach()
    w = torch.softmax(layer.alpha.detach() / 0.5, dim=1)
    # dL/dw_pc = sum_b <g_bp, option_c>; dL/dalpha = J_softmax^T dL/dw / t
    dw = torch.stack([(g * mem).sum((0, 2)), (g * fac).sum((0, 2)), torch.zeros(3)], dim=1)
    expected = (w * (dw - (w * dw).sum(1, keepdim=True))) / 0.5
    torch.testing.assert_close(layer.alpha.grad, expected)
    # a memorised row gets w_p0 * sum of g over the rows reading it
    k, name = 0, layer.mem_names[0]
    idx = layer.memorise_index(batch, k)
    lo = layer.memorised.table_rows[name][0]
    r = int(idx[idx > 1][0])
    want = w[k, 0] * g[idx == r, k].sum(0)
    torch.testing.assert_close(layer.memorised.weight.grad[lo + r - 1], want)


def test_fixed_choices_give_one_slot_per_kept_pair_and_only_the_tables_they_need():
    full = _layer(min_count=2)
    layer = _layer(min_count=2, choices=["factorise", "naive", "memorise"])
    assert layer.alpha is None and layer.num_slots == 2 and layer.slot_pairs == [0, 2]
    assert layer.mem_pairs == [2] and layer.fac_fields == ("a", "b")  # the factorisation table over a and b only
    batch = {k: v[:16] for k, v in _columns().items()}
    out = layer(batch)
    torch.testing.assert_close(out[:, 0], layer.factorised_embeddings(batch)[:, 0])
    torch.testing.assert_close(out[:, 1], layer.memorised_embeddings(batch)[:, 0])
    m = layer.parameters_of(SPEC, ["factorise", "naive", "memorise"])
    rows = full.rows
    assert m["pairs_memorise"] == 1 and m["pairs_factorise"] == 1 and m["pairs_naive"] == 1
    assert m["pair_params_total"] == sum(r - 1 for r in rows) * 3
    assert m["pair_params_kept_count"] == ((rows[2] - 1) + (6 - 1) + (5 - 1)) * 3
    assert m["pairs_kept"] == pytest.approx(2 / 3)
    n_params = sum(p.numel() for p in layer.parameters())
    assert n_params == (1 + rows[2] - 1) * 3 + (1 + 5 + 4) * 3  # padding rows included in the tables
    with pytest.raises(ValueError, match="choices must be 3 of"):
        _layer(choices=["memorise", "drop", "naive"])


def test_memory_check_names_bytes_and_knobs_before_allocating():
    cols = _columns()
    pairs = all_pairs(SPEC)
    keys = pair_vocabulary(cols, SPEC, pairs, 1)
    with pytest.raises(EmbeddingMemoryError, match=r"need \d[\d,]* bytes .*method.max_embedding_bytes = 100.*"
                                                   r"method.hash_rows"):
        PairInteraction(SPEC, 3, pairs, keys, max_bytes=100)


def test_sorted_position_is_searchsorted_by_gathers():
    from bars.models.layers.pair_interaction import sorted_position

    g = torch.Generator().manual_seed(3)
    for n in (1, 2, 3, 7, 8, 100, 1023, 1024):
        known = torch.unique(torch.randint(0, 5 * n, (n,), generator=g)).to(torch.int64)
        key = torch.randint(-3, 5 * n + 3, (500,), generator=g).to(torch.int64)
        key = torch.cat([key, known, known[:1] - 1, known[-1:] + 1])  # hits, just below the first, above the last
        assert torch.equal(sorted_position(known, key), torch.searchsorted(known, key)), n


@pytest.mark.parametrize("hash_rows", [1000, 2])  # exact lookups, and hashed ones (more known values than rows)
def test_the_fixed_architecture_is_in_the_state_and_rebuilds_the_same_layer(hash_rows):
    choices = ["memorise", "naive", "factorise"]
    layer = _layer(hash_rows=hash_rows, choices=choices).eval()
    state = {f"pairs.{k}": v for k, v in layer.state_dict().items()}
    assert state["pairs.choices_index"].tolist() == [0, 2, 1] and "pairs.keys_0" in state
    again = PairInteraction.from_state(state, "pairs.", SPEC, 3, all_pairs(SPEC), hash_rows=hash_rows)
    again.load_state_dict(layer.state_dict(), strict=True)
    assert again.chosen() == choices and again.rows[0] == layer.rows[0] and again.hashed[0] == layer.hashed[0]
    batch = _columns(200, seed=1)
    want = layer(batch)
    assert torch.equal(again(batch), want)
    layer.export_friendly = True  # the binary search of gathers (ONNX): the same rows, so the same output
    assert torch.equal(layer(batch), want)
    searching = _layer(hash_rows=hash_rows)  # a search's state holds no architecture
    with pytest.raises(ValueError, match="holds no pairs.choices_index"):
        PairInteraction.from_state({f"pairs.{k}": v for k, v in searching.state_dict().items()}, "pairs.", SPEC, 3,
                                   all_pairs(SPEC))
    bad = {**state, "pairs.choices_index": torch.tensor([0, 1])}
    with pytest.raises(ValueError, match=r"does not give one of .* for each of the 3 pairs"):
        PairInteraction.from_state(bad, "pairs.", SPEC, 3, all_pairs(SPEC))
    del state["pairs.keys_0"]
    with pytest.raises(ValueError, match=r"no pairs.keys_0: the vocabulary of memorised pair \('a', 'b'\)"):
        PairInteraction.from_state(state, "pairs.", SPEC, 3, all_pairs(SPEC))
