"""OptInter's bars switches (conf/method/optinter.yaml, docs/fidelity.md 34): a pair budget (``max_pairs_kept``),
a temperature schedule sized to the data (``anneal_epochs``), a retrain whose embedding tables start from the
search's (``retrain_from: search``) and the retrain's patience (``retrain_max_strikes``). Each changes what it
should, and with each off the official procedure runs unchanged (the same choices, bit for bit). Real training on
a small slice of the shipped movielens data."""

from __future__ import annotations

import math

import pytest
import torch
from _methods_common import method_cfg

from bars.config import compose
from bars.validate import ConfigError, validate

RUN = ["method=optinter", "method.search_epochs=2", "method.min_count=2", "method.arch_lr=0.05"]


def _cfg(root, *extra: str):
    return method_cfg(root, "dnn", RUN, *extra, tracked=False)


def _arch(root):
    (folder,) = list((root / "results" / "methods").iterdir())
    return torch.load(folder / "search" / "arch.pt", weights_only=True), folder


def test_bad_switch_values_are_errors_naming_the_key():
    base = ["model=dnn", "method=optinter"]
    validate(compose([*base, "method.max_pairs_kept=0.5", "method.anneal_epochs=2", "method.retrain_from=search",
                      "method.retrain_max_strikes=4"]), "train")
    for bad, msg in (("method.max_pairs_kept=0", "method.max_pairs_kept must be null or a number in \\(0, 1\\]"),
                     ("method.max_pairs_kept=1.5", "method.max_pairs_kept must be null or a number in \\(0, 1\\]"),
                     ("method.anneal_epochs=0", "method.anneal_epochs must be null or a number > 0"),
                     ("method.retrain_from=supernet", "method.retrain_from must be 'scratch' or 'search'"),
                     ("method.retrain_max_strikes=0", "method.retrain_max_strikes must be null or an int >= 1")):
        with pytest.raises(ConfigError, match=msg):
            validate(compose([*base, bad]), "train")


def test_budget_rule_drops_the_weakest_keep_scores():
    from bars.methods.optinter import budget_choices

    # keep-score max(a_m, a_f) - a_n: 2.0, 0.5, -, 1.0, 0.2, 0.5 (pair 2 is naive by argmax)
    alpha = torch.tensor([[3.0, 0.0, 1.0], [0.0, 1.0, 0.5], [0.0, 0.0, 2.0], [1.5, 0.0, 0.5], [0.1, 0.7, 0.5],
                          [1.0, 0.5, 0.5]])
    argmax = ["memorise", "factorise", "naive", "memorise", "factorise", "memorise"]
    assert budget_choices(alpha, None) == argmax == budget_choices(alpha, 1.0)
    assert budget_choices(alpha, 5 / 6) == argmax  # 5 kept: within floor(5/6 * 6) = 5
    # 3 of 6: pair 4 (0.2) goes, then of the tie at 0.5 the later pair (5) before pair 1
    assert budget_choices(alpha, 0.5) == ["memorise", "factorise", "naive", "memorise", "naive", "naive"]
    assert budget_choices(alpha, 0.34) == ["memorise", "naive", "naive", "memorise", "naive", "naive"]  # floor 2.04
    assert budget_choices(alpha, 0.1) == ["naive"] * 6


def test_pair_budget_changes_only_the_choices_and_the_default_is_the_argmax(tmp_path):
    from bars.methods.optinter import budget_choices
    from bars.run import train_one

    plain = train_one(_cfg(tmp_path / "a"), quiet=True).metrics
    arch, _ = _arch(tmp_path / "a")
    assert torch.equal(arch["choices"], arch["alpha"].argmax(1))  # switch off: the official argmax, unchanged
    assert plain["pairs_kept_count"] >= 4  # so that a budget of 3 of 10 pairs binds
    budget = train_one(_cfg(tmp_path / "b", "method.max_pairs_kept=0.3"), quiet=True).metrics
    barch, _ = _arch(tmp_path / "b")
    assert torch.equal(barch["alpha"], arch["alpha"])  # the same search: the budget acts after it
    expected = budget_choices(arch["alpha"], 0.3)
    assert [("memorise", "factorise", "naive")[i] for i in barch["choices"].tolist()] == expected
    assert budget["pairs_kept_count"] == 3 and budget["pairs_kept"] == pytest.approx(0.3)
    kept_before = {k for k, c in enumerate(arch["choices"].tolist()) if c != 2}
    kept_after = {k for k, c in enumerate(barch["choices"].tolist()) if c != 2}
    assert kept_after < kept_before  # only drops, each kept pair keeps its argmax method
    assert all(barch["choices"][k] == arch["choices"][k] for k in kept_after)


