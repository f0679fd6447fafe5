"""The models' compiled CPU kernels (bars/models/layers/_kernels.c: dropout masks, LayerNorm over a narrow axis)
against their torch fallbacks: the same bits, so a run's numbers do not depend on whether the extension was built
(bars.models.layers.kernels); and both against their equations."""

from __future__ import annotations

import os

import pytest
import torch

from bars.models.layers import MLP, Dropout, LayerNorm, ReLUDropout
from bars.models.layers import kernels as K

THRESHOLD, SCALE = round(0.2 * 65536) - 32768, 65536.0 / (65536 - round(0.2 * 65536))


@pytest.fixture(scope="module")
def compiled() -> None:
    if K._load() is None:
        if os.environ.get("BARS_REQUIRE_NATIVE"):  # CI sets it: gcc is there, so the build must have made it
            raise RuntimeError("BARS_REQUIRE_NATIVE is set but bars/models/layers/_kernels.c is not built "
                               "(pip install -e .)")
        pytest.skip("bars/models/layers/_kernels.c is not built")


def bits(t: torch.Tensor) -> torch.Tensor:  # bit patterns, so that NaN == NaN and -0 != +0
    return t.view(torch.int32)


def test_uniforms_are_splitmix64() -> None:
    # splitmix64 seeded with 0: first outputs 0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4 (Vigna's reference code)
    u = K.uniform16(8, 0).view(torch.int64)
    assert [v & (2**64 - 1) for v in u.tolist()] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]
    assert K.uniform16(5, 7).tolist() == K.uniform16(8, 7)[:5].tolist()  # a prefix does not depend on n


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("n", [1, 3, 4, 5, 4095, 4096, 4097, 3 * 4096 + 7, 100_003])
def test_compiled_mask_equals_fallback(compiled, monkeypatch, relu: bool, n: int) -> None:
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g)
    special = torch.tensor([float("nan"), float("inf"), float("-inf"), -0.0, 0.0, 1e-45, -1e-45, 3e38])
    x[: min(n, len(special))] = special[: min(n, len(special))]
    for key in (0, 2**64 - 1, 0x0123456789ABCDEF):
        out, mask = K.dropout_mask(x, THRESHOLD, SCALE, relu, key)
        monkeypatch.setenv("BARS_KERNELS", "torch")
        out_t, mask_t = K.dropout_mask(x, THRESHOLD, SCALE, relu, key)
        monkeypatch.delenv("BARS_KERNELS")
        assert torch.equal(bits(out), bits(out_t)) and torch.equal(bits(mask), bits(mask_t))
    kept = (mask > 0).float().mean().item()
    if n > 4096:
        assert abs(kept - (0.8 * 0.5 if relu else 0.8)) < 0.05


@pytest.mark.parametrize("n", [5, 4097, 70_001])
def test_compiled_backward_equals_the_float_mask_product(compiled, monkeypatch, n: int) -> None:
    """The backward from the saved bytes (keep ? scale : 0) gives grad * mask bit for bit, NaN and infinities in
    the gradient included (0 * inf is NaN in both), in the kernel and in the fallback."""
    g = torch.Generator().manual_seed(n)
    x, grad = torch.randn(n, generator=g), torch.randn(n, generator=g)
    grad[:4] = torch.tensor([float("nan"), float("inf"), float("-inf"), -0.0])
    _, keep = K.dropout_keep(x, THRESHOLD, SCALE, True, 5)
    assert keep.dtype == torch.uint8 and set(keep.unique().tolist()) <= {0, 1}
    mask = torch.where(keep.bool(), torch.tensor(SCALE), torch.tensor(0.0))
    want = grad * mask
    assert torch.equal(bits(K.dropout_grad(grad, keep, SCALE)), bits(want))
    monkeypatch.setenv("BARS_KERNELS", "torch")
    assert torch.equal(bits(K.dropout_grad(grad, keep, SCALE)), bits(want))
    _, keep_t = K.dropout_keep(x, THRESHOLD, SCALE, True, 5)
    assert torch.equal(keep_t, keep)


def bits16(t: torch.Tensor) -> torch.Tensor:
    """A bfloat16 tensor's bit patterns, every NaN as one pattern: torch itself writes a NaN as 0x7FC0 or 0xFFFF
    depending on whether its scalar or its vectorised loop rounded it (the tensor's size decides)."""
    return torch.where(t.isnan(), torch.tensor(0x7FC0, dtype=torch.int16), t.view(torch.int16))


BF16_SPECIAL = [float("nan"), float("inf"), float("-inf"), -0.0, 0.0, 1e-40, -1e-40, 3e38, -3e38, 1.00390625]


