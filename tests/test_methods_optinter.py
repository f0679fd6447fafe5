"""OptInter on the methods axis (bars.methods.optinter, issue 13 item 4): real training on a small slice of the
shipped movielens data, a real MLflow store; the pairs' way into the backbone (DNN_cart: pair embeddings
concatenated to the field embeddings), the one-level joint architecture step, the stages as child runs with
resume, and the board row with its kept column. The layer's own math: tests/test_layers_pair_interaction.py; the
official code's equations: tests/reference/test_optinter_search.py."""

from __future__ import annotations

import json

import pytest
import torch
from _methods_common import method_cfg

from bars.config import compose
from bars.validate import ConfigError, validate

FIELDS = ["user", "movie", "year", "hour", "weekday"]  # movielens_small's categorical fields, spec order


OPTINTER_RUN = ["method=optinter", "method.search_epochs=2", "method.min_count=2", "method.arch_lr=0.05"]


def _cfg(tmp_path, model: str, *extra: str, tracked: bool = True):
    return method_cfg(tmp_path, model, OPTINTER_RUN, *extra, tracked=tracked)


def test_unknown_or_bad_optinter_keys_are_errors_naming_the_key():
    validate(compose(["model=dnn", "method=optinter"]), "train")
    with pytest.raises(ConfigError, match=r"unknown method.optinter key\(s\) \['hash_row'\]"):
        validate(compose(["model=dnn", "method=optinter", "+method.hash_row=10"]), "train")
    with pytest.raises(ConfigError, match="method.hash_rows must be an int >= 1"):
        validate(compose(["model=dnn", "method=optinter", "method.hash_rows=0"]), "train")
    with pytest.raises(ConfigError, match="method.arch_lr must be a number > 0"):
        validate(compose(["model=dnn", "method=optinter", "method.arch_lr=0"]), "train")
    with pytest.raises(ConfigError, match="method.tau must be a number >= 0"):
        validate(compose(["model=dnn", "method=optinter", "method.tau=-1"]), "train")
    with pytest.raises(ConfigError, match="method.fields must be null or a list of at least 2"):
        validate(compose(["model=dnn", "method=optinter", "method.fields=[user]"]), "train")
    validate(compose(["model=dnn", "method=optinter", "method.fields=[user,movie,hour]"]), "train")


def test_sweep_space_merges_the_optinter_space_and_its_study_is_its_own():
    from bars.search import space_of

    space = space_of(compose(["model=deepfm", "method=optinter"]))
    assert {"method.arch_lr", "method.tau", "method.min_count"} <= set(space)
    assert "method.l1" not in space  # DNIS's space is not merged
    assert compose(["model=deepfm", "method=optinter"]).sweep.study == "deepfm+optinter__movielens_small"


@pytest.mark.parametrize("model", ["dnn", "deepfm", "dcn", "ipnn"])
def test_optinter_over_each_backbone_chooses_per_pair_and_retrains(tmp_path, model):
    from bars.run import train_one

    r = train_one(_cfg(tmp_path, model, tracked=False), quiet=True)
    m = r.metrics
    assert r.run_id is None and 0.5 < m["test_auc"] < 1
    folder = next((tmp_path / "results" / "methods").iterdir())
    assert {p.name for p in (folder / "search").iterdir()} >= {"arch.pt", "pairs.pt", "done.json"}
    arch = torch.load(folder / "search" / "arch.pt", weights_only=True)
    assert tuple(arch["alpha"].shape) == (10, 3)  # C(5, 2) pairs x (memorise, factorise, naive)
    assert torch.equal(arch["choices"], arch["alpha"].argmax(1))
    counts = [int((arch["choices"] == c).sum()) for c in range(3)]
    assert [m["pairs_memorise"], m["pairs_factorise"], m["pairs_naive"]] == counts and m["pairs_total"] == 10
    assert m["pairs_kept"] == pytest.approx((10 - counts[2]) / 10) and m["pairs_kept_count"] == 10 - counts[2]
    assert 0 <= m["pair_params_kept"] == pytest.approx(m["pair_params_kept_count"] / m["pair_params_total"])


