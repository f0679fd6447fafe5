"""FCN's and ECN's self-mask cross layer (bars.models.layers.SelfMaskCrossNet): its element-wise part as one autograd
node (``SelfMaskMix``), compiled kernel and torch fallback, against autograd's own graph of the same ops."""

from __future__ import annotations

import pytest
import torch

from bars.models.layers import SelfMaskCrossNet
from bars.models.layers import exponential_cross as ec
from bars.models.layers import kernels as K


def bits(t: torch.Tensor) -> torch.Tensor:  # bit patterns: NaN == NaN, -0 != +0
    return t.view(torch.int32)


def _run(monkeypatch, kernels: str, fused: bool = True, *, kind: str = "exponential", b: int = 300, heads: int = 1,
         width: int = 38, layers: int = 3, layer_norm: bool = True, batch_norm: bool = False, specials: bool = False):
    """Output and every gradient of a SelfMaskCrossNet (``fused``: the SelfMaskMix path; else autograd's ops, the
    path tracing takes), dropout off (its own kernels are tested apart)."""
    monkeypatch.setenv("BARS_KERNELS", kernels)
    if not fused:
        monkeypatch.setattr(ec, "traced", lambda: True)
    torch.manual_seed(5)
    net = SelfMaskCrossNet(width, layers, kind, layer_norm=layer_norm, batch_norm=batch_norm, num_heads=heads)
    x0 = torch.randn(b, heads, width, requires_grad=True)
    with torch.no_grad():
        x0[::7, :, :5] = 0.0  # zeros: signed-zero products
        if specials:
            x0[1, 0, 3] = float("nan")
            x0[2, 0, 4] = float("inf")
            x0[3, 0, :] = -0.0
    out = net(x0)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
    monkeypatch.undo()
    return [out.detach(), x0.grad] + [p.grad for p in net.parameters() if p.grad is not None]


CASES = [
    {"kind": "exponential"},
    {"kind": "linear"},
    {"kind": "linear", "layer_norm": False},
    {"kind": "exponential", "heads": 2, "b": 64, "width": 624, "layers": 2},
    {"kind": "exponential", "batch_norm": True, "heads": 3, "b": 50},
    {"kind": "exponential", "b": 1, "width": 2, "layers": 1},
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_compiled_equals_fallback(monkeypatch, case) -> None:
    """The compiled kernel and its torch fallback, bit for bit (forward and every gradient)."""
    if K._load() is None:
        pytest.skip("bars/models/layers/_kernels.c is not built")
    a = _run(monkeypatch, "auto", **case)
    c = _run(monkeypatch, "torch", **case)
    assert len(a) == len(c) >= 5
    for u, v in zip(a, c, strict=True):
        assert torch.equal(bits(u), bits(v))


@pytest.mark.parametrize("kernels", ["auto", "torch"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_fused_equals_autograds_ops(monkeypatch, kernels, case) -> None:
    """The fused node computes autograd's graph of ``(base * (cat([h, h * relu(ln)]) + bias)) + x``: the same output
    bit for bit, and in the exponential network the same gradients bit for bit. In the linear one every layer's
    ``base`` is ``x0``, whose several contributions autograd sums in another order there: equal to rounding."""
    a = _run(monkeypatch, kernels, **case)
    c = _run(monkeypatch, kernels, fused=False, **case)
    assert torch.equal(bits(a[0]), bits(c[0]))
    for u, v in zip(a[1:], c[1:], strict=True):
        if case["kind"] == "exponential":
            assert torch.equal(bits(u), bits(v))
        else:
            torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5 * float(v.abs().max()))  # relative to the largest


def test_specials_propagate_as_in_autograd(monkeypatch) -> None:
    """NaN, inf and -0 in the input: the kernel's relu keeps NaN and -0 as torch's does, so the values match autograd's
    graph as NaN == NaN."""
    for kernels in ("auto", "torch"):
        a = _run(monkeypatch, kernels, specials=True, layers=1)
        c = _run(monkeypatch, kernels, fused=False, specials=True, layers=1)
        for u, v in zip(a, c, strict=True):
            assert torch.equal(u.isnan(), v.isnan())
            assert torch.equal(torch.nan_to_num(u, nan=0.0), torch.nan_to_num(v, nan=0.0))


def test_the_fused_node_is_autograds_function_in_float64() -> None:
    """gradcheck of SelfMaskMix (its torch path: float64 is not the kernel's), base and x apart and as one tensor."""
    g = torch.Generator().manual_seed(2)
    k = 3

    def t(*shape):
        return torch.randn(*shape, dtype=torch.float64, generator=g, requires_grad=True)

    h, ln, bias, base, x = t(4, 2, k), t(4, 2, k), t(2 * k), t(4, 2, 2 * k), t(4, 2, 2 * k)
    assert torch.autograd.gradcheck(ec.SelfMaskMix.apply, (h, ln, bias, base, x))
    assert torch.autograd.gradcheck(lambda h, ln, b, x: ec.SelfMaskMix.apply(h, ln, b, x, x), (h, ln, bias, x))


def test_autocast_and_tracing_take_autograds_ops(monkeypatch) -> None:
    """Under autocast (bf16) or while tracing, the layer keeps torch's ops (which autocast casts and exporters know)."""
    calls = []
    monkeypatch.setattr(ec.SelfMaskMix, "apply", lambda *a: calls.append(1) or a[-1])
    net = SelfMaskCrossNet(8, 1, "exponential")
    x0 = torch.randn(4, 1, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(x0)
    assert not calls
    net(x0)
    assert calls == [1]