def test_anneal_epochs_sizes_tau_to_the_floor_after_that_many_epochs(tmp_path):
    from bars.data.loader import load_dataset
    from bars.data.prepare import prepare
    from bars.methods import OptInterConfig
    from bars.methods.optinter import MIN_TEMPERATURE, SearchStage
    from bars.models import build
    from bars.train import TrainConfig

    ds = load_dataset(prepare(_cfg(tmp_path)))
    train_cfg = TrainConfig.from_cfg({"batch_size": 512, "device": "cpu"})
    per_epoch = math.ceil(len(ds.splits["train"]) / 512)
    assert per_epoch == 10
    taus = {}
    for anneal in (None, 1.5):
        stage = SearchStage(OptInterConfig(min_count=2, anneal_epochs=anneal), tmp_path)
        model = stage.wrap(build("dnn", ds.spec, {"embedding_dim": 10, "hidden_units": [16]}), ds.spec, train_cfg, 1)
        stage.bind_data(ds.splits)
        taus[anneal] = model.tau
        model.steps = 14
        assert model.temperature() > MIN_TEMPERATURE
        model.steps = 15  # 1.5 epochs
        if anneal is not None:
            assert model.temperature() == pytest.approx(MIN_TEMPERATURE)
    assert taus[None] == 5e-5  # switch off: the official tau
    assert taus[1.5] == pytest.approx(0.99 / 15)


def test_retrain_from_search_starts_the_embedding_tables_from_the_search(tmp_path):
    from bars.data.loader import load_dataset
    from bars.data.prepare import prepare
    from bars.methods import OptInterConfig
    from bars.methods.optinter import RetrainStage, SearchStage, embedding_tables
    from bars.models import build
    from bars.train import TrainConfig

    ds = load_dataset(prepare(_cfg(tmp_path)))
    spec, train_cfg = ds.spec, TrainConfig.from_cfg({"batch_size": 512, "device": "cpu"})
    params = {"embedding_dim": 10, "hidden_units": [16]}
    cfg = OptInterConfig(min_count=2, retrain_from="search")
    search = SearchStage(cfg, tmp_path)
    torch.manual_seed(3)
    smodel = search.wrap(build("deepfm", spec, params), spec, train_cfg, 1)
    search.bind_data(ds.splits)
    smodel.init_bars_(1e-1)  # as if trained: tables far from a fresh N(0, 1e-4) init
    search.finish(smodel)
    tables = embedding_tables(smodel)
    choices = [("memorise", "factorise", "naive")[i]
               for i in torch.load(tmp_path / "search" / "arch.pt", weights_only=True)["choices"].tolist()]

    def retrained(c: OptInterConfig):
        stage = RetrainStage(c, tmp_path)
        torch.manual_seed(4)
        model = stage.wrap(build("deepfm", spec, params), spec, train_cfg, 1)
        model.init_bars_(1e-4)
        return model

    warm, cold = retrained(cfg), retrained(OptInterConfig(min_count=2))
    got = embedding_tables(warm)
    fields = [f.name for f in spec.features if f.type == "categorical"]
    for f in fields:  # the field tables (the d-wide one and DeepFM's first-order one): the search's rows
        assert torch.equal(got[f"backbone.embedding::{f}"], tables[f"backbone.embedding::{f}"])
        assert torch.equal(got[f"backbone.lr.embedding::{f}"], tables[f"backbone.lr.embedding::{f}"])
        assert not torch.equal(embedding_tables(cold)[f"backbone.embedding::{f}"], tables[f"backbone.embedding::{f}"])
    pairs = warm.pairs
    assert pairs is not None
    for k in pairs.mem_pairs:  # a memorised pair's table: the search's
        name = pairs.slot_name(pairs.pairs[k])
        assert torch.equal(got[f"pairs.memorised::{name}"], tables[f"pairs.memorised::{name}"])
    for f in pairs.fac_fields:
        assert torch.equal(got[f"pairs.factorised::{f}"], tables[f"pairs.factorised::{f}"])
    assert len(pairs.mem_pairs) + len(pairs.fac_pairs) == sum(c != "naive" for c in choices)
    # everything else is the BARS initialisation of the same seed, as from scratch
    cold_state = cold.state_dict()
    for name, value in warm.state_dict().items():
        if ".embedding." not in name and not name.startswith("pairs.") and name in cold_state:
            assert torch.equal(value, cold_state[name]), name


