"""FCN (DCNv3) and ECN: Tri-BCE written out as the authors compute it, named outputs in training and one logit in
evaluation, the multi-head embedding width, the config errors, and a short fit through the trainer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _tiny_ctr import SPEC
from _tiny_ctr import tiny_batch as _batch
from _tiny_ctr import tiny_data as _data

from bars.models import ModelConfigError, build, make_config
from bars.models.layers import init_bars_
from bars.train import TrainConfig, fit, loss_function, predict


def test_fcn_tri_bce_is_the_authors_add_loss():
    torch.manual_seed(0)
    model = init_bars_(build("fcn", SPEC, {"embedding_dim": 4, "num_heads": 2, "deep_dropout": 0.0,
                                           "shallow_dropout": 0.0}))
    xb, yb = _batch()
    model.train()
    out = model(xb)
    assert set(out) == {"logit", "logit_d", "logit_s"}
    torch.testing.assert_close(out["logit"], (out["logit_d"] + out["logit_s"]) * 0.5)
    y_pred, y_d, y_s = (torch.sigmoid(out[k]) for k in ("logit", "logit_d", "logit_s"))
    loss = F.binary_cross_entropy(y_pred, yb)
    loss_d, loss_s = F.binary_cross_entropy(y_d, yb), F.binary_cross_entropy(y_s, yb)
    w_d = torch.where(loss_d - loss > 0, loss_d - loss, torch.zeros(1))
    w_s = torch.where(loss_s - loss > 0, loss_s - loss, torch.zeros(1))
    want = (loss + loss_d * w_d + loss_s * w_s).reshape(())  # the authors get shape [1] from torch.zeros(1)
    got = model.training_loss(out, yb, loss_function("bce"))
    torch.testing.assert_close(got, want)
    # the weights are not detached: the gradient flows through them as in the authors' code
    g_got = torch.autograd.grad(got, model.embedding.weight, retain_graph=True)[0]
    g_want = torch.autograd.grad(want, model.embedding.weight)[0]
    torch.testing.assert_close(g_got, g_want)
    model.eval()
    with torch.no_grad():
        a, b = model(xb), model(xb)
    assert isinstance(a, torch.Tensor) and a.shape == (64,) and torch.equal(a, b)
    assert model.training_loss(a, yb, loss_function("bce")).dim() == 0


def test_tri_bce_weight_is_zero_when_a_subnetwork_beats_the_ensemble():
    model = build("fcn", SPEC, {"embedding_dim": 4})
    y = torch.tensor([1.0, 0.0, 1.0, 0.0])
    out = {"logit": torch.tensor([1.0, -1.0, 1.0, -1.0]), "logit_d": torch.tensor([3.0, -3.0, 3.0, -3.0]),
           "logit_s": torch.tensor([-1.0, 1.0, -1.0, 1.0])}
    bce = loss_function("bce")
    loss, loss_s = bce(out["logit"], y), bce(out["logit_s"], y)
    torch.testing.assert_close(model.training_loss(out, y, bce), loss + loss_s * (loss_s - loss))


def test_multihead_embedding_is_heads_times_embedding_dim_wide():
    model = build("fcn", SPEC, {"embedding_dim": 4, "num_heads": 3})
    assert model.embedding.weight.shape[1] == 12
    assert model.ecn.input_dim == model.lcn.input_dim == 3 * 4  # 3 fields x 4 per head
    ecn = build("ecn", SPEC, {"embedding_dim": 4, "num_heads": 2, "num_cross_layers": 5})
    assert ecn.embedding.weight.shape[1] == 8 and ecn.ecn.num_layers == 5
    ecn.eval()
    assert ecn(_batch()[0]).shape == (64,)


def test_config_errors_name_the_key():
    with pytest.raises(ModelConfigError, match="num_deep_cross_layers must be >= 1"):
        make_config("fcn", {"embedding_dim": 4, "num_deep_cross_layers": 0})
    with pytest.raises(ModelConfigError, match="shallow_dropout must be in"):
        make_config("fcn", {"embedding_dim": 4, "shallow_dropout": 1.0})
    with pytest.raises(ModelConfigError, match="num_heads must be >= 1"):
        make_config("ecn", {"embedding_dim": 4, "num_heads": 0})
    with pytest.raises(ValueError, match="embedding_dim 3 x 3 fields = 9 is odd"):
        build("ecn", SPEC, {"embedding_dim": 3})


@pytest.mark.parametrize("name", ["fcn", "ecn"])
def test_fit_trains_and_evaluates_the_final_logit(name):
    torch.manual_seed(0)
    model = build(name, SPEC, {"embedding_dim": 4, "num_heads": 2})
    train, valid = _data(), _data(seed=1)
    cfg = TrainConfig(learning_rate=0.01, batch_size=256, max_epochs=4, embedding_init_std=0.1, device="cpu")
    res = fit(model, train, valid, cfg, seed=3)
    assert res.best_val["auc"] > 0.7, res.best_val
    probs = predict(model, valid)
    assert probs.shape == (len(valid),) and torch.isfinite(probs).all()
