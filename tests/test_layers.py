"""Each shared layer checked once, against explicit weights and hand computations."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from bars.data.spec import Feature, FeatureSpec
from bars.models.layers import (
    CIN,
    MLP,
    BilinearFusion,
    CrossNet,
    CrossNetV2,
    Dropout,
    FeatureEmbedding,
    FeatureSelection,
    FMInteraction,
    LogisticRegression,
    MultiHeadSelfAttention,
    ReLUDropout,
    init_bars_,
    split_parameters,
)

torch.set_default_dtype(torch.float32)


def spec_mixed() -> FeatureSpec:
    return FeatureSpec(
        dataset="t",
        label="y",
        features=(
            Feature("a", "categorical", vocab_size=4),
            Feature("x", "numeric"),
            Feature("b", "categorical", vocab_size=3),
            Feature("s", "sequence", vocab_size=4, max_len=3, share_embedding="a"),
            Feature("t", "sequence", vocab_size=5, max_len=2),
        ),
    )


def fill(emb: FeatureEmbedding) -> None:
    with torch.no_grad():
        emb.weight.copy_(torch.arange(emb.weight.numel(), dtype=torch.float32).view_as(emb.weight))
        emb.weight[0].zero_()
        emb.numeric_weight.copy_(torch.tensor([[1.0, -2.0]]))


def test_feature_embedding_lookup_numeric_sequence_and_sharing():
    spec = spec_mixed()
    emb = FeatureEmbedding(spec, 2)
    # tables: a (3 rows), b (2 rows), t (4 rows) + shared padding row; s reuses a
    assert emb.weight.shape == (1 + 3 + 2 + 4, 2)
    fill(emb)
    batch = {
        "a": torch.tensor([0, 3], dtype=torch.int32),
        "x": torch.tensor([0.5, -1.0]),
        "b": torch.tensor([2, 1], dtype=torch.int32),
        "s": torch.tensor([[1, 0, 0], [2, 3, 0]], dtype=torch.int32),
        "t": torch.tensor([[0, 0], [4, 4]], dtype=torch.int32),
    }
    out = emb(batch)
    assert out.shape == (2, 5, 2)
    ta, tb, tt = emb.table("a"), emb.table("b"), emb.table("t")
    # categorical: index 0 -> zero vector, index i -> row i - 1 of the field's table
    assert torch.equal(out[0, 0], torch.zeros(2))
    assert torch.equal(out[1, 0], ta[2])
    assert torch.equal(out[0, 2], tb[1]) and torch.equal(out[1, 2], tb[0])
    # numeric: value * vector
    assert torch.allclose(out[:, 1], torch.tensor([[0.5, -1.0], [-1.0, 2.0]]))
    # sequence: masked mean over non-zero indices, shared with a's table
    assert torch.allclose(out[0, 3], ta[0])
    assert torch.allclose(out[1, 3], (ta[1] + ta[2]) / 2)
    assert torch.equal(emb.table("s"), ta)  # the sharing field reads its owner's table
    # empty sequence -> zero vector; repeated index -> that row
    assert torch.equal(out[0, 4], torch.zeros(2))
    assert torch.allclose(out[1, 4], tt[3])
    assert torch.equal(emb.flat(batch), out.reshape(2, 10))


def test_masked_pooling_ignores_padding_values_and_rows():
    spec = FeatureSpec("t", "y", (Feature("s", "sequence", vocab_size=6, max_len=4),))
    emb = FeatureEmbedding(spec, 3)
    with torch.no_grad():
        emb.weight[0].fill_(100.0)  # even a corrupted padding row must not leak into the pool
    short = emb({"s": torch.tensor([[2, 5, 0, 0]], dtype=torch.int32)})
    longer = emb({"s": torch.tensor([[2, 5, 0, 0, 0, 0]], dtype=torch.int32)})
    t = emb.table("s")
    expected = (t[1] + t[4]) / 2
    assert torch.allclose(short[0, 0], expected) and torch.allclose(longer[0, 0], expected)
    out = emb({"s": torch.tensor([[2, 5, 0, 0]], dtype=torch.int32)})
    out.sum().backward()
    assert emb.weight.grad[0].abs().sum() == 0  # padding row never learns


def test_feature_embedding_subset_and_spec_order():
    spec = spec_mixed()
    emb = FeatureEmbedding(spec, 2, fields=["b", "x"])
    assert emb.field_names == ("x", "b")  # spec order, not argument order
    batch = {"x": torch.tensor([2.0]), "b": torch.tensor([1], dtype=torch.int32)}
    out = emb(batch)
    assert torch.allclose(out[0, 0], 2.0 * emb.numeric_weight[0])
    assert torch.equal(out[0, 1], emb.table("b")[0])
    with pytest.raises(ValueError, match="not in spec"):
        FeatureEmbedding(spec, 2, fields=["zzz"])


def test_logistic_regression_is_dim1_embedding_sum_plus_bias():
    spec = spec_mixed()
    lr = LogisticRegression(spec)
    assert lr.embedding.dim == 1
    with torch.no_grad():
        lr.bias.fill_(0.5)
    batch = {
        "a": torch.tensor([3], dtype=torch.int32),
        "x": torch.tensor([2.0]),
        "b": torch.tensor([0], dtype=torch.int32),
        "s": torch.tensor([[0, 0, 0]], dtype=torch.int32),
        "t": torch.tensor([[1, 0]], dtype=torch.int32),
    }
    expected = (
        0.5 + lr.embedding.table("a")[2] + 2.0 * lr.embedding.numeric_weight[0] + lr.embedding.table("t")[0]
    )
    assert torch.allclose(lr(batch), expected.view(1, 1))
    emb, net = split_parameters(lr)
    assert {id(p) for p in emb} == {id(lr.embedding.weight), id(lr.embedding.numeric_weight)}
    assert [id(p) for p in net] == [id(lr.bias)]


def test_fm_interaction_equals_pairwise_sum():
    torch.manual_seed(0)
    e = torch.randn(3, 5, 4)
    expected = torch.zeros(3)
    for i, j in itertools.combinations(range(5), 2):
        expected += (e[:, i] * e[:, j]).sum(-1)
    assert torch.allclose(FMInteraction()(e).squeeze(1), expected, atol=1e-5)


def test_crossnet_one_layer_by_hand():
    net = CrossNet(3, 1)
    with torch.no_grad():
        net.w[0].weight.copy_(torch.tensor([[1.0, 0.5, -1.0]]))
        net.b[0].copy_(torch.tensor([0.1, 0.2, 0.3]))
    x0 = torch.tensor([[1.0, 2.0, 3.0]])
    xw = 1.0 * 1 + 2.0 * 0.5 + 3.0 * -1  # = -1
    expected = x0 * xw + torch.tensor([0.1, 0.2, 0.3]) + x0
    assert torch.allclose(net(x0), expected)


def test_crossnet_v2_one_layer_by_hand():
    net = CrossNetV2(2, 1)
    W = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    b = torch.tensor([0.5, 0.0])
    with torch.no_grad():
        net.layers[0].weight.copy_(W)
        net.layers[0].bias.copy_(b)
    x0 = torch.tensor([[2.0, 3.0]])
    expected = x0 * (x0 @ W.T + b) + x0  # [2*(8+.5)+2, 3*(-3)+3]
    assert torch.allclose(net(x0), expected)
    assert torch.allclose(expected, torch.tensor([[19.0, -6.0]]))


def test_cin_one_layer_by_hand():
    torch.manual_seed(0)
    cin = CIN(num_fields=2, hidden_units=[1], output_dim=1)
    # one feature map: W over the 4 channels (h, m) in order (0,0), (0,1), (1,0), (1,1)
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    with torch.no_grad():
        cin.convs[0].weight.copy_(w)
        cin.convs[0].bias.zero_()
        cin.fc.weight.fill_(1.0)
        cin.fc.bias.zero_()
    x = torch.randn(3, 2, 5)
    z = (
        1 * x[:, 0] * x[:, 0] + 2 * x[:, 0] * x[:, 1] + 3 * x[:, 1] * x[:, 0] + 4 * x[:, 1] * x[:, 1]
    )  # [B, D]
    assert torch.allclose(cin(x).squeeze(1), z.sum(-1), atol=1e-5)


def test_cin_shapes_multi_layer():
    cin = CIN(num_fields=4, hidden_units=[3, 2], output_dim=1)
    assert cin.convs[0].in_features == 16 and cin.convs[1].in_features == 12
    assert cin.fc.in_features == 5
    assert cin(torch.randn(7, 4, 6)).shape == (7, 1)


def _cin_by_equation(cin: CIN, x0: torch.Tensor) -> torch.Tensor:
    """xDeepFM's CIN written out on [B, F, D] (FuxiCTR's layout: Z = einsum('bhd,bmd->bhmd'), a 1x1 convolution over
    the F * H channels, sum-pooling over D)."""
    b, _, d = x0.shape
    x, pooled = x0, []
    for conv in cin.convs:
        z = torch.einsum("bhd,bmd->bhmd", x0, x).reshape(b, -1, d)
        x = torch.einsum("kc,bcd->bkd", conv.weight, z) + conv.bias[:, None]
        pooled.append(x.sum(dim=-1))
    return cin.fc(torch.cat(pooled, dim=-1))


def test_cin_equals_its_equation_values_and_gradients():
    torch.manual_seed(3)
    cin = CIN(num_fields=5, hidden_units=[4, 3, 2], output_dim=1).double()
    x = torch.randn(6, 5, 7, dtype=torch.float64, requires_grad=True)
    got, want = cin(x), _cin_by_equation(cin, x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(got)
    params = [x, *cin.parameters()]
    for u, v in zip(torch.autograd.grad(got, params, g), torch.autograd.grad(want, params, g), strict=True):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)
    # float32 as trained: the same function up to rounding
    cin32 = CIN(num_fields=5, hidden_units=[4, 3, 2], output_dim=1)
    x32 = torch.randn(64, 5, 7)
    torch.testing.assert_close(cin32(x32), _cin_by_equation(cin32, x32), rtol=1e-5, atol=1e-5)


def test_row_outer_gradients_of_either_input():
    from bars.models.layers.interaction import row_outer

    a = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    c = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(row_outer, (a, c))
    out = row_outer(a.detach(), c)  # one input without gradient
    assert torch.equal(out, (a.detach()[:, :, None] * c.detach()[:, None, :]).reshape(9, 12))
    (gc,) = torch.autograd.grad(out.sum(), [c])
    torch.testing.assert_close(gc, a.detach().sum(1, keepdim=True).expand(9, 3))
    x = torch.randn(5, 3, requires_grad=True)
    y = row_outer(x, x)  # CIN's first layer: x0 with itself
    (gx,) = torch.autograd.grad(y.sum(), [x])
    torch.testing.assert_close(gx, 2 * x.detach().sum(1, keepdim=True).expand(5, 3))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed dtypes under autocast: the plain multiply
        z = row_outer(x, x.bfloat16())
    assert z.dtype == torch.float32 and z.shape == (5, 9)


def test_mlp_structure_and_identity():
    mlp = MLP(6, [5, 4], "relu", batch_norm=True, dropout=0.3, output_dim=1)
    kinds = [type(m).__name__ for m in mlp.net]
    assert kinds == ["Linear", "BatchNorm1d", "ReLUDropout"] * 2 + ["Linear"]
    gelu = MLP(6, [5], "gelu", batch_norm=False, dropout=0.3)
    assert [type(m).__name__ for m in gelu.net] == ["Linear", "GELU", "Dropout"]
    assert mlp.output_dim == 1 and mlp(torch.randn(8, 6)).shape == (8, 1)
    ident = MLP(6, [])
    x = torch.randn(2, 6)
    assert torch.equal(ident(x), x) and ident.output_dim == 6


def test_dropout_rate_scale_and_eval():
    torch.manual_seed(0)
    d = Dropout(0.2)
    x = torch.ones(1000, 1000)
    y = d(x)
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.8) < 0.003
    assert torch.allclose(y[y != 0], torch.tensor(65536 / (65536 - round(0.2 * 65536))))
    assert abs(y.mean().item() - 1.0) < 0.005
    d.eval()
    assert torch.equal(d(x), x)
    torch.manual_seed(1)
    a = Dropout(0.5)(x[:10])
    torch.manual_seed(1)
    assert torch.equal(a, Dropout(0.5)(x[:10]))  # seeded by torch's generator
    with pytest.raises(ValueError):
        Dropout(1.0)


def test_self_attention_single_head_by_hand():
    att = MultiHeadSelfAttention(2, 2, num_heads=1, use_residual=True, use_scale=False)
    with torch.no_grad():
        att.w_q.weight.copy_(torch.eye(2))  # q = k = x, v = 2x
        att.w_k.weight.copy_(torch.eye(2))
        att.w_v.weight.copy_(2 * torch.eye(2))
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    scores = torch.softmax(x[0] @ x[0].T, dim=-1)
    expected = torch.relu(scores @ (2 * x[0]) + x[0])
    assert torch.allclose(att(x)[0], expected, atol=1e-6)


@pytest.mark.parametrize("capability", ["AVX512", "AVX2"])
@pytest.mark.parametrize("use_scale", [False, True])
def test_self_attention_training_and_scoring_paths_follow_the_equation(use_scale, capability, monkeypatch):
    """Training (torch's fused attention on an Intel AVX-512 CPU, the explicit products elsewhere:
    kernels.intel_avx512_cpu) and scoring (the explicit products) against the layer written out per head in
    float64: values and every gradient."""
    from bars.models.layers import kernels

    monkeypatch.setattr(kernels, "_CAPABILITY", capability)
    assert kernels.intel_avx512_cpu() == (capability == "AVX512")
    torch.manual_seed(3)
    att = MultiHeadSelfAttention(6, 8, num_heads=2, use_residual=True, use_scale=use_scale)
    x = torch.randn(5, 7, 6, requires_grad=True)
    out = att(x)  # gradient enabled: the fused path (AVX-512) or the explicit one
    with torch.no_grad():
        scored = att(x)  # the explicit path
    w = {n: p.detach().double().requires_grad_() for n, p in att.named_parameters()}
    x64 = x.detach().double().requires_grad_()
    heads = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        q, k, v = (x64 @ w[f"{n}.weight"][sl].T for n in ("w_q", "w_k", "w_v"))
        scores = q @ k.transpose(1, 2) / (2.0 if use_scale else 1.0)
        heads.append(torch.softmax(scores, dim=-1) @ v)
    ref = torch.relu(torch.cat(heads, dim=-1) + x64 @ w["res.weight"].T)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scored.double(), ref, rtol=1e-5, atol=1e-6)
    g = torch.randn(5, 7, 8)
    out.backward(g)
    ref.backward(g.double())
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-5)
    for n, p in att.named_parameters():
        torch.testing.assert_close(p.grad.double(), w[n].grad, rtol=1e-4, atol=1e-5)


def test_self_attention_heads_projection_and_norm():
    att = MultiHeadSelfAttention(
        4, 6, num_heads=3, dropout=0.1, use_residual=True, use_scale=True, layer_norm=True
    )
    assert att.res is not None
    assert att(torch.randn(5, 7, 4)).shape == (5, 7, 6)
    with pytest.raises(ValueError):
        MultiHeadSelfAttention(4, 5, num_heads=2)


def test_bilinear_fusion_by_hand():
    f = BilinearFusion(4, 2, num_heads=2)
    with torch.no_grad():
        f.w_x.weight.fill_(1.0)
        f.w_x.bias.fill_(0.5)
        f.w_y.weight.fill_(-1.0)
        f.w_y.bias.fill_(0.25)
        f.w_xy.copy_(torch.tensor([[[1.0], [2.0]], [[3.0], [4.0]]]))  # heads: x chunks of 2, y chunks of 1
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    y = torch.tensor([[10.0, 20.0]])
    bil = (1 * 1 + 2 * 2) * 10 + (3 * 3 + 4 * 4) * 20
    expected = (1 + 2 + 3 + 4) + 0.5 - 30 + 0.25 + bil
    assert torch.allclose(f(x, y), torch.tensor([[float(expected)]]))
    with pytest.raises(ValueError):
        BilinearFusion(5, 2, num_heads=2)


def test_bilinear_fusion_equals_the_broadcast_form_rows_and_gradients():
    """The batched-matmul form (issue 16: 15-20x faster) computes FuxiCTR's broadcast form: several rows and heads,
    float64, outputs and every gradient to rounding."""
    torch.manual_seed(0)
    f = BilinearFusion(12, 6, num_heads=3).double()
    x = torch.randn(7, 12, dtype=torch.float64, requires_grad=True)
    y = torch.randn(7, 6, dtype=torch.float64, requires_grad=True)
    hx = x.view(7, 3, 1, 4) @ f.w_xy.view(3, 4, 2)  # FuxiCTR: x_h W_h per row, then . y_h, summed over heads
    want = f.w_x(x) + f.w_y(y) + (hx @ y.view(7, 3, 2, 1)).view(7, 3).sum(dim=1, keepdim=True)
    g_want = torch.autograd.grad(want.sum(), (x, y, f.w_xy))
    got = f(x, y)
    g_got = torch.autograd.grad(got.sum(), (x, y, f.w_xy))
    assert got.shape == (7, 1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_feature_selection_gate_range():
    spec = spec_mixed()
    fs = FeatureSelection(spec, 2, 10, [8], context=["a"])
    flat = torch.ones(3, 10)
    batch = {"a": torch.tensor([1, 2, 3], dtype=torch.int32)}
    g = fs(batch, flat)
    assert g.shape == (3, 10) and torch.all(g > 0) and torch.all(g < 2)
    fs0 = FeatureSelection(spec, 2, 10, [8], context=[])
    assert fs0.context is None and fs0(batch, flat).shape == (3, 10)


def test_init_bars_and_split():
    spec = spec_mixed()
    model = nn.ModuleDict(
        {
            "emb": FeatureEmbedding(spec, 4),
            "lr": LogisticRegression(spec),
            "mlp": MLP(20, [8], batch_norm=True),
            "cross": CrossNet(20, 2),
        }
    )
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    init_bars_(model, embedding_std=1e-2)
    assert torch.all(model["emb"].weight[0] == 0) and torch.all(model["lr"].embedding.weight[0] == 0)
    assert model["emb"].weight[1:].abs().max() < 0.1
    assert torch.all(model["mlp"].net[0].bias == 0) and torch.all(model["mlp"].net[1].weight == 1)
    assert all(torch.all(b == 0) for b in model["cross"].b) and torch.all(model["lr"].bias == 0)
    emb, net = split_parameters(model)
    assert {id(p) for p in emb} == {
        id(model["emb"].weight),
        id(model["emb"].numeric_weight),
        id(model["lr"].embedding.weight),
        id(model["lr"].embedding.numeric_weight),
    }
    assert len(emb) + len(net) == len(list(model.parameters()))


def test_out_of_range_index_names_the_field():
    spec = spec_mixed()
    emb = FeatureEmbedding(spec, 2)
    batch = {
        "a": torch.tensor([0, 4], dtype=torch.int32),  # vocab 4: index 4 is out of range
        "x": torch.tensor([0.5, -1.0]),
        "b": torch.tensor([2, 1], dtype=torch.int32),
        "s": torch.tensor([[1, 0, 0], [2, 3, 0]], dtype=torch.int32),
        "t": torch.tensor([[0, 0], [4, 4]], dtype=torch.int32),
    }
    with pytest.raises(IndexError, match="'a': max 4 >= vocab_size 4"):
        emb(batch)
    batch["a"] = torch.tensor([0, 3], dtype=torch.int32)
    batch["s"] = torch.tensor([[9, 0, 0], [2, 3, 0]], dtype=torch.int32)
    with pytest.raises(IndexError, match="'s'"):
        emb(batch)


def test_relu_dropout_equals_relu_then_dropout():
    x = torch.randn(64, 33, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    torch.manual_seed(5)
    fused = ReLUDropout(0.3)(x)
    torch.manual_seed(5)
    ref = Dropout(0.3)(torch.relu(x2))
    assert torch.equal(fused, ref)
    g = torch.randn_like(fused)
    fused.backward(g)
    ref.backward(g)
    assert torch.equal(x.grad, x2.grad)
    m = ReLUDropout(0.3).eval()
    assert torch.equal(m(x), torch.relu(x))


@pytest.mark.parametrize("dim", [1, 4, 10, 16, 40])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_padded_lookup_gradient_is_torchs_bit_for_bit(dim: int, dtype: torch.dtype) -> None:
    from bars.models.layers.embedding import padded_lookup

    g = torch.Generator().manual_seed(dim)
    rows = 97
    idx = (torch.rand(512, 7, generator=g) ** 3 * rows).long().clamp(max=rows - 1).to(dtype)  # repeats, row 0
    assert (idx == 0).any() and idx.unique().numel() < idx.numel()
    w1 = torch.randn(rows, dim, generator=g, requires_grad=True)
    w2 = w1.detach().clone().requires_grad_(True)
    up = torch.randn(512, 7, dim, generator=g) * 1e3  # large, so a different summation order would show
    a, b = padded_lookup(idx, w1), torch.nn.functional.embedding(idx, w2, padding_idx=0)
    assert torch.equal(a, b)
    (a * up).sum().backward()
    (b * up).sum().backward()
    assert torch.equal(w1.grad, w2.grad) and not w1.grad[0].any()
    with torch.no_grad():  # no graph: torch's own lookup
        assert torch.equal(padded_lookup(idx, w1), b)


def _unfused_and_fused_grads(monkeypatch, kernels: str, dim: int, lookups: int = 1):
    """The table's gradient from ``lookups`` lookups then the trainer's ``add_regularization_grad`` (unfused), and
    the same inside ``regularizer_in_lookup_grad`` (then ``lam * W`` added by the caller where not ``done``)."""
    from bars.models.layers.embedding import padded_lookup, regularizer_in_lookup_grad
    from bars.objective import add_regularization_grad

    monkeypatch.setenv("BARS_KERNELS", kernels)
    g = torch.Generator().manual_seed(dim + lookups)
    rows, lam = 2000, 0.05
    idx = [(torch.rand(128, 7, generator=g) ** 3 * rows).long().clamp(max=rows - 1) for _ in range(lookups)]
    assert (idx[0] == 0).any() and idx[0].unique().numel() < idx[0].numel()  # repeated rows, the padding row
    assert idx[0].unique().numel() < rows - 1000  # rows not looked up: only the regularizer reaches them
    w = torch.randn(rows, dim, generator=g)
    with torch.no_grad():
        w[0].zero_()
    up = [torch.randn(128, 7, dim, generator=g) * 1e3 for _ in range(lookups)]  # large: another order would show
    out = []
    for fused in (False, True):
        t = w.clone().requires_grad_(True)
        with regularizer_in_lookup_grad([t] if fused else [], lam) as tables:
            sum((padded_lookup(i, t) * u).sum() for i, u in zip(idx, up, strict=True)).backward()
        done = fused and tables[id(t)].done
        if not done:
            add_regularization_grad([t], lam)
        out.append((t.grad, done))
    return out


@pytest.mark.parametrize("kernels", ["auto", "torch"])
@pytest.mark.parametrize("dim", [16, 40])
def test_lookup_with_the_regularizer_is_the_unfused_gradient_bit_for_bit(monkeypatch, kernels, dim) -> None:
    """A table looked up once in a step inside ``regularizer_in_lookup_grad`` gets ``lam * W`` from the lookup's
    backward (issue 16: no zero-filled gradient, no two more passes over the table), summed in the unfused order:
    the same bits for repeated rows, the padding row and the rows the batch does not reach (compiled kernel and
    torch fallback)."""
    (a, _), (b, done) = _unfused_and_fused_grads(monkeypatch, kernels, dim)
    assert done
    assert torch.equal(a.view(torch.int32), b.view(torch.int32))
    assert not a[0].any()


@pytest.mark.parametrize(("dim", "lookups"), [(10, 1), (16, 2)])
def test_lookup_leaves_the_regularizer_to_the_caller_where_it_would_change_the_order(monkeypatch, dim,
                                                                                     lookups) -> None:
    """Below width 16 (the bincount backward) and for a table looked up twice in one step (autograd sums the two
    gradients before the table's) the lookup does not add ``lam * W``: ``done`` is false and the caller's addition
    gives the unfused gradient."""
    (a, _), (b, done) = _unfused_and_fused_grads(monkeypatch, "auto", dim, lookups)
    assert not done
    assert torch.equal(a.view(torch.int32), b.view(torch.int32))


def test_regularizer_in_lookup_grad_is_one_step_at_a_time_per_thread() -> None:
    import threading

    from bars.models.layers.embedding import _ACTIVE, regularizer_in_lookup_grad

    t = torch.zeros(3, 16, requires_grad=True)
    with (regularizer_in_lookup_grad([t], 0.1), pytest.raises(RuntimeError, match="already active"),
          regularizer_in_lookup_grad([t], 0.1)):
        pass
    assert _ACTIVE.tables is None  # cleared on the way out, an exception included
    seen = []
    with regularizer_in_lookup_grad([t], 0.1) as mine:  # another thread's step is its own

        def other() -> None:
            seen.append(_ACTIVE.tables)
            with regularizer_in_lookup_grad([t], 0.2) as theirs:
                seen.append(theirs[id(t)].lam)

        th = threading.Thread(target=other)
        th.start()
        th.join()
        assert mine[id(t)].lam == 0.1 and _ACTIVE.tables is mine
    assert seen == [None, 0.2]


def test_shared_input_linears_equal_separate_linears():
    """DESTINE's projections of one input (one input gradient accumulated by matrix products): the values and
    every gradient of the Linears applied one by one, in float64; a traced graph keeps the Linears."""
    from bars.models.layers.disentangled_attention import shared_input_linears

    torch.manual_seed(3)
    linears = [nn.Linear(6, w).double() for w in (8, 8, 1, 5)]
    x = torch.randn(4, 7, 6, dtype=torch.float64, requires_grad=True)
    gs = [torch.randn(4, 7, m.out_features, dtype=torch.float64) for m in linears]
    params = [x] + [t for m in linears for t in (m.weight, m.bias)]
    got = shared_input_linears(x, linears)
    assert "SharedInputLinears" in type(got[0].grad_fn).__name__
    want = [m(x) for m in linears]
    for u, v in zip(got, want, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-13, atol=1e-13)
    for u, v in zip(torch.autograd.grad(got, params, gs), torch.autograd.grad(want, params, gs), strict=True):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)
