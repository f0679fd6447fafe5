"""FFM / FFMv2 and ONN / ONNv2: the paper's equations written as FuxiCTR's pair loops, the two layouts of each
computing the same function once weights are transplanted, and the size check stopping a too-large model
before it allocates anything."""

from __future__ import annotations

import pytest
import torch

from bars.config import compose, to_container
from bars.data.spec import Feature, FeatureSpec
from bars.models import build
from bars.models.layers import EmbeddingMemoryError, FeatureEmbedding, init_bars_, onn_slot, split_parameters

F = 4


def spec() -> FeatureSpec:
    return FeatureSpec(
        dataset="t",
        label="y",
        features=(
            Feature("a", "categorical", vocab_size=6),
            Feature("x", "numeric"),
            Feature("b", "categorical", vocab_size=5),
            Feature("s", "sequence", vocab_size=4, max_len=3),
        ),
    )


def batch(n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "a": torch.randint(0, 6, (n,), generator=g, dtype=torch.int32),
        "x": torch.randn(n, generator=g),
        "b": torch.randint(0, 5, (n,), generator=g, dtype=torch.int32),
        "s": torch.randint(0, 4, (n, 3), generator=g, dtype=torch.int32),
    }


def params(name: str, **kw) -> dict:
    p = to_container(compose([f"model={name}", "protocol.embedding_dim=3"]).model.params)
    p.update(kw)
    return p


def randomised(name: str, **kw):
    torch.manual_seed(0)
    m = init_bars_(build(name, spec(), params(name, **kw)))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
        for mod in m.modules():
            if isinstance(mod, FeatureEmbedding):
                mod.weight[0].zero_()  # the padding row stays zero, as in training
    return m.eval()


def test_ffm_is_lr_plus_field_aware_pairs():
    m = randomised("ffm")
    x = batch()
    tables = [t(x) for t in m.embedding.tables]  # F - 1 tensors [B, F, d], FuxiCTR's embedding_layers
    dot = torch.zeros(8)
    for i in range(F - 1):
        for j in range(i + 1, F):
            dot += (tables[j - 1][:, i] * tables[i][:, j]).sum(-1)
    assert torch.allclose(m(x), m.lr(x).squeeze(1) + dot, atol=1e-5)


def test_ffmv2_equals_ffm_with_transplanted_tables():
    ffm = randomised("ffm")
    v2 = randomised("ffmv2")
    with torch.no_grad():
        v2.lr.load_state_dict(ffm.lr.state_dict())
        v2.embedding.embedding.weight.copy_(torch.cat([t.weight for t in ffm.embedding.tables], dim=1))
        v2.embedding.embedding.numeric_weight.copy_(
            torch.cat([t.numeric_weight for t in ffm.embedding.tables], dim=1)
        )
    assert torch.allclose(ffm(batch()), v2(batch()), atol=1e-5)
    assert sum(p.numel() for p in ffm.parameters()) == sum(p.numel() for p in v2.parameters())
    _emb, net = split_parameters(v2)
    assert [id(p) for p in net] == [id(v2.lr.bias)]  # every table is under the embedding regularizer


def test_onnv2_equals_onn_with_transplanted_tables():
    onn = randomised("onn", hidden_units=[5])
    v2 = randomised("onnv2", hidden_units=[5])
    d = 3
    with torch.no_grad():
        v2.dnn.load_state_dict(onn.dnn.state_dict())
        w = v2.embedding.embedding.weight.view(-1, F, d)  # [rows, slot g, d] for the categorical tables
        nw = v2.embedding.embedding.numeric_weight.view(-1, F, d)
        names = list(v2.embedding.embedding.field_names)
        for f_idx, name in enumerate(names):
            for g in range(F):
                src = onn.embedding.tables[onn_slot(f_idx, g)]
                if name == "x":  # the numeric field: one vector per slot
                    nw[0, g].copy_(src.numeric_weight[0])
                else:
                    lo, hi = src.table_rows[name]
                    w[lo:hi, g].copy_(src.weight[lo:hi])
    assert torch.allclose(onn(batch()), v2(batch()), atol=1e-5)


def test_onn_input_is_copy_embeddings_and_pair_products():
    m = randomised("onn", hidden_units=[])
    x = batch()
    layers = [t(x) for t in m.embedding.tables]
    diag = layers[0].flatten(start_dim=1)
    rest = layers[1:]
    pairs = [(rest[j - 1][:, i] * rest[i][:, j]).sum(-1, keepdim=True) for i in range(F - 1) for j in range(i + 1, F)]
    expected = m.dnn(torch.cat([diag, *pairs], dim=1)).squeeze(1)
    assert m.dnn.net[0].in_features == F * 3 + F * (F - 1) // 2
    assert torch.allclose(m(x), expected, atol=1e-5)


@pytest.mark.parametrize("name, slots", [("ffm", 1), ("ffmv2", 1), ("onn", 2), ("onnv2", 2)])
def test_too_large_stops_before_allocating_and_names_the_knobs(name, slots):
    big = FeatureSpec("t", "y", (Feature("a", "categorical", vocab_size=10**11),
                                 Feature("b", "categorical", vocab_size=3)))
    cfg = compose([f"model={name}", "protocol.embedding_dim=16"])
    with pytest.raises(EmbeddingMemoryError) as e:
        build(name, big, to_container(cfg.model.params))
    msg = str(e.value)
    rows = 1 + (10**11 - 1) + 2
    assert f"{rows * 16 * slots * 4:,} bytes" in msg
    assert "model.params.max_embedding_bytes" in msg and "model.params.embedding_dim" in msg
    assert f"{cfg.model.params.max_embedding_bytes:,}" in msg


def test_limit_is_a_config_knob():
    p = params("ffmv2")
    need = sum(x.numel() for x in build("ffmv2", spec(), p).embedding.parameters()) * 4
    build("ffmv2", spec(), {**p, "max_embedding_bytes": need})
    with pytest.raises(EmbeddingMemoryError):
        build("ffmv2", spec(), {**p, "max_embedding_bytes": need - 1})


def test_one_field_is_rejected():
    one = FeatureSpec("t", "y", (Feature("a", "categorical", vocab_size=3),))
    for name in ("ffm", "onnv2"):
        with pytest.raises(ValueError, match="at least 2 fields"):
            build(name, one, params(name))
