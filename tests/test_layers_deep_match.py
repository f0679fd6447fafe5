"""DMR's relevance networks (bars.models.layers.deep_match) against the model_zoo equations written out naively:
the concatenated attention input, FuxiCTR's full [L, L] causal mask with the diagonal, -1e9 fills."""

from __future__ import annotations

import torch

from bars.models.layers import MLP, ItemToItemRelevance, UserToItemRelevance, init_bars_, pairwise_scores

B, L, M = 5, 6, 4


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    history = torch.randn(B, L, M, generator=g, dtype=torch.float64)
    lengths = torch.tensor([0, 1, 3, 6, 4])
    mask = torch.arange(L).unsqueeze(0) < lengths.unsqueeze(1)  # post-padded
    history = history * mask.unsqueeze(-1)  # padding rows are zero, as a table's padding row
    target = torch.randn(B, M, generator=g, dtype=torch.float64)
    return target, history, mask


def _naive_scores(mlp: MLP, q: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    q = q.expand_as(h)
    return mlp(torch.cat([q, h, q - h, q * h], dim=-1).reshape(-1, 4 * M)).view(B, L)


def _randomise(module: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)


def test_pairwise_scores_is_the_mlp_on_the_concatenation():
    mlp = MLP(4 * M, (8, 3), "relu", output_dim=1).double()
    _, h, _ = _data()
    q = torch.randn(L, M, dtype=torch.float64)
    assert torch.allclose(pairwise_scores(mlp, q, h), _naive_scores(mlp, q, h), atol=1e-12)


def test_item_to_item_relevance_follows_the_equations():
    for use_pos in (True, False):
        net = ItemToItemRelevance(M, L, (8,), "relu", 0.0, use_pos, 3).double()
        _randomise(net)
        t, h, mask = _data()
        pooled, rel = net(t, h, mask)
        q_in = t.unsqueeze(1).expand(B, L, M)
        if use_pos:
            q_in = torch.cat([q_in, net.pos_emb.unsqueeze(0).expand(B, L, 3)], dim=-1)
        q = torch.relu(net.query(q_in))
        a = _naive_scores(net.mlp, q, h)
        w = a.masked_fill(~mask, -1e9).softmax(-1)
        assert torch.allclose(pooled, (w.unsqueeze(-1) * h).sum(1), atol=1e-12)
        assert torch.allclose(rel, (a * mask).sum(1, keepdim=True), atol=1e-12)
        assert torch.equal(pooled[0], torch.zeros(M, dtype=torch.float64))  # no behaviour: zero
        assert float(rel[0].detach()) == 0.0


def test_user_to_item_relevance_is_fuxictrs_full_causal_attention_at_the_last_rows():
    net = UserToItemRelevance(M, L, (8, 4), "relu", 0.0, 3).double()
    _randomise(net)
    _, h, mask = _data()
    q = torch.relu(net.query(net.pos_emb))
    a = _naive_scores(net.mlp, q, h)  # [B, L]
    allowed = (mask.unsqueeze(1) & torch.ones(L, L).tril().bool()) | torch.eye(L).bool()  # [B, L, L]
    w = a.unsqueeze(1).expand(B, L, L).masked_fill(~allowed, -1e9).softmax(-1)
    users = torch.relu(net.output(torch.bmm(w, h)))  # every position, as FuxiCTR
    assert torch.allclose(net(h, mask, 1), users[:, -1:], atol=1e-12)
    assert torch.allclose(net(h, mask, 2), users[:, -2:], atol=1e-12)
    # an empty history attends its own (zero) padding row only: u = ReLU(bias)
    assert torch.allclose(net(h, mask, 1)[0, 0], torch.relu(net.output.bias), atol=1e-12)


def test_position_embeddings_start_at_zero_and_train():
    net = init_bars_(torch.nn.Sequential(ItemToItemRelevance(M, L, (8,), "relu", 0.0, True, 3),
                                         UserToItemRelevance(M, L, (8,), "relu", 0.0, 3)))
    for m in net:
        assert m.pos_emb.requires_grad and torch.equal(m.pos_emb, torch.zeros(L, 3))
        assert m.query.weight.std() > 0
