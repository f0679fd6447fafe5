"""The multi-task models (ShareBottom, MMoE, PLE, ESMM) beyond the registry-wide checks of tests/test_models.py:
their tasks are the spec's labels; ESMM against the paper's equations (pCTCVR = pCTR x pCVR, the loss on CTR and
CTCVR over every impression, none on pCVR), its label mapping and its errors; each trains on two labels through
bars.train and is scored per task."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import functional as F

from bars.data.loader import SplitTensors
from bars.data.spec import Feature, FeatureSpec
from bars.models import ModelConfigError, build
from bars.models.esmm import product_logit
from bars.models.layers import init_bars_
from bars.objective import loss_function
from bars.train import TrainConfig, TrainStep, fit

SPEC = FeatureSpec(dataset="funnel_like", label="click", labels=("click", "conversion"), features=(
    Feature("user", "categorical", vocab_size=30), Feature("item", "categorical", vocab_size=30),
    Feature("price", "numeric")))
MULTI = ("sharebottom", "mmoe", "ple", "esmm")


def _data(n: int = 4000, seed: int = 0) -> SplitTensors:
    """click depends on the user, conversion-given-click on the item; conversion = click AND buy."""
    g = torch.Generator().manual_seed(seed)
    user = torch.randint(1, 30, (n,), generator=g)
    item = torch.randint(1, 30, (n,), generator=g)
    price = torch.randn(n, generator=g)
    click = (torch.rand(n, generator=g) < torch.where(user < 15, 0.7, 0.1)).float()
    buy = (torch.rand(n, generator=g) < torch.where(item < 15, 0.8, 0.1)).float()
    labels = torch.stack([click, click * buy], 1)
    return SplitTensors({"user": user, "item": item, "price": price}, click, labels, ("click", "conversion"))


def _batch(n: int = 64):
    split = _data(n)
    return split.features, split.labels


def test_tasks_are_the_spec_labels_and_a_single_label_spec_gives_one_task():
    for name in ("sharebottom", "mmoe", "ple"):
        m = build(name, SPEC, {"embedding_dim": 4})
        assert m.tasks == ("click", "conversion") and m(_batch()[0]).shape == (64, 2)
        one = build(name, dataclasses.replace(SPEC, labels=("click",)), {"embedding_dim": 4})
        assert one.tasks == ("click",) and one(_batch()[0]).shape == (64, 1)


def test_esmm_follows_the_paper():
    torch.manual_seed(0)
    m = init_bars_(build("esmm", SPEC, {"embedding_dim": 4, "tower_hidden_units": [8]})).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    x, y = _batch()
    e = m.embedding.flat(x)
    p_ctr = torch.sigmoid(m.ctr_tower(e).squeeze(-1))
    p_cvr = torch.sigmoid(m.cvr_tower(e).squeeze(-1))
    out = m(x)
    torch.testing.assert_close(torch.sigmoid(out[:, 0]), p_ctr)
    torch.testing.assert_close(torch.sigmoid(out[:, 1]), p_ctr * p_cvr)
    torch.testing.assert_close(torch.sigmoid(m.cvr_logits(x)), p_cvr)
    want = F.binary_cross_entropy(p_ctr, y[:, 0]) + F.binary_cross_entropy(p_ctr * p_cvr, y[:, 1])
    torch.testing.assert_close(m.training_loss(out, y, loss_function("bce")), want, rtol=1e-5, atol=1e-6)


def test_esmm_cvr_tower_learns_only_through_the_ctcvr_term():
    torch.manual_seed(0)
    m = init_bars_(build("esmm", SPEC, {"embedding_dim": 4, "tower_hidden_units": [8]}))
    x, y = _batch()
    bce = loss_function("bce")
    out = m(x)
    bce(out[:, 0], y[:, 0]).backward()  # the CTR term alone: no gradient reaches the CVR tower
    assert all(p.grad is None or not p.grad.any() for p in m.cvr_tower.parameters())
    m.zero_grad()
    m.training_loss(m(x), y, bce).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.cvr_tower.parameters())


def test_product_logit_is_stable():
    a = torch.tensor([-30.0, -2.0, 0.0, 3.0, 40.0, 120.0])
    b = torch.tensor([1.0, 0.5, 0.0, -3.0, 40.0, 120.0])
    z = product_logit(a, b)
    assert torch.isfinite(z).all()
    want = torch.logit(torch.sigmoid(a.double()) * torch.sigmoid(b.double()))
    torch.testing.assert_close(z[:4].double(), want[:4], rtol=1e-5, atol=1e-5)
    assert z[4] > 10 and z[5] > 10  # two saturated towers: a large finite logit


def test_esmm_label_mapping_and_errors():
    swapped = dataclasses.replace(SPEC, label="conversion", labels=("conversion", "click"))
    m = build("esmm", swapped, {"embedding_dim": 4, "ctr_label": "click", "ctcvr_label": "conversion"})
    assert m.tasks == ("conversion", "click") and (m.ctr_index, m.ctcvr_index) == (1, 0)
    out = m.eval()(_batch()[0])
    e = m.embedding.flat(_batch()[0])
    torch.testing.assert_close(torch.sigmoid(out[:, 1]), torch.sigmoid(m.ctr_tower(e).squeeze(-1)))
    with pytest.raises(ValueError, match=r"model.params.ctcvr_label='purchase' is not a label of dataset "
                                         r"'funnel_like' \(labels \['click', 'conversion'\]\)"):
        build("esmm", SPEC, {"embedding_dim": 4, "ctr_label": "click", "ctcvr_label": "purchase"})
    with pytest.raises(ValueError, match=r"ESMM needs a CTR label and a CTCVR .* has labels \['click'\]"):
        build("esmm", dataclasses.replace(SPEC, labels=("click",)), {"embedding_dim": 4})
    three = dataclasses.replace(SPEC, labels=("click", "conversion", "like"))
    with pytest.raises(ValueError, match="set model.params.ctr_label"):
        build("esmm", three, {"embedding_dim": 4})
    with pytest.raises(ValueError, match="select those two with data.labels"):
        build("esmm", three, {"embedding_dim": 4, "ctr_label": "click", "ctcvr_label": "conversion"})
    with pytest.raises(ModelConfigError, match="set both ctr_label and ctcvr_label"):
        build("esmm", SPEC, {"embedding_dim": 4, "ctr_label": "click"})


@pytest.mark.parametrize(("name", "key", "value", "match"), [
    ("mmoe", "num_experts", 0, "num_experts must be >= 1"),
    ("ple", "expert_hidden_units", [], "expert_hidden_units must name at least one layer"),
    ("sharebottom", "bottom_hidden_units", [], "bottom_hidden_units must name at least one layer"),
    ("ple", "num_layers", 0, "num_layers must be >= 1"),
])
def test_bad_structures_are_errors_naming_the_key(name, key, value, match):
    with pytest.raises(ModelConfigError, match=match):
        build(name, SPEC, {"embedding_dim": 4, key: value})


@pytest.mark.parametrize("name", MULTI)
def test_trains_both_tasks_and_is_scored_per_task(name):
    torch.manual_seed(0)
    params = {"embedding_dim": 4}
    params.update({"tower_hidden_units": [16]} if name == "esmm" else {})
    params.update({"expert_hidden_units": [16], "gate_hidden_units": [], "tower_hidden_units": [8]}
                  if name in ("mmoe", "ple") else {})
    model = build(name, SPEC, params)
    cfg = TrainConfig(learning_rate=0.01, batch_size=256, max_epochs=3, embedding_init_std=0.1,
                      monitor="val_auc_conversion", device="cpu")
    res = fit(model, _data(), _data(seed=1), cfg, seed=1)
    assert res.best_val["auc_click"] > 0.75 and res.best_val["auc_conversion"] > 0.75, res.best_val
    step = TrainStep(model, cfg)
    x, y = _batch()
    assert torch.isfinite(step.objective(model(x), y))


def test_funnel_oracle_adds_would_convert_and_changes_nothing_else(tmp_path):
    import pyarrow.parquet as pq

    from bars.data.funnel import generate_funnel

    plain = pq.read_table(generate_funnel(tmp_path / "a.parquet", users=40, items=50, seed=3))
    full = pq.read_table(generate_funnel(tmp_path / "b.parquet", users=40, items=50, seed=3, oracle=True))
    oracle = ["would_convert", "convert_probability", "click_probability"]
    assert full.column_names == [*plain.column_names, *oracle]
    assert full.drop(oracle).equals(plain)
    w, click, conv = (full.column(c).to_numpy() for c in ("would_convert", "click", "conversion"))
    assert (conv == click * w).all() and w.sum() > conv.sum() > 0  # converts unclicked impressions would make
    # the draws' probabilities: in (0, 1), and they rank the draws (the best score a model could reach)
    pw, pc = (full.column(c).to_numpy() for c in ("convert_probability", "click_probability"))
    assert ((pw > 0) & (pw < 1) & (pc > 0) & (pc < 1)).all()
    from bars import metrics
    assert metrics.auc(w, pw) > 0.7 and metrics.auc(click, pc) > 0.6


@pytest.mark.parametrize("name", ("sharebottom", "mmoe", "ple"))
def test_a_single_label_dataset_scores_a_multitask_model_under_the_plain_keys(name):
    """On a single-label dataset a multi-task architecture predicts one task; it is scored as any single-task
    model (``auc``, ``logloss``: the keys the board's final runs, the leaderboard's ranking and the significance
    test read), with the values of the metrics on its one column; found by the movielens_small board, where
    ShareBottom's five final runs recorded ``test_auc_label`` only and its summary failed on a NaN."""
    from bars import metrics
    from bars.train import evaluate, predict

    torch.manual_seed(0)
    one_spec = dataclasses.replace(SPEC, labels=("click",))
    params = {"embedding_dim": 4}
    params.update({"expert_hidden_units": [16], "gate_hidden_units": [], "tower_hidden_units": [8]}
                  if name in ("mmoe", "ple") else {})
    model = build(name, one_spec, params)

    def one_label(split: SplitTensors) -> SplitTensors:
        return SplitTensors(split.features, split.label, split.labels[:, :1], ("click",))

    cfg = TrainConfig(learning_rate=0.01, batch_size=256, max_epochs=2, embedding_init_std=0.1, device="cpu")
    res = fit(model, one_label(_data()), one_label(_data(seed=1)), cfg, seed=1)
    assert set(res.best_val) == {"auc", "logloss"} and res.best_val["auc"] > 0.75, res.best_val
    test = one_label(_data(seed=2))
    got = evaluate(model, test)
    probs = predict(model, test)
    assert probs.shape == (len(test), 1)  # predictions keep the task column (predict / export)
    assert got == metrics.compute(test.labels[:, 0].numpy(), probs[:, 0].numpy())
