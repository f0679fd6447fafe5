"""bars.train: model-supplied training losses (named outputs + ``training_loss``) and multi-task models
(``tasks``, logits [B, T], per-task metrics), on real SplitTensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from bars import train as T
from bars.data.loader import SplitTensors
from bars.train import TrainConfig, TrainStep, fit


def _data(n: int = 3000, seed: int = 0) -> SplitTensors:
    """Two categorical fields; click depends on field a, conversion (a sub-event of click) on field b."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(1, 20, (n,), generator=g)
    b = torch.randint(1, 20, (n,), generator=g)
    click = (torch.rand(n, generator=g) < torch.where(a < 10, 0.8, 0.1)).float()
    conv = click * (torch.rand(n, generator=g) < torch.where(b < 10, 0.9, 0.05)).float()
    labels = torch.stack([click, conv], 1)
    return SplitTensors({"a": a, "b": b}, click, labels, ("click", "conversion"))


class Towers(nn.Module):
    """One embedding table, one linear tower per output column."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 4, padding_idx=0)
        self.towers = nn.ModuleList(nn.Linear(8, 1) for _ in range(outputs))

    def logits(self, batch) -> torch.Tensor:
        e = self.emb(torch.stack([batch["a"], batch["b"]], 1)).flatten(1)
        return torch.cat([t(e) for t in self.towers], 1)

    def split_parameters(self):
        return [self.emb.weight], [p for t in self.towers for p in t.parameters()]


class AuxModel(Towers):
    """Returns ``{"logit", "aux"}`` in training and defines its own loss: BCE of the final logit + 0.5 * BCE of an
    auxiliary head (DIEN-style); evaluation must use the final logit only."""

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, batch):
        z = self.logits(batch)
        return {"logit": z[:, 0], "aux": z[:, 1]} if self.training else z[:, 0]

    def training_loss(self, outputs, labels, loss_fn):
        return loss_fn(outputs["logit"], labels) + 0.5 * loss_fn(outputs["aux"], labels)


class TwoTask(Towers):
    tasks = ("click", "conversion")

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, batch):
        return self.logits(batch)


CFG = TrainConfig(learning_rate=0.05, batch_size=256, max_epochs=3, embedding_regularizer=0.01,
                  net_regularizer=0.001, embedding_init_std=0.1)


def test_model_supplied_loss_is_the_data_term_and_the_trainer_adds_regularizers():
    torch.manual_seed(0)
    model = AuxModel()
    split = _data()
    xb, yb = next(split.batches(256, shuffle=False))
    step = TrainStep(model, CFG)
    out = model(xb)
    bce = T.loss_function("bce")
    want = bce(out["logit"], yb) + 0.5 * bce(out["aux"], yb) + step.regularization()
    assert torch.allclose(step.objective(out, yb), want)
    # the trainer's own loss would differ: the model's loss really is the one used
    assert not torch.allclose(bce(out["logit"], yb) + step.regularization(), want)
    w_before = model.towers[1].weight.detach().clone()
    step(xb, yb)
    assert not torch.equal(model.towers[1].weight, w_before)  # the auxiliary head is trained through its loss


def test_named_outputs_fit_and_evaluate_on_the_final_logit():
    model = AuxModel()
    split = _data()
    res = fit(model, split, _data(seed=1), CFG, seed=3)
    assert res.best_val["auc"] > 0.75
    probs = T.predict(model, split)
    with torch.no_grad():
        model.eval()
        want = torch.sigmoid(model.logits(split.features)[:, 0])
    assert torch.allclose(probs, want, atol=1e-6)


def test_training_loss_must_be_a_scalar():
    class Bad(AuxModel):
        def training_loss(self, outputs, labels, loss_fn):
            return outputs["logit"]

    step = TrainStep(Bad(), CFG)
    xb, yb = next(_data().batches(64, shuffle=False))
    with pytest.raises(TypeError, match="Bad.training_loss must return a scalar Tensor, got Tensor\\(64,\\)"):
        step(xb, yb)


def test_a_mapping_without_logit_is_a_clear_error():
    with pytest.raises(TypeError, match="under 'logit'; got keys \\['aux', 'y'\\]"):
        T.final_logits({"y": torch.zeros(2), "aux": torch.zeros(2)})
    with pytest.raises(TypeError, match="got list"):
        T.final_logits([torch.zeros(2)])


def test_multi_task_loss_is_the_sum_over_tasks():
    torch.manual_seed(0)
    model = TwoTask()
    xb, yb = next(_data().batches(256, shuffle=False, all_labels=True))
    assert yb.shape == (256, 2)
    step = TrainStep(model, CFG)
    z = model(xb)
    bce = T.loss_function("bce")
    want = bce(z[:, 0], yb[:, 0]) + bce(z[:, 1], yb[:, 1]) + step.regularization()
    assert torch.allclose(step.objective(z, yb), want)


def test_multi_task_fit_trains_every_task_and_evaluates_per_task():
    model = TwoTask()
    train, valid = _data(), _data(seed=1)
    cfg = TrainConfig(**{**CFG.__dict__, "monitor": "val_auc_conversion"})
    res = fit(model, train, valid, cfg, seed=5)
    assert set(res.best_val) >= {"auc_click", "logloss_click", "auc_conversion", "logloss_conversion"}
    assert "auc" not in res.best_val
    assert res.history[res.best_epoch - 1].monitor == res.best_val["auc_conversion"]
    probs = T.predict(model, valid)
    assert probs.shape == (len(valid), 2)
    y = valid.labels.numpy()
    for j, task in enumerate(("click", "conversion")):
        auc = roc_auc_score(y[:, j], probs[:, j].numpy())
        assert math.isclose(res.best_val[f"auc_{task}"], auc, abs_tol=1e-6)
        assert auc > 0.75  # both towers learned their own label (a tower trained on the other label would not)


def test_multi_task_models_must_match_the_split_labels():
    model = TwoTask()
    model.tasks = ("click", "purchase")
    with pytest.raises(ValueError, match="predicts tasks \\['click', 'purchase'\\] but the split's labels are "
                                         "\\['click', 'conversion'\\]"):
        T.evaluate(model, _data(n=200))
    model.tasks = ("click",)
    with pytest.raises(ValueError, match="declares 1 tasks but returned logits of shape \\(200, 2\\)"):
        T.predict(model, _data(n=200))
    model.tasks = "click"
    with pytest.raises(TypeError, match="must be a tuple of label names"):
        T.model_tasks(model)


def test_single_task_models_on_a_multi_label_split_train_on_the_first_label():
    class One(Towers):
        def __init__(self):
            super().__init__(1)

        def forward(self, batch):
            return self.logits(batch)[:, 0]

    model = One()
    valid = _data(seed=1)
    res = fit(model, _data(), valid, CFG, seed=2)
    assert set(res.best_val) >= {"auc", "logloss"}
    click_auc = roc_auc_score(valid.labels[:, 0].numpy(), T.predict(model, valid).numpy())
    assert math.isclose(res.best_val["auc"], click_auc, abs_tol=1e-6)
    assert np.isfinite(res.best_val["logloss"])