@pytest.mark.parametrize("scale", [SCALE, 1 / 0.9, 1 / 0.7])  # 1.25 is a bfloat16 value, 1/0.9 and 1/0.7 are not
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("n", [1, 5, 4097, 3 * 4096 + 7, 100_003])
def test_compiled_bf16_mask_equals_fallback(compiled, monkeypatch, relu: bool, n: int, scale: float) -> None:
    """Under train.precision=bf16 a dropout sees bfloat16 activations: the kernel's bfloat16 pass gives torch's
    bfloat16 product ``x * keep.to(bfloat16).mul_(scale)`` bit for bit (specials included), keeps the same elements
    as the float32 pass of the same key, and its backward is ``grad * mask`` in bfloat16."""
    g = torch.Generator().manual_seed(n)
    x = (torch.randn(n, generator=g) * 3).to(torch.bfloat16)
    grad = torch.randn(n, generator=g).to(torch.bfloat16)
    k = min(n, len(BF16_SPECIAL))
    x[:k] = torch.tensor(BF16_SPECIAL[:k]).to(torch.bfloat16)
    grad[-k:] = torch.tensor(BF16_SPECIAL[:k]).to(torch.bfloat16)
    threshold = round((1 - 1 / scale) * 65536) - 32768
    for key in (0, 2**64 - 1, 0x0123456789ABCDEF):
        out, keep = K.dropout_keep(x, threshold, scale, relu, key)
        dx = K.dropout_grad(grad, keep, scale)
        monkeypatch.setenv("BARS_KERNELS", "torch")
        out_t, keep_t = K.dropout_keep(x, threshold, scale, relu, key)
        dx_t = K.dropout_grad(grad, keep_t, scale)
        _, keep_f32 = K.dropout_keep(x.float(), threshold, scale, relu, key)
        monkeypatch.delenv("BARS_KERNELS")
        assert out.dtype == dx.dtype == torch.bfloat16
        assert torch.equal(keep, keep_t) and torch.equal(keep, keep_f32)
        assert torch.equal(bits16(out), bits16(out_t)) and torch.equal(bits16(dx), bits16(dx_t))
        mask = keep.to(torch.bfloat16).mul_(scale)  # the product with the bfloat16 mask, as autograd would take it
        assert torch.equal(bits16(out), bits16(x * mask)) and torch.equal(bits16(dx), bits16(grad * mask))


def test_bf16_dropout_module_trains_through_the_kernel(compiled) -> None:
    """ReLUDropout on a bfloat16 activation in training: a bfloat16 output, and the gradient reaches the input only
    where the element was kept (and positive)."""
    torch.manual_seed(3)
    layer = ReLUDropout(0.2).train()
    x = torch.randn(4096, 40).to(torch.bfloat16).requires_grad_()
    y = layer(x)
    y.float().sum().backward()
    assert y.dtype == x.grad.dtype == torch.bfloat16
    kept = y != 0
    assert torch.equal(x.grad != 0, kept) and bool((x[kept] > 0).all())
    assert torch.equal(x.grad[kept].float(), torch.full((int(kept.sum()),), 1.25))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_compiled_mask_does_not_depend_on_the_threads(compiled, monkeypatch, threads: int, dtype) -> None:
    """Above 65,536 elements the kernel splits its blocks between torch's OpenMP threads: the same bits."""
    x = torch.randn(37 * 4096 + 5, generator=torch.Generator().manual_seed(1)).to(dtype)
    as_bits = bits if dtype == torch.float32 else bits16
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out, mask = K.dropout_mask(x, THRESHOLD, SCALE, True, 99)
        dx = K.dropout_grad(x, (mask != 0).view(torch.uint8), SCALE)
    finally:
        torch.set_num_threads(before)
    monkeypatch.setenv("BARS_KERNELS", "torch")
    out_t, mask_t = K.dropout_mask(x, THRESHOLD, SCALE, True, 99)
    dx_t = K.dropout_grad(x, (mask_t != 0).view(torch.uint8), SCALE)
    assert torch.equal(as_bits(out), as_bits(out_t)) and torch.equal(as_bits(mask), as_bits(mask_t))
    assert torch.equal(as_bits(dx), as_bits(dx_t))