def test_hashed_pair_tables_train_end_to_end(tmp_path):
    """hash_rows below a pair's known values: those pairs' values share hash_rows rows (plus padding and OOV)."""
    from bars.run import train_one

    r = train_one(_cfg(tmp_path, "dnn", "method.min_count=1", "method.hash_rows=20", tracked=False), quiet=True)
    m = r.metrics
    assert m["pairs_hashed"] >= 8 and 0.5 < m["test_auc"] < 1  # on 4,724 rows most pairs have > 20 values
    folder = next((tmp_path / "results" / "methods").iterdir())
    stored = torch.load(folder / "search" / "pairs.pt", weights_only=True)
    assert sum(len(stored[f"keys_{k}"]) > 20 for k in range(10)) == m["pairs_hashed"]


def _movielens(tmp_path):
    from bars.data.loader import load_dataset
    from bars.data.prepare import prepare

    return load_dataset(prepare(_cfg(tmp_path, "dnn", tracked=False)))


def test_pairs_enter_dnn_as_extra_fields_of_its_mlp_like_dnn_cart(tmp_path):
    """DNN_cart: X = [field embeddings, pair embeddings] into the MLP. The backbone rebuilt with slots has an MLP
    input of (F + P) * d, and its embedding output is the field embeddings followed by the layer's pair output;
    the first-order LR term of DeepFM sees the slots as padding (zero)."""
    from bars.methods import OptInterConfig
    from bars.methods.optinter import RetrainStage, SearchStage
    from bars.models import build
    from bars.train import TrainConfig, save_checkpoint

    ds = _movielens(tmp_path)
    spec = ds.spec
    n_fields = len(spec.features)  # five categorical fields and the genres sequence
    train_cfg = TrainConfig.from_cfg({"batch_size": 512, "device": "cpu"})
    stage = SearchStage(OptInterConfig(min_count=2), tmp_path)
    model = stage.wrap(build("dnn", spec, {"embedding_dim": 10, "hidden_units": [16]}), spec, train_cfg, seed=1)
    stage.bind_data(ds.splits)
    model.init_bars_(1e-1)
    backbone = model.backbone
    assert backbone.mlp.net[0].in_features == (n_fields + 10) * 10
    xb, _ = next(ds.splits["test"].batches(64, shuffle=False))
    captured = {}
    backbone.mlp.register_forward_pre_hook(lambda mod, args: captured.setdefault("x", args[0].detach()))
    model.eval()
    with torch.no_grad():
        model(xb)
        pairs = model.pairs(xb)
        plain = type(backbone.embedding).forward(backbone.embedding, {**xb, **{s: torch.zeros(64, dtype=torch.int32)
                                                                            for s in model.slots}})
    x = captured["x"].view(64, n_fields + 10, 10)
    torch.testing.assert_close(x[:, :n_fields], plain[:, :n_fields])  # the field embeddings, unchanged
    torch.testing.assert_close(x[:, n_fields:], pairs)  # then one slot per pair, in pair order

    # the retrain: one slot per pair not chosen naive; DeepFM's first-order term reads zero for the slots
    choices = ["memorise", "naive", "factorise", "naive", "naive", "memorise", "naive", "naive", "naive", "factorise"]
    save_checkpoint({"alpha": torch.zeros(10, 3), "choices": torch.tensor(
        [("memorise", "factorise", "naive").index(c) for c in choices])}, tmp_path / "search" / "arch.pt")
    retrain = RetrainStage(OptInterConfig(min_count=2), tmp_path)
    rmodel = retrain.wrap(build("deepfm", spec, {"embedding_dim": 10, "hidden_units": [16]}), spec, train_cfg, 1)
    rmodel.init_bars_(1e-1)
    assert len(rmodel.slots) == 4 and rmodel.backbone.mlp.net[0].in_features == (n_fields + 4) * 10
    assert rmodel.pairs.mem_pairs == [0, 5] and rmodel.pairs.fac_pairs == [2, 9]
    lr_emb = rmodel.backbone.lr.embedding
    with torch.no_grad():
        lr_emb.weight.normal_()
        lr_emb.weight[0].zero_()  # the padding row (zero after every initialisation; no gradient reaches it)
        lr_out = lr_emb({**xb, **{s: torch.zeros(64, dtype=torch.int32) for s in rmodel.slots}})
    assert torch.all(lr_out[:, n_fields:] == 0)
    assert retrain.finish(rmodel)["pairs_memorise"] == 2


