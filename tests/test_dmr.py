"""DMR's specifics (bars.models.dmr): the auxiliary match loss and its negatives, the output tables, config errors
naming the key. Equality with FuxiCTR 2.3.10 is the reference suite's (tests/reference/fuxictr_zoo/dmr.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from test_models_sequence import batch_of, spec_of

from bars.models import ModelConfigError, build
from bars.models.layers import init_bars_, split_parameters
from bars.objective import data_loss, loss_function


def neg_spec(padding: str = "post"):
    s = spec_of(padding)
    neg = dataclasses.replace(s["item"], name="neg_item", share_embedding="item")
    return dataclasses.replace(s, features=s.features + (neg,))


def neg_batch(n: int = 6, seed: int = 0):
    b = batch_of("post", n, seed)
    g = torch.Generator().manual_seed(seed + 1)
    return {**b, "neg_item": torch.randint(2, 12, (n,), generator=g, dtype=torch.int32)}


AUX = {"aux_loss_beta": 0.5, "target_fields": [["item"]], "sequence_fields": [["item_hist"]],
       "neg_fields": [["neg_item"]]}


def make(spec=None, **params):
    torch.manual_seed(0)
    model = build("dmr", spec or neg_spec(), {"embedding_dim": 4, "dnn_hidden_units": [8], **params})
    return init_bars_(model, embedding_std=0.3)


def test_output_tables_are_fuxictrs_net_parameters():
    m = make()
    table = m.output_tables["item"].weight
    assert list(m.output_tables) == ["item", "cate"]
    assert torch.equal(table[0], torch.zeros(4)) and 0.5 < float(table[1:].detach().std()) < 1.5  # torch's N(0, 1)
    emb, net = split_parameters(m)
    assert any(p is table for p in net) and not any(p is table for p in emb)  # FuxiCTR: net regularizer
    # built without the User-to-Item network too (FuxiCTR), unless unused_output_tables is off
    assert list(make(enable_u2i_rel=False).output_tables) == ["item", "cate"]
    assert len(make(enable_u2i_rel=False, unused_output_tables=False).output_tables) == 0


def test_u2i_relevance_reads_the_target_output_row():
    b = neg_batch()
    m = make().eval()
    with torch.no_grad():
        y = m(b)
        m.output_tables["item"].weight[b["item"].long()[2]] += 1.0
        assert not torch.allclose(m(b)[2], y[2])
    off = make(enable_u2i_rel=False).eval()
    with torch.no_grad():
        y = off(b)
        off.output_tables["item"].weight.add_(1.0)
        assert torch.equal(off(b), y)


def test_mlp_input_width():
    d, spec = 4, neg_spec()
    flat = d * 6  # user, item, cate, price, tags, neg_item (not a negative here: an ordinary field)
    for params, extra in (({}, 2 * d + 1), ({"enable_i2i_rel": True}, 2 * d + 2),
                          ({"enable_u2i_rel": False, "enable_sum_pooling": True}, 3 * 2 * d)):
        assert make(spec, **params).mlp.net[0].in_features == flat + extra
    # the negative field is neither embedded nor in the MLP
    assert make(spec, **AUX).mlp.net[0].in_features == d * 6 + d + 1  # cate_hist mean-pooled
    assert "neg_item" not in make(spec, **AUX).embedding.field_names


def test_aux_loss_is_fuxictrs_match_loss():
    b = neg_batch()
    m = make(**AUX).train()
    torch.manual_seed(1)
    out = m(b)
    assert set(out) == {"logit", "aux_loss"}
    # by hand: u_{L-2} against the last behaviour's and the negative's output rows, rows with a full history only
    t, h = m.embedding.lookup("item", b["item"]), m.embedding.lookup("item_hist", b["item_hist"])
    mask = b["item_hist"] > 0
    u = m.u2i[0](h, mask, 2)[:, 0]
    o = m.output_tables["item"]
    pos = (u * o(b["item_hist"][:, -1].long())).sum(-1)
    neg = (u * o(b["neg_item"].long())).sum(-1)
    rows = -torch.log(torch.sigmoid(pos)) - torch.log(1 - torch.sigmoid(neg))
    full = mask[:, -1]
    assert int(full.sum()) == 1  # batch_of: one row of length 5 = max_len
    assert torch.allclose(out["aux_loss"], rows[full].mean(), atol=1e-6)
    y = torch.tensor([1.0, 0, 1, 0, 1, 0])
    loss = data_loss(m, out, y, loss_function("bce"))
    assert torch.allclose(loss, F.binary_cross_entropy(torch.sigmoid(out["logit"]), y) + 0.5 * out["aux_loss"])
    assert t.shape == (6, 4)
    # evaluation: the logit only, equal to the training logit (no dropout, BN aside: none in the attention)
    m.eval()
    assert isinstance(m(b), torch.Tensor)


def test_aux_loss_without_a_full_history_is_zero_not_nan():
    b = neg_batch()
    b["item_hist"][3] = torch.tensor([3, 4, 5, 6, 0], dtype=torch.int32)  # the only full row shortened
    out = make(**AUX).train()(b)
    assert float(out["aux_loss"].detach()) == 0.0


def test_aux_loss_trains_the_output_table_of_the_history():
    b = neg_batch()
    m = make(**AUX).train()
    m(b)["aux_loss"].backward()
    g = m.output_tables["item"].weight.grad
    assert g[b["neg_item"][3].long()].abs().sum() > 0 and g[b["item_hist"][3, -1].long()].abs().sum() > 0


@pytest.mark.parametrize(("params", "match"), [
    ({"aux_loss_beta": 0.5}, "needs one negative item per row.*neg_fields"),
    ({**AUX, "enable_u2i_rel": False}, "enable_u2i_rel=false turns off"),
    ({"neg_fields": [["neg_item"]]}, "neg_fields is read only by the auxiliary loss"),
    ({"aux_loss_beta": -1.0}, "aux_loss_beta must be >= 0"),
    ({**AUX, "neg_fields": [["nope"]]}, "neg_fields names 'nope', which is not a field"),
    ({**AUX, "neg_fields": [["tags"]]}, "neg_fields names 'tags', a sequence field"),
    ({**AUX, "neg_fields": [["neg_item", "user"]]}, "one field per target field"),
    ({**AUX, "neg_fields": [["neg_item"], ["neg_item"]]}, "one tuple per target/sequence pair"),
    ({"pos_emb_dim": 0}, "pos_emb_dim must be >= 1"),
    ({"attention_activation": "swish"}, "attention_activation 'swish'"),
])
def test_config_errors_name_the_key(params, match):
    with pytest.raises(ModelConfigError, match=match):
        build("dmr", neg_spec(), {"embedding_dim": 4, **params})


def test_negatives_must_index_the_target_table():
    s = neg_spec()
    big = dataclasses.replace(s, features=tuple(dataclasses.replace(f, vocab_size=40) if f.name == "neg_item" else f
                                                 for f in s.features))
    with pytest.raises(ModelConfigError, match="negative field 'neg_item' \\(vocab 40\\).*smaller"):
        build("dmr", big, {"embedding_dim": 4, **AUX})
    short = dataclasses.replace(s, features=tuple(dataclasses.replace(f, max_len=1) if f.name.endswith("_hist")
                                                   else f for f in s.features))
    with pytest.raises(ModelConfigError, match="reads position L-2.*max_len is 1"):
        build("dmr", short, {"embedding_dim": 4, **AUX})
