"""The zoo1 models (IPNN, NFM, AFM, FwFM, FiBiNET, DLRM, DeepCrossing, FmFM, DualMLP, LorentzFM, HOFM) against
their papers' equations, written here as slow explicit loops over fields and field pairs with the model's own
parameters; plus their config checks and the FuxiCTR parameter shapes the reference suite transplants into."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from omegaconf import OmegaConf

from bars.data.spec import Feature, FeatureSpec
from bars.models import ModelConfigError, build, list_models
from bars.models.layers import FeatureEmbedding, count_parameters, init_bars_, split_parameters
from tests.test_models import CONF

ZOO1 = ("afm", "deepcrossing", "dlrm", "dualmlp", "fibinet", "fmfm", "fwfm", "hofm", "ipnn", "lorentzfm", "nfm")
B = 6


def spec_cat(fields: int = 4) -> FeatureSpec:
    return FeatureSpec("t", "y", tuple(Feature(f"c{i}", "categorical", vocab_size=5 + i) for i in range(fields)))


def spec_mixed() -> FeatureSpec:
    return FeatureSpec(
        "t",
        "y",
        (
            Feature("u", "categorical", vocab_size=7),
            Feature("x1", "numeric"),
            Feature("i", "categorical", vocab_size=6),
            Feature("x2", "numeric"),
            Feature("h", "sequence", vocab_size=6, max_len=3, share_embedding="i"),
        ),
    )


def batch_of(spec: FeatureSpec, n: int = B, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for f in spec.features:
        if f.type == "categorical":
            out[f.name] = torch.randint(0, f.vocab_size, (n,), generator=g, dtype=torch.int32)
        elif f.type == "numeric":
            out[f.name] = torch.randn(n, generator=g)
        else:
            out[f.name] = torch.randint(0, f.vocab_size, (n, f.max_len), generator=g, dtype=torch.int32)
    return out


def params(name: str, **overrides) -> dict:
    raw = OmegaConf.load(CONF / f"{name}.yaml")
    p = OmegaConf.to_container(OmegaConf.create({"protocol": {"embedding_dim": 3}, "model": raw}).model.params,
                               resolve=True)
    p.update(overrides)
    return p


def model_of(name: str, spec: FeatureSpec | None = None, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    m = build(name, spec or spec_cat(), params(name, **overrides)).double()
    init_bars_(m, embedding_std=0.5)  # large embeddings so every term matters
    return m.eval()


def batch64(spec: FeatureSpec | None = None) -> dict[str, torch.Tensor]:
    b = batch_of(spec or spec_cat())
    return {k: v.double() if v.is_floating_point() else v for k, v in b.items()}


def pairs(f: int):
    return list(itertools.combinations(range(f), 2))


def lr_term(lr, batch) -> torch.Tensor:
    out = lr.embedding(batch).sum(dim=1).squeeze(-1)
    return out + lr.bias if lr.bias is not None else out


def test_zoo1_models_are_registered_with_conf_files():
    assert set(ZOO1) <= set(list_models())
    for name in ZOO1:
        raw = OmegaConf.load(CONF / f"{name}.yaml")
        assert raw.name == name and raw.id == name
        assert isinstance(raw.bars_name, str) or (name == "dualmlp" and raw.bars_name is None)  # no BARS run


# ------------------------------------------------------------------------------------------- paper equations
def test_ipnn_equals_mlp_over_embeddings_and_inner_products():
    m = model_of("ipnn", hidden_units=[5, 4], dropout=0.0)
    b = batch64()
    e = m.embedding(b)
    ips = torch.stack([(e[:, i] * e[:, j]).sum(-1) for i, j in pairs(4)], dim=1)
    expected = m.mlp(torch.cat([e.flatten(1), ips], dim=1)).squeeze(1)
    assert torch.allclose(m(b), expected)
    assert m.mlp.net[0].in_features == 4 * 3 + 6


def test_nfm_equals_lr_plus_mlp_of_bi_interaction():
    m = model_of("nfm", hidden_units=[5], dropout=0.0)
    b = batch64()
    e = m.embedding(b)
    bi = sum(e[:, i] * e[:, j] for i, j in pairs(4))
    assert torch.allclose(m(b), lr_term(m.lr, b) + m.mlp(bi).squeeze(1))
    assert m.lr.bias is None


def test_afm_attention_pooling_by_pair_loop_and_plain_sum():
    m = model_of("afm", attention_dim=5)
    b = batch64()
    e = m.embedding(b)
    prods = [e[:, i] * e[:, j] for i, j in pairs(4)]
    lin1, lin2 = m.attention[0], m.attention[2]
    scores = torch.stack([lin2(torch.relu(lin1(v))).squeeze(-1) for v in prods], dim=1)  # [B, P]
    att = torch.softmax(scores, dim=1)
    pooled = sum(att[:, k : k + 1] * v for k, v in enumerate(prods))
    expected = lr_term(m.lr, b) + m.weight_p(pooled).squeeze(1)
    assert torch.allclose(m(b), expected)
    # without attention: the plain FM sum; FuxiCTR's unused attention net is built by default (it is only in the
    # regularizer), not with unused_attention_params=false; the logits are the same either way
    plain = model_of("afm", attention_dim=5, use_attention=False)
    e = plain.embedding(b)
    fm = sum((e[:, i] * e[:, j]).sum(-1) for i, j in pairs(4))
    assert torch.allclose(plain(b), lr_term(plain.lr, b) + fm)
    assert plain.attention is not None and count_parameters(plain) == count_parameters(m)
    bare = model_of("afm", attention_dim=5, use_attention=False, unused_attention_params=False)
    bare.load_state_dict({k: v for k, v in plain.state_dict().items() if k in bare.state_dict()})
    assert torch.equal(bare(b), plain(b))
    assert bare.attention is None and count_parameters(bare) < count_parameters(m)
    with pytest.raises(ValueError, match="unused_attention_params"):
        model_of("afm", unused_attention_params=False)


@pytest.mark.parametrize("linear_type", ["LW", "FeLV", "FiLV"])
def test_fwfm_pair_weights_and_linear_terms(linear_type):
    m = model_of("fwfm", linear_type=linear_type)
    b = batch64()
    e = m.embedding(b)
    r, bias = m.interaction_weight.weight[0], m.interaction_weight.bias
    poly2 = sum(r[k] * (e[:, i] * e[:, j]).sum(-1) for k, (i, j) in enumerate(pairs(4))) + bias
    if linear_type == "LW":
        lin = m.linear.embedding(b).sum(dim=(1, 2))
    elif linear_type == "FeLV":
        v = m.linear_embedding(b)
        lin = sum((e[:, f] * v[:, f]).sum(-1) for f in range(4))
    else:
        w = m.linear.weight.view(4, 3)
        lin = sum((e[:, f] * w[f]).sum(-1) for f in range(4))
    assert torch.allclose(m(b), poly2 + lin)
    emb, net = split_parameters(m)
    emb_ids = {id(p) for p in emb}
    if linear_type == "FeLV":  # FuxiCTR: a FeatureEmbedding -> embedding regularizer
        assert id(m.linear_embedding.weight) in emb_ids
    if linear_type == "FiLV":  # FuxiCTR: an nn.Linear -> net regularizer
        assert id(m.linear.weight) in {id(p) for p in net}


@pytest.mark.parametrize("layers", ["shared", "separate"])
@pytest.mark.parametrize("bilinear_type", ["field_all", "field_each", "field_interaction"])
def test_fibinet_senet_bilinear_and_sharing(layers, bilinear_type):
    m = model_of("fibinet", hidden_units=[5], dropout=0.0, batch_norm=False, reduction_ratio=2.0,
                 bilinear_type=bilinear_type, bilinear_layers=layers)
    b = batch64()
    e = m.embedding(b)
    w1, w2 = m.senet.excitation[0].weight, m.senet.excitation[2].weight
    a = torch.relu(torch.relu(e.mean(-1) @ w1.T) @ w2.T)  # [B, F]
    v = e * a.unsqueeze(-1)

    def bil(x, weight):
        out = []
        for k, (i, j) in enumerate(pairs(4)):
            w = weight if bilinear_type == "field_all" else weight[i] if bilinear_type == "field_each" else weight[k]
            out.append((x[:, i] @ w) * x[:, j])
        return torch.stack(out, dim=1)

    w_q = m.bilinear2.weight if layers == "separate" else m.bilinear.weight
    x = torch.cat([bil(e, m.bilinear.weight), bil(v, w_q)], dim=1).flatten(1)
    assert torch.allclose(m(b), lr_term(m.lr, b) + m.mlp(x).squeeze(1))
    assert (m.bilinear2 is None) == (layers == "shared")
    shape = {"field_all": (3, 3), "field_each": (4, 3, 3), "field_interaction": (6, 3, 3)}[bilinear_type]
    assert m.bilinear.weight.shape == shape  # FuxiCTR 2.x bilinear_W
    assert m.senet.reduced_size == 2


@pytest.mark.parametrize("op", ["dot", "cat"])
def test_dlrm_with_numeric_fields(op):
    spec = spec_mixed()
    m = model_of("dlrm", spec, interaction_op=op, top_mlp_units=[5], top_mlp_dropout=0.0, bottom_mlp_units=[4],
                 batch_norm=False)
    b = batch64(spec)
    sparse = m.embedding(b)  # u, i, h: numeric fields are not embedded
    assert m.embedding.field_names == ("u", "i", "h")
    dense = torch.relu(m.bottom_mlp[0](torch.stack([b["x1"], b["x2"]], dim=1)))
    u = torch.cat([sparse, dense.unsqueeze(1)], dim=1)  # [B, 4, D]
    if op == "dot":
        z = torch.stack([(u[:, i] * u[:, j]).sum(-1) for i, j in pairs(4)], dim=1)
        z = torch.cat([z, dense], dim=1)
        assert m.top_mlp.net[0].in_features == 6 + 3
    else:
        z = u.flatten(1)
    assert torch.allclose(m(b), m.top_mlp(z).squeeze(1))


def test_dlrm_without_numeric_fields_has_no_bottom_mlp():
    m = model_of("dlrm", interaction_op="dot", top_mlp_units=[5], top_mlp_dropout=0.0)
    b = batch64()
    e = m.embedding(b)
    z = torch.stack([(e[:, i] * e[:, j]).sum(-1) for i, j in pairs(4)], dim=1)
    assert m.bottom_mlp is None and torch.allclose(m(b), m.top_mlp(z).squeeze(1))


@pytest.mark.parametrize("use_residual", [True, False])
def test_deepcrossing_residual_units(use_residual):
    m = model_of("deepcrossing", residual_blocks=[5, 7], use_residual=use_residual, batch_norm=False)
    b = batch64()
    x = m.embedding(b).flatten(1)
    for block in list(m.crossing_layer)[:-1]:
        w1, w2 = block.layer[0], block.layer[2]
        h = w2(torch.relu(w1(x)))
        x = torch.relu(h + x if use_residual else h)
    assert torch.allclose(m(b), m.crossing_layer[-1](x).squeeze(1))
    assert m.crossing_layer[0].layer[0].out_features == 5 and m.crossing_layer[0].layer[2].out_features == 12


@pytest.mark.parametrize("kind", ["vectorized", "matrixed"])
def test_fmfm_field_pair_vectors_and_matrices(kind):
    m = model_of("fmfm", field_interaction_type=kind)
    b = batch64()
    e = m.embedding(b)
    w = m.interaction_weight
    assert w.shape == ((6, 3) if kind == "vectorized" else (6, 3, 3))
    total = sum(
        (((e[:, i] * w[k]) if kind == "vectorized" else (e[:, i] @ w[k])) * e[:, j]).sum(-1)
        for k, (i, j) in enumerate(pairs(4))
    )
    assert torch.allclose(m(b), lr_term(m.lr, b) + total)


def test_fmfm_weight_init_is_xavier_over_the_whole_tensor():
    torch.manual_seed(0)
    m = build("fmfm", spec_cat(20), params("fmfm", embedding_dim=16, field_interaction_type="matrixed"))
    init_bars_(m)
    p = 190
    assert m.interaction_weight.std().item() == pytest.approx(math.sqrt(2 / (16 * 16 + p * 16)), rel=0.05)


def test_dualmlp_sums_two_streams():
    m = model_of("dualmlp")
    b = batch64()
    flat = m.embedding(b).flatten(1)
    assert torch.allclose(m(b), (m.mlp1(flat) + m.mlp2(flat)).squeeze(1))
    assert m.mlp1.net[-1].bias is not None and m.mlp2.net[-1].bias is not None


def test_lorentzfm_triangle_scores_by_pair_loop():
    m = model_of("lorentzfm")
    b = batch64()
    e = m.embedding(b)
    total = torch.zeros(B, dtype=torch.float64)
    for i, j in pairs(4):
        u0 = torch.sqrt(1 + (e[:, i] ** 2).sum(-1))  # hyperboloid lift, beta = 1
        v0 = torch.sqrt(1 + (e[:, j] ** 2).sum(-1))
        lorentz = (e[:, i] * e[:, j]).sum(-1) - u0 * v0  # <u, v>_L
        total = total + (1 - lorentz - u0 - v0) / (u0 * v0)
    assert torch.allclose(m(b), total)
    assert all(isinstance(mod, FeatureEmbedding) or not list(mod.parameters(recurse=False)) for mod in m.modules())


def explicit_anova(e: torch.Tensor, t: int) -> torch.Tensor:
    out = torch.zeros(e.shape[0], dtype=e.dtype)
    for combo in itertools.combinations(range(e.shape[1]), t):
        prod = e[:, combo[0]]
        for i in combo[1:]:
            prod = prod * e[:, i]
        out = out + prod.sum(-1)
    return out


@pytest.mark.parametrize("reuse", [False, True])
def test_hofm_degree_terms_by_combination_loops(reuse):
    m = model_of("hofm", spec_cat(5), order=4, reuse_embedding=reuse)
    b = batch64(spec_cat(5))
    expected = lr_term(m.lr, b)
    for t in (2, 3, 4):
        e = m.embedding(b) if reuse else m.embeddings[t - 2](b)
        expected = expected + explicit_anova(e, t)
    assert torch.allclose(m(b), expected)


def test_hofm_per_degree_dims_and_errors():
    m = build("hofm", spec_cat(5), params("hofm", order=4, high_order_embedding_dims=[2, 1]))
    assert [e.dim for e in m.embeddings] == [3, 2, 1]  # FuxiCTR embedding_dim [3, 2, 1]
    with pytest.raises(ModelConfigError, match="3..order: 2 values for order 4"):
        build("hofm", spec_cat(5), params("hofm", order=4, high_order_embedding_dims=[2]))
    with pytest.raises(ModelConfigError, match="reuse_embedding=true"):
        build("hofm", spec_cat(5), params("hofm", reuse_embedding=True, high_order_embedding_dims=[2]))
    with pytest.raises(ModelConfigError, match="order must be >= 2"):
        build("hofm", spec_cat(5), params("hofm", order=1))
    with pytest.raises(ModelConfigError, match="products of 3 distinct fields; the spec has only 2"):
        build("hofm", spec_cat(2), params("hofm"))


# ------------------------------------------------------------------------------------------------ config checks
@pytest.mark.parametrize("name", ["afm", "fibinet", "fmfm", "fwfm", "lorentzfm"])
def test_pairwise_models_need_two_fields(name):
    with pytest.raises(ModelConfigError, match="needs at least 2 fields"):
        build(name, spec_cat(1), params(name))


def test_config_value_checks():
    with pytest.raises(ModelConfigError, match="reduction_ratio must be > 0"):
        build("fibinet", spec_cat(), params("fibinet", reduction_ratio=0.0))
    with pytest.raises(ModelConfigError, match="bilinear_layers"):
        build("fibinet", spec_cat(), params("fibinet", bilinear_layers="both"))
    with pytest.raises(ModelConfigError, match="attention_dropout"):
        build("afm", spec_cat(), params("afm", attention_dropout=[0.1]))
    with pytest.raises(ModelConfigError, match=r"attention_dropout\[1\] must be in \[0, 1\)"):
        build("afm", spec_cat(), params("afm", attention_dropout=[0.1, 1.0]))
    with pytest.raises(ModelConfigError, match="linear_type"):
        build("fwfm", spec_cat(), params("fwfm", linear_type="felv"))
    with pytest.raises(ModelConfigError, match="interaction_op=dot needs at least 2 fields"):
        build("dlrm", spec_cat(1), params("dlrm", interaction_op="dot"))
    with pytest.raises(ModelConfigError, match="bottom_mlp_dropout"):
        build("dlrm", spec_cat(), params("dlrm", bottom_mlp_dropout=-0.1))
    with pytest.raises(ModelConfigError, match="residual_blocks"):
        build("deepcrossing", spec_cat(), params("deepcrossing", residual_blocks=[0]))
    cfg = build("afm", spec_cat(), params("afm", attention_dropout=[0, 0.2])).cfg
    assert cfg.attention_dropout == (0.0, 0.2)


def test_parameter_counts_at_a_known_shape():
    """Counts a reader can check against FuxiCTR's for the same config (4 fields, vocab 5..8, D = 3)."""
    rows = sum(5 + i for i in range(4)) - 4 + 1  # packed table: one shared padding row
    emb = rows * 3
    lr = rows * 1 + 1
    assert count_parameters(build("lorentzfm", spec_cat(), params("lorentzfm"))) == emb
    assert count_parameters(build("fmfm", spec_cat(), params("fmfm"))) == emb + 6 * 3 + lr
    assert count_parameters(build("fwfm", spec_cat(), params("fwfm", linear_type="FiLV"))) == emb + 6 + 1 + 12
    assert count_parameters(build("hofm", spec_cat(), params("hofm"))) == 2 * emb + lr
