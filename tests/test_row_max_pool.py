"""FGCNN's row max pooling kernel (bars.models.layers.convolution.RowMaxPool, bars_row_maxpool_* in
bars/models/layers/_kernels.c) against torch's MaxPool2d((p, 1), padding=(pad, 0)), which is its fallback: the same
values, the same row chosen in a window (ties, NaN, -inf, signed zeros) and the same gradient bits; and an FGCNN
trained through it against one trained with torch's pooling."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from bars.data.spec import Feature, FeatureSpec
from bars.models import build
from bars.models.layers import FeatureGeneration
from bars.models.layers import convolution as C
from bars.models.layers import kernels as K


@pytest.fixture(scope="module")
def compiled() -> None:
    if K._load() is None:
        if os.environ.get("BARS_REQUIRE_NATIVE"):
            raise RuntimeError("BARS_REQUIRE_NATIVE is set but bars/models/layers/_kernels.c is not built")
        pytest.skip("bars/models/layers/_kernels.c is not built")


def bits(t: torch.Tensor) -> torch.Tensor:  # NaN == NaN, -0 != +0
    return t.contiguous().view(torch.int32)


def awkward(shape, seed: int) -> torch.Tensor:
    """Random values with ties, NaNs, -inf columns, signed zeros and repeated rows."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    flat = x.view(-1)
    n = flat.numel()
    pick = lambda k: torch.randint(0, n, (k,), generator=g)
    flat[pick(max(1, n // 50))] = float("nan")
    flat[pick(max(1, n // 50))] = float("-inf")
    flat[pick(max(1, n // 20))] = 0.0
    flat[pick(max(1, n // 20))] = -0.0
    flat[pick(max(1, n // 20))] = 1.0  # ties
    x[..., 0] = float("-inf")  # a column of -inf only
    if x.shape[2] > 1:
        x[:, :, 1] = x[:, :, 0]  # equal rows: the first one wins
    return x


CASES = [  # (b, c, h, w, p, pad): FGCNN's shapes (p = 2), the general window, padding on both sides
    (4, 3, 39, 16, 2, 1), (3, 5, 20, 16, 2, 0), (2, 4, 5, 7, 2, 1), (2, 2, 6, 5, 4, 2), (2, 3, 9, 3, 3, 0),
    (2, 2, 7, 70, 3, 1), (3, 2, 1, 16, 1, 0), (2, 2, 2, 16, 2, 1), (64, 40, 10, 16, 2, 0),
]


def run(x: torch.Tensor, p: int, pad: int, g_seed: int, kernel: bool):
    pool = nn.MaxPool2d((p, 1), padding=(pad, 0))
    xr = x.clone().requires_grad_()
    y = C.row_max_pool(xr, pool) if kernel else pool(xr)
    assert (type(y.grad_fn).__name__ == "RowMaxPoolBackward") == kernel
    g = awkward(y.shape, g_seed)
    y.backward(g)
    return y.detach(), xr.grad


@pytest.mark.parametrize("b, c, h, w, p, pad", CASES)
def test_kernel_is_torchs_max_pool_bit_for_bit(compiled, b, c, h, w, p, pad) -> None:
    x = awkward((b, c, h, w), 1)
    y, gx = run(x, p, pad, 2, kernel=True)
    ty, tgx = run(x, p, pad, 2, kernel=False)
    assert y.shape == ty.shape
    assert torch.equal(bits(y), bits(ty))
    assert torch.equal(bits(gx), bits(tgx))


def test_fallback_without_the_kernels_is_torchs(monkeypatch) -> None:
    monkeypatch.setenv("BARS_KERNELS", "torch")
    x = torch.randn(2, 3, 5, 4, requires_grad=True)
    y = C.row_max_pool(x, nn.MaxPool2d((2, 1), padding=(1, 0)))
    assert "MaxPool" in type(y.grad_fn).__name__


@pytest.mark.parametrize("why", ["float64", "strided", "autocast", "pool"])
def test_what_the_kernel_does_not_take_goes_to_torch(compiled, why) -> None:
    x = torch.randn(2, 3, 6, 4)
    pool = nn.MaxPool2d((2, 1), padding=(0, 0))
    if why == "float64":
        x = x.double()
    elif why == "strided":
        x = x.transpose(2, 3)
    elif why == "pool":
        pool = nn.MaxPool2d((2, 2))
    x.requires_grad_()
    if why == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = C.row_max_pool(x, pool)
    else:
        y = C.row_max_pool(x, pool)
    assert type(y.grad_fn).__name__ != "RowMaxPoolBackward"
    assert torch.equal(y.float(), pool(x).float())


def test_backward_without_the_kernels_since_the_forward_is_torchs(compiled, monkeypatch) -> None:
    x = awkward((3, 4, 9, 16), 5)
    _, tgx = run(x, 2, 1, 6, kernel=False)
    xr = x.clone().requires_grad_()
    y = C.row_max_pool(xr, nn.MaxPool2d((2, 1), padding=(1, 0)))
    monkeypatch.setenv("BARS_KERNELS", "torch")  # turned off between the forward and the backward
    y.backward(awkward(y.shape, 6))
    assert torch.equal(bits(xr.grad), bits(tgx))


def test_kernel_does_not_depend_on_the_threads(compiled) -> None:
    x = awkward((64, 40, 20, 16), 3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run(x, 2, 0, 4, kernel=True)
        torch.set_num_threads(2)
        two = run(x, 2, 0, 4, kernel=True)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(bits(a), bits(b)) for a, b in zip(one, two, strict=True))


def test_feature_generation_takes_the_kernel_and_keeps_its_gradients(compiled, monkeypatch) -> None:
    torch.manual_seed(0)
    gen = FeatureGeneration(13, 4, [3, 4, 2], [5, 3, 3], [2, 2, 2], [2, 2, 2], "tanh", True)
    emb = torch.randn(32, 13, 4)
    outs = []
    for mode in ("auto", "torch"):
        monkeypatch.setenv("BARS_KERNELS", mode)
        gen.zero_grad()
        e = emb.clone().requires_grad_()
        out = gen(e)
        fns = set()
        stack = [out.grad_fn]
        while stack:
            fn = stack.pop()
            if fn is not None and fn not in fns:
                fns.add(fn)
                stack.extend(f for f, _ in fn.next_functions)
        assert any(type(f).__name__ == "RowMaxPoolBackward" for f in fns) == (mode == "auto")
        out.pow(2).sum().backward()
        outs.append((out.detach(), e.grad, [p.grad.clone() for p in gen.parameters()]))
    (a, ga, pa), (t, gt, pt) = outs
    assert torch.equal(bits(a), bits(t)) and torch.equal(bits(ga), bits(gt))
    assert all(torch.equal(bits(u), bits(v)) for u, v in zip(pa, pt, strict=True))


def test_fgcnn_trains_to_the_same_bits_through_the_kernel(compiled, monkeypatch) -> None:
    spec = FeatureSpec(dataset="t", label="label", features=tuple(
        Feature(f"f{i}", "categorical", vocab_size=20 + i) for i in range(9)))
    params = {"embedding_dim": 4, "channels": (3, 4), "kernel_heights": 3, "pooling_sizes": 2,
              "recombined_channels": 2, "dnn_hidden_units": (16,)}
    g = torch.Generator().manual_seed(0)
    batches = [({f.name: torch.randint(0, f.vocab_size, (64,), generator=g) for f in spec.features},
                torch.randint(0, 2, (64,), generator=g).float()) for _ in range(4)]
    runs = []
    for mode in ("auto", "torch"):
        monkeypatch.setenv("BARS_KERNELS", mode)
        torch.manual_seed(0)
        model = build("fgcnn", spec, params)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for xb, yb in batches:
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(model(xb).view(-1), yb)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        runs.append((torch.stack(losses), [p.detach().clone() for p in model.parameters()]))
    (la, pa), (lt, pt) = runs
    assert torch.equal(bits(la), bits(lt))
    assert all(torch.equal(bits(u), bits(v)) for u, v in zip(pa, pt, strict=True))
