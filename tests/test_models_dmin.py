"""DMIN specifics: the MLP input (interests, sum pooling, other fields; negative sequences left out), FuxiCTR's
``bn_only_once``, the auxiliary loss on negative sequences written out, and config errors naming the key."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bars.data.spec import Feature, FeatureSpec
from bars.models import ModelConfigError, build
from bars.models.layers import init_bars_, interest_masks
from bars.objective import data_loss, final_logits, loss_function


def spec_of() -> FeatureSpec:
    return FeatureSpec(dataset="seq", label="click", features=(
        Feature("user", "categorical", vocab_size=9),
        Feature("item", "categorical", vocab_size=12),
        Feature("cate", "categorical", vocab_size=6),
        Feature("item_hist", "sequence", vocab_size=12, max_len=5, share_embedding="item"),
        Feature("cate_hist", "sequence", vocab_size=6, max_len=5, share_embedding="cate"),
        Feature("neg_item_hist", "sequence", vocab_size=12, max_len=5, share_embedding="item"),
        Feature("neg_cate_hist", "sequence", vocab_size=6, max_len=5, share_embedding="cate"),
    ))


PAIR = {"target_fields": [["item", "cate"]], "sequence_fields": [["item_hist", "cate_hist"]]}
NEG = {**PAIR, "neg_sequence_fields": [["neg_item_hist", "neg_cate_hist"]]}


def batch_of(n: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {"user": torch.randint(1, 9, (n,), generator=g, dtype=torch.int32),
           "item": torch.randint(1, 12, (n,), generator=g, dtype=torch.int32),
           "cate": torch.randint(1, 6, (n,), generator=g, dtype=torch.int32)}
    lengths = torch.tensor([0, 1, 3, 5, 2, 4][:n])
    for name, vocab in (("item_hist", 12), ("cate_hist", 6), ("neg_item_hist", 12), ("neg_cate_hist", 6)):
        seq = torch.randint(1, vocab, (n, 5), generator=g, dtype=torch.int32)
        out[name] = seq * (torch.arange(5) < lengths.unsqueeze(1))
    return out


def make(**params) -> nn.Module:
    torch.manual_seed(0)
    model = build("dmin", spec_of(), {"embedding_dim": 4, "dnn_hidden_units": [8], **params})
    return init_bars_(model, embedding_std=0.3)


def test_negative_sequences_stay_out_of_the_mlp_and_eval_returns_logits():
    model = make(**NEG, aux_loss_lambda=0.5).eval()
    # interests: 4 heads x width 8; the other fields: user, item, cate
    assert model.dnn[0].net[0].in_features == 4 * 8 + 3 * 4
    b = batch_of()
    with torch.no_grad():
        y = model(b)
        assert isinstance(y, torch.Tensor) and y.shape == (6,)
        assert torch.equal(y, model(dict(b, neg_item_hist=b["neg_item_hist"].flip(0))))
    # without neg_sequence_fields the two negative columns are ordinary sequences (mean-pooled fields)
    summed = make(**PAIR, enable_sum_pooling=True)
    assert summed.dnn[0].net[0].in_features == (4 + 2) * 8 + 5 * 4
    assert not make(**PAIR).aux_nets  # aux_loss_lambda 0: no aux net, as FuxiCTR


def test_bn_only_once_is_one_batchnorm_on_the_mlp_input():
    once = make(**PAIR, batch_norm=True, bn_only_once=True, activation="relu")  # (Dice has its own BN)
    assert isinstance(once.dnn[0], nn.BatchNorm1d) and once.dnn[0].num_features == 4 * 8 + 5 * 4
    assert not any(isinstance(m, nn.BatchNorm1d) for m in once.dnn[1].modules())
    per_layer = make(**PAIR, batch_norm=True)
    assert len(per_layer.dnn) == 1 and isinstance(per_layer.dnn[0].net[1], nn.BatchNorm1d)
    none = make(**PAIR, batch_norm=False, bn_only_once=True, activation="relu")
    assert not any(isinstance(m, nn.BatchNorm1d) for m in none.dnn.modules())


def test_aux_loss_written_out():
    lam = 0.3
    model = make(**NEG, aux_loss_lambda=lam, batch_norm=False).train()
    b = batch_of()
    torch.manual_seed(1)
    out = model(b)
    assert set(out) == {"logit", "aux_loss"}
    with torch.no_grad():
        e = model.embedding
        h = torch.cat([e.lookup("item_hist", b["item_hist"]), e.lookup("cate_hist", b["cate_hist"])], dim=-1)
        neg = torch.cat([e.lookup("item_hist", b["neg_item_hist"]), e.lookup("cate_hist", b["neg_cate_hist"])], -1)
        keep, allowed = interest_masks(b["item_hist"])
        r = model.refiners[0](h, allowed)
        total, count = 0.0, 0
        for row in range(6):
            for j in range(4):  # the behaviour at j + 1 is predicted from the refined behaviour at j
                if not keep[row, j + 1]:
                    continue
                p_pos = torch.sigmoid(model.aux_nets[0](torch.cat([r[row, j], h[row, j + 1]]).unsqueeze(0)))
                p_neg = torch.sigmoid(model.aux_nets[0](torch.cat([r[row, j], neg[row, j + 1]]).unsqueeze(0)))
                total += float(-torch.log(p_pos) - torch.log(1 - p_neg))
                count += 2
        assert abs(float(out["aux_loss"]) - total / count) < 1e-5
        labels = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
        bce = loss_function("bce")
        want = bce(out["logit"], labels) + lam * out["aux_loss"]
        assert torch.allclose(data_loss(model, out, labels, bce), want)
        assert torch.equal(final_logits(out), out["logit"])
    # the aux loss trains the refiner and the embeddings through both the positives and the negatives
    model.zero_grad()
    out["aux_loss"].backward()
    assert model.aux_nets[0][0].net[0].weight.grad.abs().sum() > 0
    assert model.refiners[0].ffn[0].weight.grad.abs().sum() > 0
    assert model.embedding.weight.grad.abs().sum() > 0


def test_without_a_refiner_the_aux_loss_reads_the_raw_history():
    model = make(**NEG, aux_loss_lambda=1.0, use_behavior_refiner=False).train()
    assert model.refiners is None
    out = model(batch_of())
    assert torch.isfinite(out["aux_loss"]) and out["aux_loss"] > 0


def test_config_errors_name_the_key():
    with pytest.raises(ModelConfigError, match="aux_loss_lambda=0.5 needs negative behaviour sequences: set "
                                               "neg_sequence_fields"):
        make(**PAIR, aux_loss_lambda=0.5)
    with pytest.raises(ModelConfigError, match="neg_sequence_fields names 'user', which is not a sequence field"):
        make(**PAIR, neg_sequence_fields=[["user", "neg_cate_hist"]])
    with pytest.raises(ModelConfigError, match="must align with sequence fields"):
        make(**PAIR, neg_sequence_fields=[["neg_item_hist"]])
    with pytest.raises(ModelConfigError, match="one tuple per pair"):
        make(**PAIR, neg_sequence_fields=[["neg_item_hist", "neg_cate_hist"], ["neg_item_hist", "neg_cate_hist"]])
    with pytest.raises(ModelConfigError, match="named in both sequence_fields and neg_sequence_fields"):
        make(**PAIR, neg_sequence_fields=[["item_hist", "neg_cate_hist"]])
    with pytest.raises(ModelConfigError, match="not divisible by num_heads 3"):
        make(**PAIR, num_heads=3)
    with pytest.raises(ModelConfigError, match="param 'refiner_mask': 'causal' is not one of \\('soft', 'hard'\\)"):
        make(**PAIR, refiner_mask="causal")
    with pytest.raises(ModelConfigError, match="attention_activation 'swish' is not one of"):
        make(**PAIR, attention_activation="swish")
    with pytest.raises(ModelConfigError, match="aux_loss_lambda must be >= 0"):
        make(**NEG, aux_loss_lambda=-1.0)


def test_fuxictr_bce_matches_torch_on_the_aux_terms():
    """The aux terms are F.binary_cross_entropy on sigmoid outputs (FuxiCTR's aux net ends in a Sigmoid)."""
    p = torch.tensor([0.2, 0.9])
    assert torch.allclose(F.binary_cross_entropy(p, torch.ones(2), reduction="none"), -torch.log(p))
