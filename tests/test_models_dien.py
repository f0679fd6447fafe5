"""DIEN (bars.models.dien): every evolution (GRU, AIGRU, AGRU, AUGRU) x attention (bilinear, dot, DIN's unit)
trains; the structure is FuxiCTR's (what each gru_type builds, the DNN's width); the auxiliary loss against its
definition written out (in-batch negatives, masked BCE mean) and only in training; the training-mode attention
sees only rows with a behaviour (Dice's statistics, as FuxiCTR); config errors name the key."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from bars.models import ModelConfigError, build
from bars.models.layers import AttentionalGRU, init_bars_
from bars.objective import data_loss, final_logits
from tests.test_models_sequence import batch_of, spec_of

GRUS = ["GRU", "AIGRU", "AGRU", "AUGRU"]
ATTENTIONS = ["bilinear_attention", "dot_attention", "din_attention"]


def make(**params) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build("dien", spec_of(), {"embedding_dim": 4, "dnn_hidden_units": [8], **params})
    return init_bars_(model, embedding_std=0.3)


@pytest.mark.parametrize("gru_type", GRUS)
@pytest.mark.parametrize("attention_type", ATTENTIONS)
def test_every_evolution_and_attention_trains(gru_type, attention_type):
    model = make(gru_type=gru_type, attention_type=attention_type, attention_activation="dice",
                 enable_sum_pooling=True, aux_loss_alpha=0.3).train()
    out = model(batch_of())
    assert set(out) == {"logit", "aux_loss"} and out["logit"].shape == (6,) and out["aux_loss"].dim() == 0
    loss = data_loss(model, out, torch.ones(6), F.binary_cross_entropy_with_logits)
    assert torch.allclose(loss, F.binary_cross_entropy_with_logits(out["logit"], torch.ones(6)) + 0.3 * out["aux_loss"])
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    # DIN's attention unit: the score MLP's output bias adds one constant to every behaviour's score, which the
    # softmax over behaviours cancels: its true gradient is 0 and the computed one rounding noise, exactly 0 or
    # not depending on the order of float sums (0 with AIGRU/AUGRU on an AMD EPYC host, tiny on Intel)
    if attention_type == "din_attention":
        dead = [n for n in dead if n != "attention.0.unit.mlp.net.4.bias"]
    assert dead == []
    model.eval()
    with torch.no_grad():
        y = model(batch_of())
    assert isinstance(y, torch.Tensor) and y.shape == (6,) and torch.isfinite(y).all()


def test_structure_by_gru_type():
    gru = make(gru_type="GRU")
    assert len(gru.attention) == 0 and isinstance(gru.evolution[0], torch.nn.GRU)
    aigru = make(gru_type="AIGRU")
    assert len(aigru.attention) == 1 and isinstance(aigru.evolution[0], torch.nn.GRU)
    for kind in ("AGRU", "AUGRU"):
        m = make(gru_type=kind)
        assert isinstance(m.evolution[0], AttentionalGRU) and m.evolution[0].cell.gru_type == kind
    # the DNN reads [final state (2 fields x 4), user, item, cate, price, tags]; sum pooling adds s and t * s
    assert gru.mlp.net[0].in_features == 8 + 5 * 4
    assert make(enable_sum_pooling=True).mlp.net[0].in_features == 3 * 8 + 5 * 4
    assert make().aux is None and make(aux_loss_alpha=0.1).aux.net[0].in_features == 16
    # two pairs: one extraction / evolution / attention each
    two = make(target_fields=[["item"], ["cate"]], sequence_fields=[["item_hist"], ["cate_hist"]])
    assert len(two.extraction) == len(two.evolution) == len(two.attention) == 2
    assert two.mlp.net[0].in_features == 4 + 4 + 5 * 4


def test_auxiliary_loss_from_its_definition():
    model = make(aux_loss_alpha=1.0, aux_hidden_units=[5]).train()
    b = batch_of()  # post-padded, lengths [0, 1, 3, 5, 2, 4]
    out = model(b)
    # recompute: the interests of the last (only) pair, the behaviours, in-batch negatives from row b + 1
    emb = model.embedding
    h = torch.cat([emb.lookup("item_hist", b["item_hist"]), emb.lookup("cate_hist", b["cate_hist"])], dim=-1)
    lengths = (b["item_hist"] > 0).sum(1).tolist()
    interest, _ = model.extraction[0](h)
    terms = []
    for r in range(6):
        nxt = (r + 1) % 6
        if lengths[nxt] == 0:
            continue
        for t in range(lengths[r] - 1):  # steps t whose next position t + 1 is a behaviour
            pos = torch.sigmoid(model.aux(torch.cat([interest[r, t], h[r, t + 1]])))
            neg = torch.sigmoid(model.aux(torch.cat([interest[r, t], h[nxt, (t + 1) % lengths[nxt]]])))
            terms += [-torch.log(pos), -torch.log(1 - neg)]
    want = torch.stack(terms).mean()
    assert torch.allclose(out["aux_loss"], want, atol=1e-6)


def test_auxiliary_loss_padding_side_and_eval():
    from tests.test_models_sequence import to_pre

    post = make(aux_loss_alpha=1.0).train()
    torch.manual_seed(0)
    pre = init_bars_(build("dien", spec_of("pre"), {"embedding_dim": 4, "dnn_hidden_units": [8],
                                                     "aux_loss_alpha": 1.0}))
    pre.load_state_dict(post.state_dict())
    pre.train()
    b = batch_of()
    a, c = post(b), pre(to_pre(b))
    assert torch.allclose(a["aux_loss"], c["aux_loss"], atol=1e-6) and torch.allclose(a["logit"], c["logit"], atol=1e-5)
    post.eval()
    assert isinstance(post(b), torch.Tensor)  # validation and test: the logit only


def test_training_attention_sees_only_rows_with_behaviours():
    """With DIN's unit (Dice: batch statistics) FuxiCTR scores only the rows that have a behaviour: adding empty
    rows to a batch must not move the other rows' training-mode logits (no batch norm in the DNN)."""
    model = make(attention_type="din_attention", attention_activation="dice", activation="relu",
                 batch_norm=False).train()
    b = batch_of()
    y = final_logits(model(b))
    empty = {k: torch.cat([v, torch.zeros_like(v[:3])]) if k in ("item_hist", "cate_hist") else
             torch.cat([v, v[:3]]) for k, v in b.items()}
    y2 = final_logits(model(empty))
    assert torch.allclose(y[1:], y2[1:6], atol=1e-6)


@pytest.mark.parametrize(("params", "match"), [
    ({"gru_type": "LSTM"}, "gru_type 'LSTM' is not one of"),
    ({"attention_type": "cosine"}, "attention_type 'cosine' is not one of"),
    ({"aux_loss_alpha": -0.1}, "aux_loss_alpha must be >= 0"),
    ({"aux_activation": "swishy"}, "aux_activation 'swishy'"),
    ({"aux_hidden_units": [0]}, "aux_hidden_units must be positive"),
])
def test_config_errors_name_the_key(params, match):
    with pytest.raises(ModelConfigError, match=match):
        build("dien", spec_of(), {"embedding_dim": 4, **params})


def test_mixed_padding_sides_in_a_pair_are_an_error():
    s = spec_of()
    feats = tuple(dataclasses.replace(f, padding="pre") if f.name == "cate_hist" else f for f in s.features)
    with pytest.raises(ModelConfigError, match="padded on different sides"):
        build("dien", dataclasses.replace(s, features=feats), {"embedding_dim": 4})
