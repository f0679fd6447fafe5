"""QNN-alpha: its self-ensemble loss written out as FuxiCTR computes it (sigmoid
probabilities, BCE against the labels and against the detached ensemble probability), named outputs in training and
one logit in evaluation, the config errors, and a short fit through the trainer (validation on the final logit)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _tiny_ctr import SPEC
from _tiny_ctr import tiny_batch as _batch
from _tiny_ctr import tiny_data as _data

from bars.models import ModelConfigError, build, make_config
from bars.models.layers import init_bars_
from bars.models.qnn import mean_probability_logit
from bars.train import TrainConfig, fit, loss_function, predict


# ------------------------------------------------------------------------------------------------ QNN-alpha
def test_mean_probability_logit_is_stable_and_exact():
    l1 = torch.tensor([-50.0, -3.0, 0.0, 2.0, 40.0, 30.0], dtype=torch.float64)
    l2 = torch.tensor([-60.0, 1.0, 0.0, 2.0, 45.0, -30.0], dtype=torch.float64)
    z = mean_probability_logit(l1, l2)
    assert torch.isfinite(z).all()
    m = (torch.sigmoid(l1) + torch.sigmoid(l2)) / 2
    torch.testing.assert_close(torch.sigmoid(z), m, rtol=1e-12, atol=0)
    torch.testing.assert_close(mean_probability_logit(l1, l1), l1)


def test_qnn_self_ensemble_two_passes_in_training_one_in_eval():
    torch.manual_seed(0)
    model = init_bars_(build("qnn", SPEC, {"embedding_dim": 4, "dropout": 0.3, "num_heads": 2}))
    xb, yb = _batch()
    model.train()
    out = model(xb)
    assert set(out) == {"logit", "logit1", "logit2"}
    assert not torch.equal(out["logit1"], out["logit2"])  # two dropout draws
    p1, p2 = torch.sigmoid(out["logit1"]), torch.sigmoid(out["logit2"])
    p = (p1 + p2) * 0.5  # QNN_alpha.add_loss, on probabilities
    want = (F.binary_cross_entropy(p, yb) + F.binary_cross_entropy(p1, p.detach())
            + F.binary_cross_entropy(p2, p.detach()))
    torch.testing.assert_close(model.training_loss(out, yb, loss_function("bce")), want)
    model.eval()
    with torch.no_grad():
        a, b = model(xb), model(xb)
    assert isinstance(a, torch.Tensor) and torch.equal(a, b)


def test_qnn_config_errors_name_the_key():
    with pytest.raises(ModelConfigError, match="num_heads 3 must divide embedding_dim 4"):
        make_config("qnn", {"embedding_dim": 4, "num_heads": 3})
    with pytest.raises(ModelConfigError, match="num_row must be >= 1"):
        make_config("qnn", {"embedding_dim": 4, "num_row": 0})


# ------------------------------------------------------------------------------------------------ trainer
def test_fit_trains_and_evaluates_the_final_logit():
    name, params = "qnn", {"embedding_dim": 4, "num_layers": 2, "dropout": 0.1}
    torch.manual_seed(0)
    model = build(name, SPEC, params)
    train, valid = _data(), _data(seed=1)
    cfg = TrainConfig(learning_rate=0.01, batch_size=256, max_epochs=4, embedding_init_std=0.1, device="cpu")
    res = fit(model, train, valid, cfg, seed=3)
    assert res.best_val["auc"] > 0.7, res.best_val
    probs = predict(model, valid)
    assert probs.shape == (len(valid),) and torch.isfinite(probs).all()
