"""GeneralizedInteraction (AOANet) against explicit D x D outer products summed over (subspace, field) pairs, and
against FuxiCTR's repeat/einsum formulation written out."""

from __future__ import annotations

import torch

from bars.models.layers import GeneralizedInteraction, GeneralizedInteractionNet


def randomise(m: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))


def loop_reference(gi: GeneralizedInteraction, b0: torch.Tensor, bi: torch.Tensor) -> torch.Tensor:
    """B_{i+1}[o] = (W_o ⊙ sum_{s,f} alpha[s*F + f, o] B_0[f] B_i[s]^T) h_o, sample by sample."""
    batch, f, d = b0.shape
    s_in, s_out = bi.shape[1], gi.W.shape[0]
    out = torch.zeros(batch, s_out, d, dtype=b0.dtype)
    for b in range(batch):
        for o in range(s_out):
            fusion = torch.zeros(d, d, dtype=b0.dtype)
            for s in range(s_in):
                for fi in range(f):
                    fusion += gi.alpha[s * f + fi, o] * torch.outer(b0[b, fi], bi[b, s])
            out[b, o] = (gi.W[o] * fusion) @ gi.h[o, :, 0]
    return out


def fuxictr_form(gi: GeneralizedInteraction, b0: torch.Tensor, bi: torch.Tensor) -> torch.Tensor:
    d = b0.shape[2]
    outer = torch.einsum("bnh,bnd->bnhd", b0.repeat(1, gi.input_subspaces, 1),
                         bi.repeat(1, 1, gi.num_fields).view(bi.size(0), -1, d))
    fusion = torch.matmul(outer.permute(0, 2, 3, 1), gi.alpha)
    fusion = gi.W * fusion.permute(0, 3, 1, 2)
    return torch.matmul(fusion, gi.h).squeeze(-1)


def test_layer_against_loops_and_fuxictr_form():
    torch.manual_seed(0)
    gi = GeneralizedInteraction(input_subspaces=3, output_subspaces=2, num_fields=4, embedding_dim=5).double()
    randomise(gi)
    b0 = torch.randn(2, 4, 5, dtype=torch.float64)
    bi = torch.randn(2, 3, 5, dtype=torch.float64)
    got = gi(b0, bi)
    assert got.shape == (2, 2, 5)
    torch.testing.assert_close(got, loop_reference(gi, b0, bi))
    torch.testing.assert_close(got, fuxictr_form(gi, b0, bi))


def test_fuxictr_initialisation_and_shapes():
    gi = GeneralizedInteraction(4, 3, 4, 6)
    assert gi.W.shape == (3, 6, 6) and gi.alpha.shape == (16, 3) and gi.h.shape == (3, 6, 1)
    with torch.no_grad():
        for p in gi.parameters():
            p.zero_()
    gi.reset_parameters()
    assert torch.equal(gi.W, torch.eye(6).expand(3, 6, 6)) and torch.all(gi.alpha == 1) and torch.all(gi.h == 1)
    # identity W and h = 1: out[o] = sum_{s,f} alpha * B_0[f] * (sum_j B_i[s][j]) ... checked against the loops
    b0, bi = torch.randn(2, 4, 6, dtype=torch.float64), torch.randn(2, 4, 6, dtype=torch.float64)
    torch.testing.assert_close(gi.double()(b0, bi), loop_reference(gi, b0, bi))


def test_net_feeds_each_layer_b0_and_the_previous_output():
    torch.manual_seed(1)
    net = GeneralizedInteractionNet(num_layers=3, num_subspaces=2, num_fields=4, embedding_dim=3).double()
    randomise(net)
    b0 = torch.randn(5, 4, 3, dtype=torch.float64)
    first, second, third = net.layers
    assert first.input_subspaces == 4 and second.input_subspaces == 2
    want = third(b0, second(b0, first(b0, b0)))
    torch.testing.assert_close(net(b0), want)
    assert net(b0).shape == (5, 2, 3)
