"""DIEN's interest-evolution blocks (bars.models.layers.interest_evolution): one AUGRU / AGRU step against the
paper's equations written out, the recurrence's masking of padded steps, behaviours-first rolling, the last
valid state, and the attention scores (bilinear, dot, DIN's unit) with their mask and softmax."""

from __future__ import annotations

import pytest
import torch

from bars.models.layers import (
    AttentionalGRU,
    AttentionalGRUCell,
    DINAttention,
    InterestAttention,
    behaviours_first,
    init_bars_,
    last_valid,
)


def _weights(cell: AttentionalGRUCell):
    """The paper's per-gate matrices from the cell's stacked [u; r; n] Linear maps."""
    H = cell.hidden_size
    wx, bx = cell.x2h.weight, cell.x2h.bias
    wh, bh = cell.h2h.weight, cell.h2h.bias
    return {g: (wx[k * H:(k + 1) * H], bx[k * H:(k + 1) * H], wh[k * H:(k + 1) * H], bh[k * H:(k + 1) * H])
            for k, g in enumerate("urn")}


@pytest.mark.parametrize("gru_type", ["AUGRU", "AGRU"])
def test_one_step_from_the_equations(gru_type):
    torch.manual_seed(0)
    cell = AttentionalGRUCell(3, 4, gru_type)
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_(0, 0.5)
    x, h, a = torch.randn(5, 3), torch.randn(5, 4), torch.rand(5)
    W = _weights(cell)

    def gate(g):
        wx, bx, wh, bh = W[g]
        return x @ wx.T + bx, h @ wh.T + bh

    xu, hu = gate("u")
    xr, hr = gate("r")
    xn, hn = gate("n")
    r = torch.sigmoid(xr + hr)
    n = torch.tanh(xn + r * hn)  # (FuxiCTR / PyTorch GRU form: r gates the hidden part with its bias)
    if gru_type == "AUGRU":  # eq. (8)-(9): u' = a * u, h' = (1 - u') h + u' n
        u = a[:, None] * torch.sigmoid(xu + hu)
        want = (1 - u) * h + u * n
    else:  # eq. (7): h' = (1 - a) h + a n
        want = (1 - a[:, None]) * h + a[:, None] * n
    assert torch.allclose(cell(x, h, a), want, atol=1e-6)
    # a zero score keeps the state (both cells)
    assert torch.allclose(cell(x, h, torch.zeros(5)), h, atol=1e-7)


def test_agru_update_gate_rows_get_no_gradient():
    torch.manual_seed(0)
    cell = AttentionalGRUCell(3, 4, "AGRU")
    cell(torch.randn(5, 3), torch.randn(5, 4), torch.rand(5)).sum().backward()
    assert torch.all(cell.x2h.weight.grad[:4] == 0) and torch.all(cell.h2h.bias.grad[:4] == 0)
    assert torch.any(cell.x2h.weight.grad[4:] != 0)


def test_padded_steps_leave_the_state_and_empty_rows_stay_zero():
    torch.manual_seed(0)
    gru = AttentionalGRU(3, 4, "AUGRU")
    lengths = torch.tensor([0, 2, 5, 3])
    x, a = torch.randn(4, 5, 3), torch.rand(4, 5)
    mask = torch.arange(5)[None] < lengths[:, None]
    out = gru(x, a, mask)
    assert torch.equal(out[0], torch.zeros(4))
    for b in range(1, 4):  # the cell over the row's behaviours alone
        h = torch.zeros(1, 4)
        for t in range(int(lengths[b])):
            h = gru.cell(x[b, t:t + 1], h, a[b, t:t + 1])
        assert torch.allclose(out[b], h[0], atol=1e-6)
    # what stands at padded steps does not matter
    noisy = torch.where(mask[..., None], x, torch.randn_like(x) * 9)
    assert torch.allclose(gru(noisy, torch.where(mask, a, torch.rand_like(a)), mask), out, atol=1e-6)


def test_behaviours_first_and_last_valid():
    pre = torch.tensor([[0, 0, 7, 8], [0, 0, 0, 0], [1, 2, 3, 4], [0, 0, 0, 5]])
    lengths = (pre > 0).sum(1)
    post = behaviours_first(pre, lengths, "pre")
    assert post.tolist() == [[7, 8, 0, 0], [0, 0, 0, 0], [1, 2, 3, 4], [5, 0, 0, 0]]
    assert torch.equal(behaviours_first(post, lengths, "post"), post)
    emb = behaviours_first(pre.unsqueeze(-1).float().expand(-1, -1, 2), lengths, "pre")
    assert torch.equal(emb[..., 0], post.float())
    last = last_valid(emb, lengths)
    assert last[:, 0].tolist() == [8.0, 0.0, 4.0, 5.0]
    with pytest.raises(ValueError, match="padding 'middle'"):
        behaviours_first(pre, lengths, "middle")


def test_attention_scores_bilinear_dot_and_masking():
    torch.manual_seed(0)
    h, t = torch.randn(3, 4, 5), torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    bil = init_bars_(InterestAttention(5, "bilinear_attention", use_softmax=False))
    dot = InterestAttention(5, "dot_attention", use_softmax=False)
    raw = torch.einsum("bld,bd->bl", h, t)
    assert torch.allclose(bil(h, t, mask), raw * mask, atol=1e-6)  # W starts as the identity
    assert torch.allclose(dot(h, t, mask), raw * mask, atol=1e-6)
    with torch.no_grad():
        bil.kernel.weight.normal_()
    assert torch.allclose(bil(h, t, mask), torch.einsum("bld,de,be->bl", h, bil.kernel.weight, t) * mask, atol=1e-5)
    soft = InterestAttention(5, "dot_attention", use_softmax=True)(h, t, mask)
    assert torch.allclose(soft[:2].sum(-1), torch.ones(2)) and torch.all(soft[0, 2:] == 0)
    assert torch.allclose(soft[0, :2], (raw[0, :2]).softmax(-1), atol=1e-6)
    assert torch.allclose(soft[2], torch.full((4,), 0.25))  # no behaviour: uniform, as FuxiCTR
    with pytest.raises(ValueError, match="attention_type 'cosine'"):
        InterestAttention(5, "cosine")


@pytest.mark.parametrize("use_softmax", [False, True])
def test_din_attention_scores_are_dins_weights(use_softmax):
    torch.manual_seed(0)
    att = init_bars_(InterestAttention(5, "din_attention", (8, 4), "dice", 0.0, use_softmax)).eval()
    din = DINAttention(5, (8, 4), "dice", None, 0.0, use_softmax).eval()
    din.load_state_dict(att.unit.state_dict())
    h, t = torch.randn(3, 4, 5), torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    s = att(h, t, mask)
    assert torch.allclose(torch.bmm(s.unsqueeze(1), h).squeeze(1), din(t, h, mask), atol=1e-6)