def test_the_kernels_share_torchs_openmp_runtime(compiled) -> None:
    """Built with -fopenmp, the library must use the OpenMP runtime torch loaded (one thread team), not a second
    one. In a fresh process as a run has it (torch, then the kernels; other libraries, e.g. scikit-learn, may bring
    their own copies under other names)."""
    import subprocess
    import sys

    if not os.path.exists("/proc/self/maps"):
        pytest.skip("no /proc here")
    code = ("import torch\nfrom bars.models.layers import kernels as K\nassert K._load() is not None\n"
            "print(sorted({l.split()[-1] for l in open('/proc/self/maps') if '/libgomp' in l or '/libiomp' in l}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    mapped = out.stdout.strip()
    assert mapped.count("libgomp") + mapped.count("libiomp") == 1, mapped


def test_training_is_the_same_with_and_without_the_kernel(compiled, monkeypatch) -> None:
    def train(kernels: str) -> list[torch.Tensor]:
        monkeypatch.setenv("BARS_KERNELS", kernels)
        torch.manual_seed(3)
        mlp = MLP(12, [32, 16], "relu", batch_norm=True, dropout=0.3, output_dim=1)
        opt = torch.optim.Adam(mlp.parameters(), 1e-2)
        g = torch.Generator().manual_seed(0)
        for _ in range(5):
            x, y = torch.randn(256, 12, generator=g), torch.rand(256, 1, generator=g).round()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(mlp(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return [p.detach().clone() for p in mlp.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(train("auto"), train("torch"), strict=True))


def test_layouts_the_kernel_does_not_take_give_the_same_values() -> None:
    x = torch.randn(64, 48)
    for layer in (Dropout(0.3), ReLUDropout(0.3)):
        torch.manual_seed(1)
        a = layer(x.t().contiguous())  # the kernel where built
        torch.manual_seed(1)
        b = layer(x.t())  # not contiguous: the torch path
        assert torch.equal(a, b)
        torch.manual_seed(1)
        c = layer(x.t().contiguous().double())  # float64: the torch path
        assert torch.allclose(c, a.double()) and torch.equal(c != 0, a != 0)


def test_gradient_is_grad_times_mask() -> None:
    x = torch.randn(40, 30, requires_grad=True)
    torch.manual_seed(9)
    y = ReLUDropout(0.25)(x)
    g = torch.randn_like(y)
    y.backward(g)
    kept = y != 0  # x > 0 and kept (a kept x > 0 stays non-zero after scaling)
    scale = 65536.0 / (65536 - round(0.25 * 65536))
    assert torch.equal(x.grad, torch.where(kept, g * scale, torch.zeros(())))
    assert torch.equal(y, torch.where(kept, x.detach() * scale, torch.zeros(())))



@pytest.mark.parametrize("mode", ["auto", "torch"])
def test_an_expanded_gradient_gives_the_products_bits(monkeypatch, mode) -> None:
    """A sum's backward hands the dropout an expanded gradient (stride 0 along the summed axis): the kernel takes
    a contiguous copy of it, the fallback the strided product; both are ``grad * mask`` bit for bit."""
    monkeypatch.setenv("BARS_KERNELS", mode)
    x = torch.randn(16, 3, 40, requires_grad=True)
    torch.manual_seed(4)
    y = ReLUDropout(0.3)(x)
    g = torch.randn(16, 1, 40)
    g[0, 0, :3] = -0.0
    y.sum(dim=1).backward(g.squeeze(1))  # x.grad from an expanded [16, 3, 40] gradient
    mask = torch.where(y != 0, 65536.0 / (65536 - round(0.3 * 65536)), 0.0)
    assert torch.equal(bits(x.grad), bits(g.expand(16, 3, 40) * mask))

def test_unknown_kernels_mode_is_an_error(monkeypatch) -> None:
    monkeypatch.setenv("BARS_KERNELS", "fast")
    with pytest.raises(ValueError, match="BARS_KERNELS='fast'"):
        K.available()


# --- LayerNorm over a narrow axis (SmallLayerNorm, bars.models.layers.LayerNorm) ---------------------------------

def _ln_run(shape, dim, seed, monkeypatch, mode):
    """y, dx, dw, db of SmallLayerNorm over ``dim`` with BARS_KERNELS=mode."""
    monkeypatch.setenv("BARS_KERNELS", mode)
    g = torch.Generator().manual_seed(seed)
    d = shape[dim]
    x = (torch.randn(shape, generator=g) * 3 + 1).requires_grad_()
    w = torch.randn(d, generator=g).requires_grad_()
    b = torch.randn(d, generator=g).requires_grad_()
    dy = torch.randn(shape, generator=g)
    y = K.SmallLayerNorm.apply(x, w, b, 1e-5, dim)
    y.backward(dy)
    return y.detach(), x.grad, w.grad, b.grad, (x.detach(), w.detach(), b.detach(), dy)


LN_CASES = [((37, 10), -1), ((4, 80, 10), -1), ((3, 17, 7), -1), ((5, 1), -1), ((2, 33, 63), -1),
            ((6, 10, 80), 1), ((3, 7, 5), 1), ((2, 1, 9), 1), ((4, 52, 3), 1), ((2, 3, 4, 5), 2)]


@pytest.mark.parametrize(("shape", "dim"), LN_CASES)
def test_layer_norm_compiled_equals_fallback(compiled, monkeypatch, shape, dim) -> None:
    a = _ln_run(shape, dim, 7, monkeypatch, "auto")
    f = _ln_run(shape, dim, 7, monkeypatch, "torch")
    for name, u, v in zip(("y", "dx", "dw", "db"), a[:4], f[:4], strict=True):
        assert torch.equal(bits(u), bits(v)), f"{name} differs between the kernel and its fallback"


@pytest.mark.parametrize("mode", ["auto", "torch"])
@pytest.mark.parametrize(("shape", "dim"), LN_CASES)
def test_layer_norm_equals_its_equation(monkeypatch, mode, shape, dim) -> None:
    """Both paths against LayerNorm written out in float64 (moving the axis last), values and all gradients."""
    y, dx, dw, db, (x, w, b, dy) = _ln_run(shape, dim, 3, monkeypatch, mode)
    x64 = x.double().movedim(dim, -1).requires_grad_()
    w64, b64 = w.double().requires_grad_(), b.double().requires_grad_()
    mean = x64.mean(-1, keepdim=True)
    var = ((x64 - mean) ** 2).mean(-1, keepdim=True)
    ref = (x64 - mean) / torch.sqrt(var + 1e-5) * w64 + b64
    ref.backward(dy.double().movedim(dim, -1))
    torch.testing.assert_close(y.double(), ref.detach().movedim(-1, dim), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx.double(), x64.grad.movedim(-1, dim), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dw.double(), w64.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(db.double(), b64.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("width", [3, 10, 16, 31, 52, 100])
def test_layer_norm_module_is_torchs_forward(width) -> None:
    """bars's LayerNorm: the same state as nn.LayerNorm, the same forward bits over the last axis (its own
    backward only for widths <= 32 that are not multiples of 8, equal to torch's to rounding; torch's otherwise),
    and forward_dim = moving the axis last."""
    torch.manual_seed(width)
    ours, ref = LayerNorm(width), torch.nn.LayerNorm(width)
    with torch.no_grad():
        ours.weight.normal_()
        ours.bias.normal_()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(64, 5, width, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    dy = torch.randn(64, 5, width)
    a, r = ours(x), ref(x2)
    assert torch.equal(a, r)
    a.backward(dy)
    r.backward(dy)
    exact = width % 8 == 0 or width > K.SMALL_NORM_MAX
    for u, v in ((x.grad, x2.grad), (ours.weight.grad, ref.weight.grad), (ours.bias.grad, ref.bias.grad)):
        if exact:
            assert torch.equal(u, v)
        else:
            torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        xt = torch.randn(8, width, 6)
        torch.testing.assert_close(ours.forward_dim(xt, 1), ref(xt.transpose(1, 2)).transpose(1, 2),
                                   rtol=1e-5, atol=1e-5)
        assert ours.eval()(xt.transpose(1, 2)).shape == (8, 6, width)


def test_layer_norm_module_without_affine_is_torchs() -> None:
    """No weight or bias: torch's own path, forward and backward, on the last and on a middle axis."""
    ln = LayerNorm(10, elementwise_affine=False)
    x = torch.randn(4, 3, 10, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y, ref = ln(x), torch.nn.functional.layer_norm(x2, (10,))
    assert torch.equal(y, ref)
    y.sum().backward()
    ref.sum().backward()
    assert torch.equal(x.grad, x2.grad)
    assert torch.equal(ln.forward_dim(x.detach().transpose(1, 2), 1), ref.detach().transpose(1, 2))


# --- FFM's pairwise term (PairDotSum, FieldAwareProducts.dot_sum) -----------------------------------------------

def _pairs_run(f, s, d, b, dtype, monkeypatch, mode, covers=True):
    """(out, gradient) of PairDotSum with BARS_KERNELS=mode on FFM's slots of f fields (s = f - 1) or, when not
    ``covers``, on every other pair only (slots in no pair: zero gradient)."""
    from bars.models.layers.field_aware import FieldAwareProducts, ffm_slot

    monkeypatch.setenv("BARS_KERNELS", mode)
    prods = FieldAwareProducts(f, s, ffm_slot)
    left, right = prods.left, prods.right
    if not covers:
        left, right = left[::2].contiguous(), right[::2].contiguous()
    g = torch.Generator().manual_seed(f * 100 + d)
    x = torch.randn(b, f * s, d, generator=g, dtype=dtype)
    # the slots in s tables [b, f, d] (FFM's layout) or, when f is even, in one [b, f * s, d] (FFMv2's)
    xs = [t.clone().requires_grad_() for t in (x.split(f, dim=1) if f % 2 else [x])]
    dy = torch.randn(b, generator=g, dtype=dtype)
    out = K.PairDotSum.apply(left, right, covers, *xs)
    out.backward(dy)
    return out.detach(), torch.cat([t.grad for t in xs], dim=1), (x, left, right, dy)


PAIR_CASES = [(2, 1, 1, 3), (5, 4, 3, 17), (10, 9, 10, 64), (39, 38, 16, 5), (4, 3, 5, 9)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("covers", [True, False])
@pytest.mark.parametrize(("f", "s", "d", "b"), PAIR_CASES)
def test_pair_dot_sum_compiled_equals_fallback(compiled, monkeypatch, f, s, d, b, covers, dtype) -> None:
    a = _pairs_run(f, s, d, b, dtype, monkeypatch, "auto", covers)
    t = _pairs_run(f, s, d, b, dtype, monkeypatch, "torch", covers)
    view = torch.int32 if dtype == torch.float32 else torch.int64
    for name, u, v in zip(("out", "dx"), a[:2], t[:2], strict=True):
        assert torch.equal(u.view(view), v.view(view)), f"{name} differs between the kernel and its fallback"


@pytest.mark.parametrize("mode", ["auto", "torch"])
@pytest.mark.parametrize("covers", [True, False])
@pytest.mark.parametrize(("f", "s", "d", "b"), PAIR_CASES)
def test_pair_dot_sum_equals_its_equation(monkeypatch, mode, f, s, d, b, covers) -> None:
    out, dx, (x, left, right, dy) = _pairs_run(f, s, d, b, torch.float64, monkeypatch, mode, covers)
    x = x.clone().requires_grad_()
    want = (x[:, left] * x[:, right]).sum(dim=(1, 2))
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx, torch.autograd.grad(want, x, dy)[0], rtol=0, atol=0)  # one product each


# --- ONN's DNN input (SelectPairDots, FieldAwareProducts.with_selected) ---------------------------------------

def _select_run(f, d, b, dtype, monkeypatch, mode, covers=True):
    """(out, gradient) of SelectPairDots with BARS_KERNELS=mode on ONNv2's slots of f fields (copies on the
    diagonal) or, when not ``covers``, on every other copy and pair only (other slots: zero gradient)."""
    from bars.models.layers.field_aware import FieldAwareProducts, SlotSelect, onnv2_slot

    monkeypatch.setenv("BARS_KERNELS", mode)
    prods, sel = FieldAwareProducts(f, f, onnv2_slot), SlotSelect(f, f, onnv2_slot).index
    left, right = prods.left, prods.right
    if not covers:
        sel, left, right = sel[::2].contiguous(), left[::2].contiguous(), right[::2].contiguous()
    g = torch.Generator().manual_seed(f * 100 + d)
    x = torch.randn(b, f * f, d, generator=g, dtype=dtype)
    # the slots in f tables [b, f, d] (ONN's layout) or, every other case, in one [b, f * f, d] (ONNv2's)
    xs = [t.clone().requires_grad_() for t in (x.split(f, dim=1) if f % 2 else [x])]
    dy = torch.randn(b, sel.numel() * d + left.numel(), generator=g, dtype=dtype)
    out = K.SelectPairDots.apply(sel, left, right, covers, *xs)
    out.backward(dy)
    return out.detach(), torch.cat([t.grad for t in xs], dim=1), (x, sel, left, right, dy)


SELECT_CASES = [(2, 1, 3), (5, 3, 17), (10, 10, 64), (39, 16, 5), (3, 4, 9)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("covers", [True, False])
@pytest.mark.parametrize(("f", "d", "b"), SELECT_CASES)
def test_select_pair_dots_compiled_equals_fallback(compiled, monkeypatch, f, d, b, covers, dtype) -> None:
    a = _select_run(f, d, b, dtype, monkeypatch, "auto", covers)
    t = _select_run(f, d, b, dtype, monkeypatch, "torch", covers)
    view = torch.int32 if dtype == torch.float32 else torch.int64
    for name, u, v in zip(("out", "dx"), a[:2], t[:2], strict=True):
        assert torch.equal(u.view(view), v.view(view)), f"{name} differs between the kernel and its fallback"


@pytest.mark.parametrize("mode", ["auto", "torch"])
@pytest.mark.parametrize("covers", [True, False])
@pytest.mark.parametrize(("f", "d", "b"), SELECT_CASES)
def test_select_pair_dots_equals_its_equation(monkeypatch, mode, f, d, b, covers) -> None:
    out, dx, (x, sel, left, right, dy) = _select_run(f, d, b, torch.float64, monkeypatch, mode, covers)
    x = x.clone().requires_grad_()
    want = torch.cat([x[:, sel].flatten(start_dim=1), (x[:, left] * x[:, right]).sum(dim=-1)], dim=1)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx, torch.autograd.grad(want, x, dy)[0], rtol=0, atol=0)  # a copy or one product


def _field_aware_case(num_slots: int, separate: bool):
    """(FieldAwareEmbedding in float64 with N(0, 1) weights, a batch) over five fields, numeric and categorical
    interleaved, with padding indices."""
    from bars.data.spec import Feature, FeatureSpec
    from bars.models.layers.field_aware import FieldAwareEmbedding

    spec = FeatureSpec(dataset="t", label="y", features=(
        Feature("n1", "numeric"), Feature("a", "categorical", vocab_size=7), Feature("n2", "numeric"),
        Feature("b", "categorical", vocab_size=5), Feature("c", "categorical", vocab_size=9)))
    torch.manual_seed(0)
    emb = FieldAwareEmbedding(spec, 4, num_slots=num_slots, separate_tables=separate, max_bytes=2**30).double()
    for p in emb.parameters():
        torch.nn.init.normal_(p)
    batch = {"n1": torch.rand(6, dtype=torch.float64), "n2": torch.rand(6, dtype=torch.float64),
             "a": torch.tensor([0, 1, 6, 3, 3, 2]), "b": torch.tensor([4, 4, 0, 1, 2, 3]),
             "c": torch.tensor([8, 1, 1, 5, 0, 7])}
    return emb, batch


def _check_traced_keeps_plain_ops(emb, of_parts, batch, want, function: str) -> None:
    """``of_parts(emb.parts(batch))`` traced (an export): no ``function`` in the graph, the same values."""
    names = tuple(batch)

    class Wrap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = emb

        def forward(self, *xs):
            return of_parts(self.emb.parts(dict(zip(names, xs, strict=True))))

    args = tuple(batch.values())
    traced = torch.jit.trace(Wrap(), args)
    assert function not in str(traced.inlined_graph)
    torch.testing.assert_close(traced(*args), want.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("separate", [True, False])
def test_onn_with_selected_equals_select_and_products(separate) -> None:
    """FieldAwareProducts.with_selected (ONN's and ONNv2's layouts) = the copies beside the products' sums: values
    and the gradients of every table; traced, the plain ops."""
    from bars.models.layers.field_aware import FieldAwareProducts, SlotSelect, onn_slot, onnv2_slot

    emb, batch = _field_aware_case(5, separate)
    slot = onn_slot if separate else onnv2_slot
    prods, select = FieldAwareProducts(5, 5, slot), SlotSelect(5, 5, slot)
    got = prods.with_selected(emb.parts(batch), select, emb.slots_first_layout)
    dy = torch.randn_like(got)
    gg = torch.autograd.grad(got, list(emb.parameters()), dy)
    e = emb(batch)
    want = torch.cat([select(e).flatten(start_dim=1), prods(e).sum(dim=-1)], dim=1)
    gw = torch.autograd.grad(want, list(emb.parameters()), dy)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for u, v in zip(gg, gw, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)
    _check_traced_keeps_plain_ops(
        emb, lambda parts: prods.with_selected(parts, select, emb.slots_first_layout), batch, want, "SelectPairDots")


@pytest.mark.parametrize("separate", [True, False])
def test_ffm_dot_sum_equals_the_products_sum(separate) -> None:
    """FieldAwareProducts.dot_sum (FFM's and FFMv2's layouts) = the sum of its products: values and the gradients
    of every table; traced, the plain ops."""
    from bars.models.layers.field_aware import FieldAwareProducts, ffm_slot

    emb, batch = _field_aware_case(4, separate)
    prods = FieldAwareProducts(5, 4, ffm_slot)
    assert prods.disjoint and prods.covers
    dy = torch.randn(6, dtype=torch.float64)
    got = prods.dot_sum(emb.parts(batch), emb.slots_first_layout)
    gg = torch.autograd.grad(got, list(emb.parameters()), dy)
    want = prods(emb(batch)).sum(dim=(1, 2))
    gw = torch.autograd.grad(want, list(emb.parameters()), dy)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for u, v in zip(gg, gw, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)
    _check_traced_keeps_plain_ops(
        emb, lambda parts: prods.dot_sum(parts, emb.slots_first_layout), batch, want, "PairDotSum")


# --- FiBiNET's bilinear pairs (PairProducts, bilinear_concat) -------------------------------------------------

def _products_run(f, d, b, n, dtype, monkeypatch, mode):
    """(out, gradients of every h and e) of PairProducts with BARS_KERNELS=mode over n (h, e) couples."""
    from bars.models.layers import field_pairs

    monkeypatch.setenv("BARS_KERNELS", mode)
    left, right = field_pairs(f)
    g = torch.Generator().manual_seed(f * 100 + d + n)
    hes = [torch.randn(b, f, d, generator=g, dtype=dtype).requires_grad_() for _ in range(2 * n)]
    out = K.PairProducts.apply(left, right, *hes)
    dy = torch.randn(out.shape, generator=g, dtype=dtype)
    out.backward(dy)
    return out.detach(), [t.grad for t in hes], ([t.detach() for t in hes], left, right, dy)


PRODUCT_CASES = [(2, 1, 3, 1), (5, 3, 17, 2), (10, 10, 64, 2), (39, 16, 5, 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("f", "d", "b", "n"), PRODUCT_CASES)
def test_pair_products_compiled_equals_fallback(compiled, monkeypatch, f, d, b, n, dtype) -> None:
    a = _products_run(f, d, b, n, dtype, monkeypatch, "auto")
    t = _products_run(f, d, b, n, dtype, monkeypatch, "torch")
    view = torch.int32 if dtype == torch.float32 else torch.int64
    assert torch.equal(a[0].view(view), t[0].view(view)), "out differs between the kernel and its fallback"
    for i, (u, v) in enumerate(zip(a[1], t[1], strict=True)):
        assert torch.equal(u.view(view), v.view(view)), f"gradient {i} differs between the kernel and its fallback"


@pytest.mark.parametrize("mode", ["auto", "torch"])
@pytest.mark.parametrize(("f", "d", "b", "n"), PRODUCT_CASES)
def test_pair_products_equals_its_equation(monkeypatch, mode, f, d, b, n) -> None:
    out, grads, (hes, left, right, dy) = _products_run(f, d, b, n, torch.float64, monkeypatch, mode)
    hes = [t.clone().requires_grad_() for t in hes]
    want = torch.stack([h[:, left] * e[:, right] for h, e in zip(hes[0::2], hes[1::2], strict=True)], dim=1)
    torch.testing.assert_close(out, want, rtol=0, atol=0)  # one product each
    for u, v in zip(grads, torch.autograd.grad(want, hes, dy), strict=True):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bilinear_type", ["field_all", "field_each", "field_interaction"])
@pytest.mark.parametrize("separate", [True, False])
def test_bilinear_concat_equals_the_layers_concatenated(bilinear_type, separate) -> None:
    """bilinear_concat = FiBiNET's cat([bilinear(e), bilinear'(s)], 1).flatten(1): values and every gradient
    (float64); traced, the plain ops."""
    from bars.models.layers import BilinearInteraction, bilinear_concat

    torch.manual_seed(0)
    one = BilinearInteraction(6, 4, bilinear_type).double()
    two = BilinearInteraction(6, 4, bilinear_type).double() if separate else one
    e = torch.randn(7, 6, 4, dtype=torch.float64, requires_grad=True)
    s = torch.randn(7, 6, 4, dtype=torch.float64, requires_grad=True)
    params = [e, s, *one.parameters(), *(two.parameters() if separate else [])]
    got = bilinear_concat([(one, e), (two, s)])
    dy = torch.randn_like(got)
    want = torch.cat([one(e), two(s)], dim=1).flatten(start_dim=1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for u, v in zip(torch.autograd.grad(got, params, dy), torch.autograd.grad(want, params, dy), strict=True):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)

    class Wrap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.one, self.two = one, two

        def forward(self, e, s):
            return bilinear_concat([(self.one, e), (self.two, s)])

    graph = str(torch.jit.trace(Wrap(), (e.detach(), s.detach())).inlined_graph)
    assert "PairProducts" not in graph


def test_bilinear_concat_under_bfloat16_autocast() -> None:
    """Under CPU bfloat16 autocast (train.precision=bf16) the left factors are bfloat16 and the embeddings float32:
    bilinear_concat takes the fallback and gives the plain composition's values and gradients."""
    from bars.models.layers import BilinearInteraction, bilinear_concat

    torch.manual_seed(0)
    one = BilinearInteraction(6, 4, "field_all")
    e = torch.randn(7, 6, 4, requires_grad=True)
    s = torch.randn(7, 6, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = bilinear_concat([(one, e), (one, s)])
        want = torch.cat([one(e), one(s)], dim=1).flatten(start_dim=1)
    dy = torch.randn_like(want)
    params = [e, s, one.weight]
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    for u, v in zip(torch.autograd.grad(got, params, dy), torch.autograd.grad(want, params, dy), strict=True):
        torch.testing.assert_close(u, v, rtol=1e-2, atol=1e-2)


def _kmax_inputs():
    """(x, k) cases: distinct values, ties at and away from the boundary, NaN, signed zeros and infinities, float64,
    a non-contiguous view, rows longer than the kernel's buffer (64) and k = n - 1."""
    g = torch.Generator().manual_seed(11)
    for n, k in [(2, 1), (7, 3), (12, 5), (16, 6), (45, 3), (64, 63), (65, 10), (200, 7)]:
        yield torch.randn(333, n, generator=g), k
        yield torch.randint(-2, 3, (333, n), generator=g).float(), k  # ties everywhere
        yield torch.randn(50, 3, n, generator=g, dtype=torch.float64), k
    x = torch.randn(400, 12, generator=g)
    x[::3, 4] = float("nan")
    x[::5, 0:2] = float("inf")
    x[1::5, 0:6] = float("-inf")
    x[2::7, :] = -0.0
    x[2::7, ::2] = 0.0
    yield x, 5
    yield torch.randn(12, 300, generator=g).t(), 4  # not contiguous
    yield torch.randn(300, 5, 12, generator=g).transpose(1, 2), 2  # [rows, n, channels] as CCPM's first layer


def test_kmax_index_is_topk_sorted(monkeypatch) -> None:
    """Both paths (the kernel where built) give ``topk(k).indices.sort()`` exactly, ties and NaN included."""
    for x, k in _kmax_inputs():
        want = x.topk(k, dim=-1).indices.sort(dim=-1).values
        assert torch.equal(K.kmax_index(x, k), want), (tuple(x.shape), k)
        monkeypatch.setenv("BARS_KERNELS", "torch")
        assert torch.equal(K.kmax_index(x, k), want), (tuple(x.shape), k)
        monkeypatch.delenv("BARS_KERNELS")


def test_kmax_kernel_flags_exactly_the_rows_without_one_set(compiled) -> None:
    """The kernel's own rows (flag 0) are the k largest, in order; it leaves to topk exactly the rows with a tie at
    the boundary or a NaN."""
    x = torch.tensor([[3.0, 5.0, 3.0, 1.0],  # k = 2: 5 and one of the 3s -> topk decides
                      [3.0, 5.0, 4.0, 1.0],  # 5, 4
                      [1.0, float("nan"), 2.0, 0.0],  # NaN
                      [2.0, 2.0, 1.0, 1.0],  # ties, but not at the boundary: 2, 2
                      [-0.0, 0.0, -1.0, 5.0],  # -0 == 0 at the boundary
                      [float("-inf"), float("inf"), 7.0, float("-inf")]])
    index = torch.empty(6, 2, dtype=torch.int64)
    flag = torch.empty(6, dtype=torch.uint8)
    K._load().bars_kmax_index_f32(x.data_ptr(), 6, 4, 2, index.data_ptr(), flag.data_ptr())
    assert flag.tolist() == [1, 0, 1, 0, 1, 0]
    assert index[[1, 3, 5]].tolist() == [[1, 2], [0, 1], [1, 2]]
    g = torch.Generator().manual_seed(0)
    y = torch.randn(1000, 12, generator=g)
    index = torch.empty(1000, 5, dtype=torch.int64)
    flag = torch.empty(1000, dtype=torch.uint8)
    K._load().bars_kmax_index_f32(y.data_ptr(), 1000, 12, 5, index.data_ptr(), flag.data_ptr())
    assert not flag.any()
    for row, idx in zip(y.tolist(), index.tolist(), strict=True):  # the definition, row by row
        largest = sorted(range(12), key=lambda i: -row[i])[:5]
        assert idx == sorted(largest)


def test_ccpm_convolution_is_the_same_with_and_without_the_kernel(compiled, monkeypatch) -> None:
    """CCPM's convolution stack (two k-max poolings a pass): same outputs and gradients, bit for bit."""
    from bars.models.layers import FieldConvolution

    def run(kernels: str):
        monkeypatch.setenv("BARS_KERNELS", kernels)
        torch.manual_seed(5)
        conv = FieldConvolution(10, [3, 3], [3, 3], "tanh")
        e = torch.randn(256, 10, 8, requires_grad=True)
        e.data[::9, 3:6] = 0.0  # equal windows: ties in the first layer's outputs
        out = conv(e)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
        return out.detach(), e.grad, [p.grad for p in conv.parameters()]

    a, b = run("auto"), run("torch")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert all(torch.equal(u, v) for u, v in zip(a[2], b[2], strict=True))


def _gated_cross_run(monkeypatch, kernels: str, fused: bool = True, b: int = 300, d: int = 37, layers: int = 3):
    """Outputs and every gradient of a GatedCrossNet (``fused``: the GatedCrossMix path; else autograd's ops)."""
    from bars.models.layers import GatedCrossNet
    from bars.models.layers import gated_cross as gc

    monkeypatch.setenv("BARS_KERNELS", kernels)
    if not fused:  # the path that tracing takes: autograd's own element-wise ops
        monkeypatch.setattr(gc, "traced", lambda: True)
    torch.manual_seed(3)
    net = GatedCrossNet(d, layers)
    x0 = torch.randn(b, d, requires_grad=True)
    with torch.no_grad():
        x0[::7, :5] = 0.0  # zeros: signed-zero products
    out = net(x0)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
    monkeypatch.undo()
    return out.detach(), x0.grad, net.weight.grad, net.bias.grad


@pytest.mark.parametrize(("b", "d"), [(1, 1), (300, 37), (64, 624)])
def test_gated_cross_compiled_equals_fallback(compiled, monkeypatch, b, d) -> None:
    """GDCN's fused element-wise part: the compiled kernel and its torch fallback, bit for bit."""
    a = _gated_cross_run(monkeypatch, "auto", b=b, d=d)
    c = _gated_cross_run(monkeypatch, "torch", b=b, d=d)
    for u, v in zip(a, c, strict=True):
        assert torch.equal(bits(u), bits(v))


@pytest.mark.parametrize("kernels", ["auto", "torch"])
def test_gated_cross_fused_equals_autograds_ops(monkeypatch, kernels) -> None:
    """The fused layer computes autograd's graph of ``x0 * (W x + b) * sigmoid(W_g x) + x``: the same outputs bit
    for bit; the same gradients up to the order autograd sums x0's several contributions in."""
    a = _gated_cross_run(monkeypatch, kernels)
    c = _gated_cross_run(monkeypatch, kernels, fused=False)
    assert torch.equal(a[0], c[0])
    for u, v in zip(a[1:], c[1:], strict=True):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)


def test_gated_cross_is_autograds_function_in_float64() -> None:
    """gradcheck of the fused node (its torch path: float64 is not the kernel's)."""
    g = torch.Generator().manual_seed(2)
    d = 5
    z = torch.randn(4, 2 * d, dtype=torch.float64, generator=g, requires_grad=True)
    bias = torch.rand(d, dtype=torch.float64, generator=g, requires_grad=True)
    x0 = torch.randn(4, d, dtype=torch.float64, generator=g, requires_grad=True)
    x = torch.randn(4, d, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(K.GatedCrossMix.apply, (z, bias, x0, x))


@pytest.mark.parametrize(("aten", "vendor", "want"), [
    ("AVX512", "GenuineIntel", True),  # an Intel Xeon: torch's fused attention, CCPM's unfolded product
    ("AVX512", "AuthenticAMD", False),  # an AMD EPYC with AVX-512 (Zen 4): measured faster with the other paths
    ("AVX2", "GenuineIntel", False),
    ("AVX2", "AuthenticAMD", False),
    ("DEFAULT", "", False),
])
def test_layer_paths_follow_vendor_and_capability(monkeypatch, aten, vendor, want) -> None:
    monkeypatch.setattr(K, "_CAPABILITY", None)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: aten)
    monkeypatch.setattr(K, "_cpu_vendor", lambda: vendor)
    assert K.intel_avx512_cpu() is want
    monkeypatch.setattr(K, "_cpu_vendor", lambda: "GenuineIntel")  # cached: read once per process
    assert K.intel_avx512_cpu() is want


def test_cpu_vendor_is_cpuinfos_vendor_id() -> None:
    from pathlib import Path

    info = Path("/proc/cpuinfo")
    lines = [ln for ln in info.read_text().splitlines() if ln.startswith("vendor_id")] if info.exists() else []
    if not lines:
        pytest.skip("no vendor_id in /proc/cpuinfo")
    assert K._cpu_vendor() == lines[0].split(":", 1)[1].strip() != ""


def _euler_run(monkeypatch, kernels: str, fused: bool = True, b: int = 300, fi: int = 11, fo: int = 7,
               d: int = 6, layers: int = 2, layer_norm: bool = True):
    """Output and every gradient of an EulerNetwork (``fused``: the EulerPolar / EulerCombine path; else autograd's
    ops), with exact zeros in the embeddings (a zero phase and a modulus of 1e-4) and negative implicit parts."""
    from bars.models.layers import EulerNetwork
    from bars.models.layers import euler as eu

    monkeypatch.setenv("BARS_KERNELS", kernels)
    if not fused:  # the path that tracing takes: autograd's own element-wise ops
        monkeypatch.setattr(eu, "traced", lambda: True)
    torch.manual_seed(4)
    net = EulerNetwork(fi, d, (fo,) * layers, layer_norm=layer_norm)
    e = torch.randn(b, fi, d, requires_grad=True)
    with torch.no_grad():
        e[::7, :3] = 0.0
    out = net(e)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
    monkeypatch.undo()
    return [out.detach(), e.grad] + [p.grad for p in net.parameters() if p.grad is not None]


@pytest.mark.parametrize(("b", "fi", "fo", "d", "layers"), [(1, 1, 1, 1, 1), (300, 11, 7, 6, 2), (64, 39, 52, 16, 1)])
def test_euler_compiled_equals_fallback(compiled, monkeypatch, b, fi, fo, d, layers) -> None:
    """EulerNet's fused element-wise parts: the compiled kernels and their torch fallbacks, bit for bit."""
    a = _euler_run(monkeypatch, "auto", b=b, fi=fi, fo=fo, d=d, layers=layers)
    c = _euler_run(monkeypatch, "torch", b=b, fi=fi, fo=fo, d=d, layers=layers)
    assert len(a) == len(c) > 6
    for u, v in zip(a, c, strict=True):
        assert torch.equal(bits(u), bits(v))


@pytest.mark.parametrize("kernels", ["auto", "torch"])
@pytest.mark.parametrize("layer_norm", [True, False])
def test_euler_fused_equals_autograds_ops(monkeypatch, kernels, layer_norm) -> None:
    """The fused layer computes autograd's graph: the same output bit for bit; the same gradients up to the order
    the input's and the orders' several contributions are summed in."""
    a = _euler_run(monkeypatch, kernels, layer_norm=layer_norm)
    c = _euler_run(monkeypatch, kernels, fused=False, layer_norm=layer_norm)
    assert torch.equal(a[0], c[0])
    for u, v in zip(a[1:], c[1:], strict=True):  # sums of thousands of terms: relative to the largest
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-6 * float(v.abs().max()))


def test_euler_fused_nodes_are_autograds_functions_in_float64() -> None:
    """gradcheck of the three fused nodes (their torch paths: float64 is not the kernels')."""
    from bars.models.layers import euler as eu

    g = torch.Generator().manual_seed(2)
    r = torch.randn(3, 2, 4, dtype=torch.float64, generator=g, requires_grad=True)
    p = torch.randn(3, 2, 4, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(eu.EulerPolar.apply, (r, p))
    mixed = torch.randn(2, 3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    bl = torch.randn(1, 5, dtype=torch.float64, generator=g, requires_grad=True)
    bt = torch.randn(5, dtype=torch.float64, generator=g, requires_grad=True)
    lin = torch.randn(6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(eu.EulerCombine.apply, (mixed, bl, bt, lin))
    e = torch.randn(3, 2, 4, dtype=torch.float64, generator=g, requires_grad=True)
    mu = torch.rand(1, 4, 1, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(eu.EulerEmbed.apply, (e, mu))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("kind", ["layer_norm_mid", "euler"])
def test_split_kernels_do_not_depend_on_the_threads(compiled, monkeypatch, threads: int, kind: str) -> None:
    """Above 65,536 values the middle-axis LayerNorm and EulerNet's element-wise kernels split their rows between
    torch's OpenMP threads: the same bits as the torch fallback (LayerNorm's on one thread), forward and backward."""
    def run(kernels: str, n: int):
        monkeypatch.setenv("BARS_KERNELS", kernels)
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            if kind == "euler":
                return _euler_run(monkeypatch, kernels, b=701, fi=13, fo=9, d=8, layers=1)
            from bars.models.layers import LayerNorm
            torch.manual_seed(6)
            norm = LayerNorm(10)
            with torch.no_grad():
                norm.weight.uniform_(0.5, 1.5)
            x = torch.randn(1001, 10, 13, requires_grad=True)
            y = norm.forward_dim(x, 1)
            y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(2)))
            return [y.detach(), x.grad, norm.weight.grad, norm.bias.grad]
        finally:
            torch.set_num_threads(before)
            monkeypatch.undo()

    # EulerNet's run has matrix products, whose bits may depend on the threads: its fallback at the same count
    a, c = run("auto", threads), run("torch", threads if kind == "euler" else 1)
    for u, v in zip(a, c, strict=True):
        assert torch.equal(bits(u), bits(v))
