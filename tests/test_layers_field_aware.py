"""Field-aware embeddings (FFM, ONN) against explicit loops over field pairs written the way FuxiCTR indexes
its per-slot embedding lists; the size check stops before anything is allocated."""

from __future__ import annotations

import pytest
import torch

from bars.data.spec import Feature, FeatureSpec
from bars.models.layers import (
    EmbeddingMemoryError,
    FeatureEmbedding,
    FieldAwareEmbedding,
    FieldAwareProducts,
    SlotSelect,
    ffm_slot,
    onn_slot,
    onnv2_slot,
)
from bars.models.layers import field_aware as FA

GB = 2**30


def spec4() -> FeatureSpec:
    return FeatureSpec(
        dataset="t",
        label="y",
        features=(
            Feature("a", "categorical", vocab_size=5),
            Feature("x", "numeric"),
            Feature("b", "categorical", vocab_size=4),
            Feature("s", "sequence", vocab_size=5, max_len=3, share_embedding="a"),
        ),
    )


def batch4(n: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "a": torch.randint(0, 5, (n,), generator=g, dtype=torch.int32),
        "x": torch.randn(n, generator=g),
        "b": torch.randint(0, 4, (n,), generator=g, dtype=torch.int32),
        "s": torch.randint(0, 5, (n, 3), generator=g, dtype=torch.int32),
    }


def randomise(m: torch.nn.Module) -> None:
    torch.manual_seed(3)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()


def test_embedding_rows_match_feature_embedding():
    spec = spec4()
    rows, numeric = FA.embedding_rows(spec)
    emb = FeatureEmbedding(spec, 3)
    assert rows == emb.weight.shape[0] == 1 + 4 + 3  # s shares a's table
    assert numeric == emb.numeric_weight.shape[0] == 1


@pytest.mark.parametrize("separate", [True, False])
def test_layouts_shape_and_parameter_split(separate):
    spec = spec4()
    fa = FieldAwareEmbedding(spec, 2, num_slots=3, separate_tables=separate, max_bytes=GB)
    out = fa(batch4())
    assert out.shape == (6, 4, 3, 2)
    if separate:
        assert len(fa.tables) == 3 and fa.embedding is None
        for s, t in enumerate(fa.tables):
            assert torch.equal(out[:, :, s], t(batch4()))
    else:
        assert fa.embedding.dim == 6
        assert torch.equal(out.reshape(6, 4, 6), fa.embedding(batch4()))
    n_params = sum(p.numel() for p in fa.parameters())
    assert n_params == (8 + 1) * 2 * 3  # (table rows + numeric fields) x dim x slots


def ffm_reference(tables: list[torch.Tensor], num_fields: int) -> torch.Tensor:
    """FuxiCTR's FFM.ffm_interaction: list of F-1 [B, F, d] tensors, v_ij = L[j-1][:, i], v_ji = L[i][:, j]."""
    dot = torch.zeros(tables[0].shape[0])
    for i in range(num_fields - 1):
        for j in range(i + 1, num_fields):
            dot += (tables[j - 1][:, i] * tables[i][:, j]).sum(-1)
    return dot


def test_ffm_products_equal_fuxictr_pair_loop_in_both_layouts():
    spec = spec4()
    sep = FieldAwareEmbedding(spec, 3, num_slots=3, separate_tables=True, max_bytes=GB)
    randomise(sep)
    e = sep(batch4())
    prods = FieldAwareProducts(4, 3, ffm_slot)(e)
    assert prods.shape == (6, 6, 3)
    ref = ffm_reference([t(batch4()) for t in sep.tables], 4)
    assert torch.allclose(prods.sum(dim=(1, 2)), ref, atol=1e-5)
    # FFMv2's wide table holding the same numbers (slot s of every field = table s) gives the same products
    wide = FieldAwareEmbedding(spec, 3, num_slots=3, separate_tables=False, max_bytes=GB)
    with torch.no_grad():
        wide.embedding.weight.copy_(torch.cat([t.weight for t in sep.tables], dim=1))
        wide.embedding.numeric_weight.copy_(torch.cat([t.numeric_weight for t in sep.tables], dim=1))
    assert torch.allclose(FieldAwareProducts(4, 3, ffm_slot)(wide(batch4())), prods, atol=1e-6)


