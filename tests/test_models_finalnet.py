"""FinalNet (1B / 2B): its training loss written out as FuxiCTR computes it (sigmoid
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
from bars.train import TrainConfig, TrainStep, fit, loss_function, predict

TWO_B = {"embedding_dim": 4, "block1_hidden_units": (8, 6), "block1_activation": "relu", "block1_dropout": 0.0,
         "block2_hidden_units": (6,), "block2_activation": None, "block2_dropout": 0.0}
ONE_B = {"embedding_dim": 4, "block_type": "1B", "block2_hidden_units": None, "block2_activation": None,
         "block2_dropout": None}




# ------------------------------------------------------------------------------------------------ FinalNet
def test_finalnet_2b_outputs_and_loss_as_fuxictr():
    torch.manual_seed(0)
    model = init_bars_(build("finalnet", SPEC, TWO_B))
    xb, yb = _batch()
    model.train()
    out = model(xb)
    assert set(out) == {"logit", "logit1", "logit2"}
    torch.testing.assert_close(out["logit"], 0.5 * (out["logit1"] + out["logit2"]))
    # FuxiCTR FinalNet.add_loss: BCE(y_pred, y) + BCE(sigmoid(y1), y_pred.detach()) + BCE(sigmoid(y2), ...)
    p = torch.sigmoid(out["logit"])
    want = (F.binary_cross_entropy(p, yb) + F.binary_cross_entropy(torch.sigmoid(out["logit1"]), p.detach())
            + F.binary_cross_entropy(torch.sigmoid(out["logit2"]), p.detach()))
    got = model.training_loss(out, yb, loss_function("bce"))
    torch.testing.assert_close(got, want)
    assert float(got.detach()) > float(F.binary_cross_entropy(p, yb).detach())  # the auxiliary terms are really there
    # the targets are detached: the gradient of the auxiliary terms w.r.t. the logit is only through logit1/2
    step = TrainStep(model, TrainConfig(device="cpu"))
    torch.testing.assert_close(step.objective(out, yb), want + step.regularization())
    model.eval()
    with torch.no_grad():
        ev = model(xb)
    assert isinstance(ev, torch.Tensor) and ev.shape == (64,)


def test_finalnet_1b_is_one_block_with_the_plain_loss():
    torch.manual_seed(0)
    model = init_bars_(build("finalnet", SPEC, ONE_B))
    assert model.block2 is None and model.fc2 is None and model.gating is not None
    xb, yb = _batch()
    model.train()
    out = model(xb)
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(model.training_loss(out, yb, loss_function("bce")),
                               F.binary_cross_entropy(torch.sigmoid(out), yb))


def test_finalnet_gating_widens_block1_input():
    on = build("finalnet", SPEC, {**ONE_B, "use_feature_gating": True})
    off = build("finalnet", SPEC, {**ONE_B, "use_feature_gating": False})
    assert on.block1.net[0].linear.in_features == 2 * 3 * 4 and off.block1.net[0].linear.in_features == 3 * 4
    assert off.gating is None


@pytest.mark.parametrize(("params", "msg"), [
    ({**ONE_B, "block2_hidden_units": (4,)},
     r"block_type is '1B'.*\['block2_hidden_units'\].*model.params.block2_hidden_units=null"),
    ({**ONE_B, "block2_dropout": 0.1}, r"\['block2_dropout'\] would be ignored"),
    ({**TWO_B, "block2_hidden_units": None}, "block2_hidden_units must not be empty"),
    ({**TWO_B, "block1_hidden_units": (8, 5)}, r"block1_hidden_units \(8, 5\): with residual_type 'concat'"),
    ({**TWO_B, "block1_activation": "swish"}, "block1_activation 'swish' is not one of"),
    ({**TWO_B, "block2_dropout": 1.0}, r"block2_dropout must be in \[0, 1\)"),
])
def test_finalnet_config_errors_name_the_key(params, msg):
    with pytest.raises(ModelConfigError, match=msg):
        make_config("finalnet", params)


def test_finalnet_sum_residual_allows_odd_widths_and_doubles_the_linear():
    m = build("finalnet", SPEC, {**TWO_B, "residual_type": "sum", "block1_hidden_units": (5,)})
    assert m.block1.net[0].linear.out_features == 10 and m.fc1.in_features == 5


# ------------------------------------------------------------------------------------------------ trainer
@pytest.mark.parametrize(("name", "params"), [("finalnet", TWO_B), ("finalnet", ONE_B)])
def test_fit_trains_and_evaluates_the_final_logit(name, params):
    torch.manual_seed(0)
    model = build(name, SPEC, params)
    train, valid = _data(), _data(seed=1)
    cfg = TrainConfig(learning_rate=0.01, batch_size=256, max_epochs=4, embedding_init_std=0.1, device="cpu")
    res = fit(model, train, valid, cfg, seed=3)
    assert res.best_val["auc"] > 0.7, res.best_val
    probs = predict(model, valid)
    assert probs.shape == (len(valid),) and torch.isfinite(probs).all()
