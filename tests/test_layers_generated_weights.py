"""APGLinear / APGMLP (instance-generated weights) against a per-sample loop that builds each sample's weight
matrix from the hypernetwork output and applies it as a plain matrix product."""

from __future__ import annotations

import pytest
import torch

from bars.models.layers import APGMLP, APGLinear


def per_sample(m: APGLinear, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    rows = []
    for b in range(x.shape[0]):
        s = m.hypernet(z[b : b + 1])[0]
        bias = m.bias[0] if m.bias is not None else None
        if m.generate_bias:
            bias, s = s[: m.output_dim], s[m.output_dim :]
        if m.rank_k is None:
            w = s.view(m.input_dim, m.output_dim)
        else:
            u = m.U if m.U is not None else m.U_l @ m.U_r
            v = m.V if m.V is not None else m.V_l @ m.V_r
            w = u @ s.view(m.rank_k, m.rank_k) @ v  # the sample's whole [in, out] weight
        y = x[b] @ w
        rows.append(y + bias if bias is not None else y)
    return torch.stack(rows)


@pytest.mark.parametrize("rank_k, overparam_p, generate_bias", [
    (None, None, True), (None, None, False), (3, None, True), (3, 8, True), (2, 2, False)])
def test_linear_against_per_sample_weights(rank_k, overparam_p, generate_bias):
    torch.manual_seed(0)
    m = APGLinear(5, 4, condition_dim=6, rank_k=rank_k, overparam_p=overparam_p, generate_bias=generate_bias,
                  hypernet_hidden_units=(7,)).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    x, z = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    torch.testing.assert_close(m(x, z), per_sample(m, x, z))
    generated = (rank_k * rank_k if rank_k else 5 * 4) + (4 if generate_bias else 0)
    assert m.hypernet.output_dim == generated
    assert (m.bias is None) == generate_bias
    assert (m.U_l is not None) == (overparam_p is not None)


def test_fuxictr_initialisation():
    torch.manual_seed(0)
    m = APGLinear(300, 200, 10, rank_k=50, overparam_p=100, generate_bias=False)
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(3.0)
    m.reset_parameters()
    assert torch.all(m.bias == 0)
    for p, fan in ((m.U_l, 300 + 100), (m.U_r, 100 + 50), (m.V_l, 50 + 100), (m.V_r, 100 + 200)):
        assert abs(p.std().item() - (2.0 / fan) ** 0.5) / (2.0 / fan) ** 0.5 < 0.1


def test_rank_checks():
    with pytest.raises(ValueError, match="rank_k=6 must be in 1..min"):
        APGLinear(5, 4, 3, rank_k=6)
    with pytest.raises(ValueError, match="overparam_p=2 must be >= rank_k=3"):
        APGLinear(5, 4, 3, rank_k=3, overparam_p=2)
    with pytest.raises(ValueError, match="overparam_p needs rank_k"):
        APGLinear(5, 4, 3, rank_k=None, overparam_p=8)


def test_mlp_self_wise_and_group_wise():
    torch.manual_seed(1)
    x, z = torch.randn(4, 6), torch.randn(4, 3)
    selfw = APGMLP(6, [5, 4], "relu", batch_norm=False, dropout=0.0, output_dim=1, rank_k=[None, 2],
                   overparam_p=[None, None])
    a, b = selfw.linears
    assert a.hypernet.net[0].in_features == 6 and b.hypernet.net[0].in_features == 5  # its own input
    h = torch.relu(a(x, x))
    torch.testing.assert_close(selfw(x), selfw.out_proj(torch.relu(b(h, h))))
    group = APGMLP(6, [5], "relu", batch_norm=True, dropout=0.0, condition_mode="group-wise", condition_dim=3,
                   rank_k=[3], overparam_p=[4]).train()
    assert group.linears[0].hypernet.net[0].in_features == 3 and group.out_proj is None
    post = group.post[0]
    torch.testing.assert_close(group(x, z), post(group.linears[0](x, z)))
    with pytest.raises(ValueError, match="one value per hidden layer"):
        APGMLP(6, [5, 4], rank_k=[2], overparam_p=[None, None])
    with pytest.raises(ValueError, match="needs condition_dim"):
        APGMLP(6, [5], condition_mode="group-wise", rank_k=[None], overparam_p=[None])