def ffmv2_reference(e: torch.Tensor) -> torch.Tensor:
    """FuxiCTR's FFMv2 masked_select formulation on [B, F, F-1, d]."""
    b, f = e.shape[:2]
    triu = torch.triu(torch.ones(f, f - 1), 0).bool()
    tril = torch.tril(torch.ones(f, f - 1), -1).bool()
    upper = torch.masked_select(e, triu.unsqueeze(-1))
    lower = torch.masked_select(e.transpose(1, 2), tril.t().unsqueeze(-1))
    return (upper * lower).view(b, -1).sum(dim=-1)


def test_ffm_slot_convention_equals_ffmv2_masks():
    torch.manual_seed(0)
    e = torch.randn(5, 6, 5, 4)
    assert torch.allclose(FieldAwareProducts(6, 5, ffm_slot)(e).sum(dim=(1, 2)), ffmv2_reference(e), atol=1e-5)


def test_onn_slots_equal_fuxictr_loops():
    torch.manual_seed(1)
    f, d = 5, 3
    layers = [torch.randn(4, f, d) for _ in range(f)]  # ONN: F tables, layer 0 = diagonal ("copy")
    e = torch.stack(layers, dim=2)
    pair = FieldAwareProducts(f, f, onn_slot)(e).sum(-1)
    ref = []
    rest = layers[1:]
    for i in range(f - 1):
        for j in range(i + 1, f):
            ref.append((rest[j - 1][:, i] * rest[i][:, j]).sum(-1))
    assert torch.allclose(pair, torch.stack(ref, dim=1), atol=1e-6)
    assert torch.equal(SlotSelect(f, f, onn_slot)(e), layers[0])
    # ONNv2: one [B, F, F, d] view; pairs from the upper triangle of (E^T * E).sum(-1), copy = diagonal
    w = torch.randn(4, f, f, d)
    full = (w.transpose(1, 2) * w).sum(-1)
    triu = torch.triu(torch.ones(f, f), 1).bool()
    assert torch.allclose(FieldAwareProducts(f, f, onnv2_slot)(w).sum(-1), full[:, triu], atol=1e-6)
    diag = torch.stack([w[:, k, k] for k in range(f)], dim=1)
    assert torch.equal(SlotSelect(f, f, onnv2_slot)(w), diag)


def test_ffm_has_no_self_slot_and_needs_two_fields():
    with pytest.raises(ValueError):
        ffm_slot(2, 2)
    with pytest.raises(ValueError, match="at least 2 fields"):
        FieldAwareProducts(1, 1, onnv2_slot)


def test_size_is_checked_before_allocating():
    # a trillion-row table would crash any machine if it were allocated: the check must come first
    huge = FeatureSpec(
        "t", "y", (Feature("a", "categorical", vocab_size=10**12), Feature("b", "categorical", vocab_size=3))
    )
    with pytest.raises(EmbeddingMemoryError) as e:
        FieldAwareEmbedding(huge, 8, num_slots=2, separate_tables=True, max_bytes=GB, model="ffm")
    msg = str(e.value)
    needed = (1 + (10**12 - 1) + 2) * 8 * 2 * 4
    assert f"{needed:,} bytes" in msg and "max_embedding_bytes" in msg and "embedding_dim" in msg
    assert msg.startswith("ffm:")


def test_limit_is_exact_and_memavailable_is_checked(monkeypatch):
    spec = spec4()
    needed = (8 + 1) * 2 * 3 * 4
    FieldAwareEmbedding(spec, 2, num_slots=3, separate_tables=False, max_bytes=needed)  # exactly fits
    with pytest.raises(EmbeddingMemoryError, match=f"{needed:,} bytes"):
        FieldAwareEmbedding(spec, 2, num_slots=3, separate_tables=False, max_bytes=needed - 1)
    monkeypatch.setattr(FA, "available_memory_bytes", lambda: needed - 1)
    with pytest.raises(EmbeddingMemoryError, match="MemAvailable"):
        FieldAwareEmbedding(spec, 2, num_slots=3, separate_tables=False, max_bytes=GB)
    monkeypatch.setattr(FA, "available_memory_bytes", lambda: None)  # unknown: only the limit applies
    FieldAwareEmbedding(spec, 2, num_slots=3, separate_tables=False, max_bytes=GB)


def test_available_memory_reads_meminfo():
    free = FA.available_memory_bytes()
    assert free is None or free > 0
