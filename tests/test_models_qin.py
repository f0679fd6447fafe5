"""QIN (bars.models.qin) against the authors' layout: the quadratic network reads [other fields, target, pooled]
(a target field once, the attended history only through the attention), an empty history pools to the target,
widths and bad configs name their keys, and the model trains on a tiny problem."""

from __future__ import annotations

import pytest
import torch

from bars.models import ModelConfigError, build
from bars.models.layers import init_bars_
from tests.test_models_sequence import batch_of, make, spec_of


def test_input_is_other_fields_then_target_then_pooled():
    model = make("qin")  # embedding 4; pair (item, cate) over (item_hist, cate_hist)
    b = batch_of()
    others = ("user", "price", "tags")
    with torch.no_grad():
        x = model.features(b)
        e = model.embedding(b)
        names = model.embedding.field_names
        want_others = torch.cat([e[:, names.index(n)] for n in others], dim=1)
        t = torch.cat([model.embedding.lookup(n, b[n]) for n in ("item", "cate")], dim=1)
    assert model.qnn.layers[0].input_dim == x.shape[1] == 3 * 4 + 2 * 8
    assert torch.equal(x[:, :12], want_others)
    assert torch.equal(x[:, 12:20], t)
    assert torch.equal(x[0, 20:], t[0])  # row 0 has no behaviour: ASTA gives the target itself
    assert not torch.allclose(x[1:, 20:], t[1:])
    assert model.attention[0].attention_dim == 16  # 2 x the target width (the authors')


def test_logit_is_the_quadratic_network_of_the_features():
    model = make("qin", dropout=0.0)
    b = batch_of()
    with torch.no_grad():
        assert torch.equal(model(b), model.qnn(model.features(b)).squeeze(-1))


def test_widths_and_heads_name_their_keys():
    with pytest.raises(ModelConfigError, match="attention_dim 10 is not divisible by num_heads 4"):
        build("qin", spec_of(), {"embedding_dim": 4, "attention_dim": 10, "num_heads": 4})
    with pytest.raises(ModelConfigError, match="attention width of \\['item', 'cate'\\] is 16.*num_heads 3"):
        build("qin", spec_of(), {"embedding_dim": 4, "num_heads": 3})
    with pytest.raises(ModelConfigError, match="num_row must be >= 1"):
        build("qin", spec_of(), {"embedding_dim": 4, "num_row": 0})
    m = build("qin", spec_of(), {"embedding_dim": 4, "attention_dim": 6, "num_heads": 3})
    assert m.attention[0].head_dim == 2


def test_two_pairs_each_attend_and_enter_in_order():
    model = make("qin", target_fields=[["item"], ["cate"]], sequence_fields=[["item_hist"], ["cate_hist"]])
    b = batch_of()
    with torch.no_grad():
        x = model.features(b)
    assert len(model.attention) == 2 and x.shape[1] == 3 * 4 + 2 * (4 + 4)
    assert torch.equal(x[:, 12:16], model.embedding.lookup("item", b["item"]))
    assert torch.equal(x[:, 20:24], model.embedding.lookup("cate", b["cate"]))


def test_trains_on_a_tiny_problem():
    """Labels that depend on whether the target item is in the history: the attention must carry it."""
    torch.manual_seed(0)
    spec = spec_of()
    model = init_bars_(build("qin", spec, {"embedding_dim": 8, "num_layers": 2, "dropout": 0.0}), embedding_std=0.1)
    b = batch_of(n=6)
    n = 256
    g = torch.Generator().manual_seed(1)
    items = torch.randint(2, 12, (n, 5), generator=g, dtype=torch.int32)
    items[torch.rand(n, 5, generator=g) < 0.4] = 0
    target = torch.randint(2, 12, (n,), generator=g, dtype=torch.int32)
    batch = {k: v[torch.arange(n) % 6] for k, v in b.items()}
    batch.update(item=target, item_hist=items, cate_hist=torch.where(items > 0, 2, 0).int())
    y = (items == target.unsqueeze(1)).any(dim=1).float()
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    model.train()
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread only waits (measured 8x slower on a loaded 2-core box)
    try:
        for _ in range(60):
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