def test_one_search_step_updates_alpha_jointly_on_the_training_batch(tmp_path):
    """Official CriteoSearch.py: loss.backward(); arch_optimizer.step(); optimizer.step() on the same training
    batch. Here alpha's step (its own Adam, arch_lr) is applied before the next forward; the trainer's Adam never
    holds alpha; the temperature follows max(0.01, 1 - tau * step)."""
    from bars.methods import OptInterConfig
    from bars.methods.optinter import SearchStage
    from bars.models import build
    from bars.objective import loss_function
    from bars.train import TrainConfig, TrainStep

    ds = _movielens(tmp_path)
    cfg = OptInterConfig(min_count=2, arch_lr=0.01, tau=0.3)
    train_cfg = TrainConfig.from_cfg({"batch_size": 512, "device": "cpu"})
    stage = SearchStage(cfg, tmp_path)
    torch.manual_seed(5)
    model = stage.wrap(build("fm", ds.spec, {"embedding_dim": 10}), ds.spec, train_cfg, seed=1)
    stage.bind_data(ds.splits)
    model.init_bars_(1e-1)
    alpha = model.pairs.alpha
    a0 = alpha.detach().clone()
    xt, yt = next(ds.splits["train"].batches(512, shuffle=False))
    # by hand: the gradient of the training batch's loss at t = 1 (step 0)
    model.train()
    model.pairs.temperature = 1.0
    pad = torch.zeros(512, dtype=torch.int32)
    model._current = model.pairs(xt)
    loss = loss_function("bce")(model.backbone({**xt, **dict.fromkeys(model.slots, pad)}), yt)
    model._current = None
    (g,) = torch.autograd.grad(loss, [alpha])
    step = TrainStep(model, train_cfg)
    assert not any(p is alpha for p in step.params)
    step(xt, yt)
    assert model.steps == 1 and model.pairs.temperature == 1.0
    assert alpha.grad is not None  # pending: applied before the next forward
    torch.testing.assert_close(alpha.grad, g, rtol=1e-5, atol=1e-8)
    model.eval()
    with torch.no_grad():
        model(xt)  # an evaluation forward applies it and does not advance the schedule
    expected = a0 - 0.01 * g / (g.abs() + 1e-8)  # Adam's first step
    torch.testing.assert_close(alpha.detach(), expected, rtol=0, atol=1e-6)
    assert alpha.grad is None and model.steps == 1
    model.train()
    step(xt, yt)
    assert model.pairs.temperature == pytest.approx(0.7) and model.steps == 2
    model.steps = 100
    step(xt, yt)
    assert model.pairs.temperature == 0.01  # the floor


def test_memory_check_through_the_config_names_the_knob(tmp_path):
    from bars.models.layers.field_aware import EmbeddingMemoryError
    from bars.run import train_one

    with pytest.raises(EmbeddingMemoryError, match=r"method.max_embedding_bytes = 1,000.*method.hash_rows"):
        train_one(_cfg(tmp_path, "dnn", "method.max_embedding_bytes=1000", tracked=False), quiet=True)