def test_retrain_from_search_and_patience_run_end_to_end(tmp_path):
    from bars.methods import OptInterConfig
    from bars.methods.optinter import RetrainStage
    from bars.run import train_one
    from bars.train import TrainConfig

    assert RetrainStage(OptInterConfig(), tmp_path).train_config(TrainConfig()).max_strikes == 2
    assert RetrainStage(OptInterConfig(retrain_max_strikes=4), tmp_path).train_config(TrainConfig()).max_strikes == 4
    m = train_one(_cfg(tmp_path, "method.retrain_from=search", "method.retrain_max_strikes=3"), quiet=True).metrics
    assert 0.5 < m["test_auc"] < 1
    _, folder = _arch(tmp_path)
    assert (folder / "search" / "tables.pt").exists() and (folder / "retrain" / "done.json").exists()


def test_arch_data_valid_steps_alpha_on_the_next_validation_batch_only(tmp_path):
    """arch_data=valid: before each training step, one Adam step of alpha on the gradient of the next validation
    batch's loss (network in evaluation mode, weights fixed); the training batch gives alpha no gradient."""
    from bars.data.loader import load_dataset
    from bars.data.prepare import prepare
    from bars.methods import OptInterConfig
    from bars.methods.optinter import SearchStage
    from bars.models import build
    from bars.objective import loss_function
    from bars.train import TrainConfig, TrainStep

    ds = load_dataset(prepare(_cfg(tmp_path)))
    train_cfg = TrainConfig.from_cfg({"batch_size": 512, "device": "cpu"})
    stage = SearchStage(OptInterConfig(min_count=2, arch_lr=0.01, arch_data="valid"), tmp_path)
    torch.manual_seed(5)
    model = stage.wrap(build("dnn", ds.spec, {"embedding_dim": 10, "hidden_units": [16], "dropout": 0.5}), ds.spec,
                       train_cfg, seed=1)
    stage.bind_data(ds.splits)
    model.init_bars_(1e-1)
    alpha = model.pairs.alpha
    a0 = alpha.detach().clone()
    # the validation batch the first step reads (the same seeded shuffle), its loss's gradient by hand, eval mode
    xv, yv = next(ds.splits["valid"].batches(512, shuffle=True, seed=(1 * 1_000_003 + 7919) % 2**63))
    model.eval()
    pad = torch.zeros(len(yv), dtype=torch.int32)
    a = alpha.detach().clone().requires_grad_(True)
    model.pairs.alpha = torch.nn.Parameter(a, requires_grad=True)
    model._current = model.pairs(xv)
    loss = loss_function("bce")(model.backbone({**xv, **dict.fromkeys(model.slots, pad)}), yv)
    model._current = None
    (g,) = torch.autograd.grad(loss, [model.pairs.alpha])
    model.pairs.alpha = alpha
    model.train()
    step = TrainStep(model, train_cfg)
    assert not any(p is alpha for p in step.params)
    xt, yt = next(ds.splits["train"].batches(512, shuffle=False))
    step(xt, yt)
    torch.testing.assert_close(alpha.detach(), a0 - 0.01 * g / (g.abs() + 1e-8), rtol=0, atol=1e-6)
    assert alpha.grad is None and model.steps == 1 and model.training and model.backbone.training
    moved = alpha.detach().clone()
    model.eval()
    with torch.no_grad():
        model(xt)  # evaluation: no alpha step
    assert torch.equal(alpha.detach(), moved)


def test_arch_data_valid_runs_end_to_end(tmp_path):
    from bars.run import train_one

    m = train_one(_cfg(tmp_path, "method.arch_data=valid", "method.max_pairs_kept=0.5"), quiet=True).metrics
    assert 0.5 < m["test_auc"] < 1 and m["pairs_kept_count"] <= 5
    arch, folder = _arch(tmp_path)
    assert int((arch["choices"] != 2).sum()) == m["pairs_kept_count"] and (folder / "retrain" / "done.json").exists()
