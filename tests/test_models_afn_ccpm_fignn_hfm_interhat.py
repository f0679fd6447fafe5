"""AFN / AFN+, CCPM, FiGNN, HFM / HFM+ and InterHAt: each model's forward pass written out from its equations
(with its own modules as the building blocks), and the keys that set the variants apart."""

from __future__ import annotations

import pytest
import torch

from bars.config import compose, to_container
from bars.data.spec import Feature, FeatureSpec
from bars.models import ModelConfigError, build
from bars.models.layers import FeatureEmbedding, count_parameters, init_bars_, split_parameters


def spec(fields: int = 5) -> FeatureSpec:
    feats = [Feature(f"c{i}", "categorical", vocab_size=6 + i) for i in range(fields - 1)]
    return FeatureSpec(dataset="t", label="y", features=(*feats, Feature("x", "numeric")))


def batch(s: FeatureSpec, n: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        f.name: (torch.randint(0, f.vocab_size, (n,), generator=g, dtype=torch.int32) if f.type == "categorical"
                 else torch.randn(n, generator=g))
        for f in s.features
    }


def params(name: str, **kw) -> dict:
    p = to_container(compose([f"model={name}", "protocol.embedding_dim=4"]).model.params)
    p.update(kw)
    return p


def model(name: str, s: FeatureSpec | None = None, **kw):
    torch.manual_seed(0)
    m = init_bars_(build(name, s or spec(), params(name, **kw)))
    with torch.no_grad():  # embeddings of N(0, 1e-4) make every interaction vanish: use visible values
        for mod in m.modules():
            if isinstance(mod, FeatureEmbedding):
                mod.weight.normal_(0, 0.5)
                mod.weight[0].zero_()
    return m.eval()


def test_afn_forward_is_log_net_then_mlp():
    m = model("afn", logarithmic_neurons=7, afn_hidden_units=[6])
    x = batch(spec())
    e = m.embedding(x)
    ln = m.log_net
    z = ln.log_batch_norm(torch.log(e.abs().clamp(min=1e-5)))
    y = ln.exp_batch_norm(torch.exp(torch.einsum("lf,bfd->bld", ln.coefficient_W.weight, z)))
    assert torch.allclose(m(x), m.dense_layer(y.flatten(1)).squeeze(1), atol=1e-5)
    assert m.dense_layer.net[0].in_features == 4 * 7


def test_afn_plus_adds_a_second_table_dnn_and_fc():
    a = model("afn", logarithmic_neurons=7, afn_hidden_units=[6])
    p = model("afn_plus", logarithmic_neurons=7, afn_hidden_units=[6], dnn_hidden_units=[5])
    x = batch(spec())
    dnn = p.dnn(p.embedding2(x).flatten(1))
    afn = p.dense_layer(p.log_net(p.embedding(x)).flatten(1))
    assert torch.allclose(p(x), p.fc(torch.cat([afn, dnn], dim=-1)).squeeze(1), atol=1e-6)
    emb, _ = split_parameters(p)
    assert {id(t) for t in (p.embedding.weight, p.embedding2.weight)} <= {id(t) for t in emb}
    extra = count_parameters(p) - count_parameters(a)
    assert extra == count_parameters(p.embedding2) + count_parameters(p.dnn) + 3
    with pytest.raises(ModelConfigError, match="dnn_hidden_units"):  # plain AFN has no DNN keys
        build("afn", spec(), params("afn", dnn_hidden_units=[5]))


def test_ccpm_forward_and_validation():
    m = model("ccpm", channels=[3, 2], kernel_heights=[3, 2])
    x = batch(spec())
    assert torch.allclose(m(x), m.fc(m.conv(m.embedding(x)).flatten(1)).squeeze(1), atol=1e-6)
    assert m.fc.in_features == 3 * 4 * 2
    with pytest.raises(ModelConfigError, match="same length"):
        build("ccpm", spec(), params("ccpm", channels=[3, 3, 3]))
    with pytest.raises(ModelConfigError, match="k-max pooling keeps 3 of only 2"):
        build("ccpm", spec(2), params("ccpm", channels=[2], kernel_heights=[1]))


def test_fignn_attentional_prediction():
    m = model("fignn", gnn_layers=2)
    x = batch(spec())
    h = m.fignn(m.embedding(x))
    score = h @ m.fc.mlp1.weight[0]  # [B, F]
    weight = torch.sigmoid(h.flatten(1) @ m.fc.mlp2[0].weight.T)
    assert torch.allclose(m(x), (weight * score).sum(1), atol=1e-5)
    assert len(m.fignn.gnn) == 2 and m.fignn.gru is None  # defaults: no GRU, one graph layer per round
    shared = model("fignn", gnn_layers=3, reuse_graph_layer=True, use_gru=True)
    assert not isinstance(shared.fignn.gnn, torch.nn.ModuleList) and shared.fignn.gru is not None


@pytest.mark.parametrize("kind", ["circular_convolution", "circular_correlation", "hadamard_product"])
def test_hfm_and_hfm_plus(kind):
    s = spec()
    m = model("hfm", s, interaction_type=kind)
    x = batch(s)
    e = m.embedding(x)
    total = torch.zeros(16, 4)
    for i in range(5):
        for j in range(i + 1, 5):
            a, b = e[:, i], e[:, j]
            if kind == "hadamard_product":
                z = a * b
            else:
                z = torch.zeros_like(a)
                for k in range(4):
                    for t in range(4):
                        u = (k - t) % 4 if kind == "circular_convolution" else (t + k) % 4
                        z[:, k] += a[:, t] * b[:, u]
            total += z
    expected = (total @ m.proj_h.weight[0]) + m.lr(x).squeeze(1)
    assert torch.allclose(m(x), expected, atol=1e-5)
    plus = model("hfm_plus", s, interaction_type=kind, hidden_units=[8])
    assert plus.dnn.net[0].in_features == 10 * 4
    pairs = plus.hfm(plus.embedding(x)).flatten(1)
    assert torch.allclose(plus(x), (plus.dnn(pairs) + plus.lr(x)).squeeze(1), atol=1e-6)
    with pytest.raises(ModelConfigError, match="hidden_units"):  # plain HFM has no MLP keys
        build("hfm", s, params("hfm", hidden_units=[8]))
    with pytest.raises(ModelConfigError, match="interaction_type"):
        build("hfm", s, params("hfm", interaction_type="outer"))


def test_interhat_forward_and_head_split():
    m = model("interhat", num_heads=1, attention_dim=6, order=2, hidden_units=[5])
    x = batch(spec())
    x1 = m.feedforward(m.attention(m.embedding(x)))
    assert torch.allclose(m(x), m.mlp(m.hierarchy(x1)).squeeze(1), atol=1e-6)
    assert m.attention.W_res.in_features == 6 and m.feedforward.ffn[0].out_features == 16  # 4 * embedding_dim
    two = model("interhat", num_heads=2, attention_dim=2, hidden_dim=7)
    std = model("interhat", num_heads=2, attention_dim=2, hidden_dim=7, head_split="per_head")
    std.load_state_dict(two.state_dict())
    assert not torch.allclose(two(x), std(x), atol=1e-4)  # FuxiCTR's split differs from the standard one
    assert two.attention.W_res is None and two.feedforward.ffn[0].out_features == 7
    with pytest.raises(ModelConfigError, match="head_split"):
        build("interhat", spec(), params("interhat", head_split="columns"))