def test_stages_are_child_runs_and_the_board_shows_dnn_optinter_with_its_kept_column(tmp_path):
    from bars.leaderboard import build
    from bars.leaderboard_render import render_csv, render_markdown
    from bars.records import get_client, load_runs
    from bars.run import train_one
    from bars.tracking import tracker_of

    cfg = _cfg(tmp_path, "dnn", "train.max_epochs=2")

    def interrupt(log):  # a Ctrl-C in the retrain's first epoch
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_one(cfg, quiet=True, extra_tags={"stage": "final"}, on_epoch=interrupt)
    folder = next((tmp_path / "results" / "methods").iterdir())
    assert (folder / "search" / "done.json").exists() and not (folder / "retrain" / "done.json").exists()
    arch = torch.load(folder / "search" / "arch.pt", weights_only=True)
    parent_id = json.loads((folder / "method.json").read_text())["parent_run_id"]
    r = train_one(cfg, quiet=True, extra_tags={"stage": "final"})  # resumed: the search is not run again
    assert torch.equal(torch.load(folder / "search" / "arch.pt", weights_only=True)["alpha"], arch["alpha"])
    tracker = tracker_of(cfg)
    assert r.run_id == parent_id and tracker.run_status(parent_id) == "FINISHED"
    client = get_client(str(cfg.tracking.uri))
    runs = client.search_runs([tracker.experiment_id()], max_results=50)
    children = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == parent_id]
    assert sorted((x.data.tags["stage"], x.info.status) for x in children) == [
        ("retrain", "FINISHED"), ("retrain", "KILLED"), ("search", "FINISHED")]
    assert all(x.data.tags["method"] == "optinter" and x.data.tags["backbone"] == "dnn" for x in children)
    search = next(x for x in children if x.data.tags["stage"] == "search")
    assert search.data.metrics["search_steps"] == search.data.metrics["epochs"] * 10  # 4,724 rows / 512
    parent = client.get_run(parent_id)
    retrain = next(x for x in children if x.data.tags["stage"] == "retrain" and x.info.status == "FINISHED")
    assert parent.data.metrics["test_auc"] == retrain.data.metrics["test_auc"] == r.metrics["test_auc"]
    assert parent.data.tags["model"] == "dnn+optinter"
    for key in ("pairs_memorise", "pairs_factorise", "pairs_naive", "pair_params_kept"):
        assert parent.data.metrics[key] == search.data.metrics[key]

    plain = compose(["model=dnn", "data=movielens_small", "data.rows=6000", "model.params.hidden_units=[16]",
                     "train.max_epochs=1", "train.num_threads=1", "train.device=cpu", "train.batch_size=512",
                     f"paths.data={tmp_path / 'data'}", f"paths.checkpoints={tmp_path / 'ckpt'}",
                     f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    train_one(plain, quiet=True, extra_tags={"stage": "final"})
    boards = build(load_runs(str(cfg.tracking.uri), [str(cfg.tracking.experiment)]), published={})
    rows = {row.model: row for row in boards["movielens_small"].rows}
    assert set(rows) == {"dnn", "dnn+optinter"}
    row = rows["dnn+optinter"]
    assert row.method == "optinter" and row.kept_fraction == pytest.approx(r.metrics["pairs_kept"])
    assert row.kept_count == r.metrics["pairs_kept_count"] == 10 - r.metrics["pairs_naive"]
    assert row.kept_total == r.metrics["pairs_total"] == 10 and rows["dnn"].kept_fraction is None
    assert "kept_fraction" in render_csv(boards["movielens_small"]).splitlines()[0]
    assert "OptInter: pairs" in render_markdown(boards["movielens_small"], "test")


@pytest.mark.parametrize("model", ["deepfm", "dcn", "dnn"])
def test_a_retrain_with_every_pair_dropped_is_plain_training(tmp_path, model):
    """Every pair *naive*: the retrain adds no slot and no table, so it computes exactly what plain training does
    (same seed, same initialisation, same batches). A gap between OptInter and its backbone in the measured rows
    (docs/methods.md) comes from the pairs kept, not from the retrain's structure."""
    from bars.methods import method_config
    from bars.methods.optinter import RetrainStage
    from bars.run import train_one

    cfg = _cfg(tmp_path, model, "train.max_epochs=2", tracked=False)
    train_one(cfg, quiet=True)
    folder = next((tmp_path / "results" / "methods").iterdir())
    arch = torch.load(folder / "search" / "arch.pt", weights_only=True)
    assert int((arch["choices"] != 2).sum()) > 0  # the search kept some pairs: the rewrite below changes the retrain
    arch["choices"] = torch.full_like(arch["choices"], 2)
    torch.save(arch, folder / "search" / "arch.pt")
    r_plain = train_one(method_cfg(tmp_path, model, [], "train.max_epochs=2", tracked=False), quiet=True).metrics
    m = train_one(cfg, quiet=True, stage=RetrainStage(method_config(cfg), folder)).metrics
    assert m["pairs_kept_count"] == 0 and m["pairs_naive"] == 10
    assert m["test_auc"] == r_plain["test_auc"] and m["test_logloss"] == r_plain["test_logloss"]
