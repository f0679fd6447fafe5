"""Methods as an axis (bars.methods, issue 13) and OptFS's feature gate: real training on a small slice of the
shipped movielens data, a real MLflow store, the gate's equations against hand-written ones."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _methods_common import method_cfg

from bars.config import compose
from bars.models.layers import FeatureEmbedding, FeatureGate
from bars.validate import ConfigError, validate
from tests._tiny_ctr import SPEC, tiny_batch

# ------------------------------------------------------------------------------------------------ the gate layer


def test_gate_is_one_at_init_and_follows_the_optfs_equations():
    gate = FeatureGate(SPEC, init=0.5)
    assert gate.field_names == ("a", "b") and gate.num_features == 19 + 19  # the numeric field is not gated
    rows = torch.tensor([[1, 20], [5, 38]])
    assert torch.allclose(gate(rows), torch.ones(2, 2))  # scale 1/sigmoid(0.5) makes a fresh gate exactly 1
    with torch.no_grad():
        gate.weight[5, 0] = -0.3
    gate.temperature = 7.0
    want = torch.sigmoid(torch.tensor(7.0 * -0.3)) / torch.sigmoid(torch.tensor(0.5))
    assert torch.allclose(gate(torch.tensor([5]))[0], want)
    assert torch.allclose(gate.penalty(), torch.sigmoid(7.0 * gate.weight[1:]).sum())
    gate.hard = True
    assert gate(torch.tensor([5, 6])).tolist() == pytest.approx([0.0, 1.0 / (1.0 / (1.0 + math.exp(-0.5)))])
    assert int(gate.kept().sum()) == 37 and gate.kept_per_field() == {"a": 18, "b": 19}


def test_gate_hooks_every_embedding_per_field_and_value_with_the_right_gradient():
    emb = FeatureEmbedding(SPEC, 4)
    x, _ = tiny_batch(16)
    plain = emb(x).detach()
    gate = FeatureGate(SPEC, init=0.2)
    with torch.no_grad():
        gate.weight.normal_()
    gate.temperature = 3.0
    handles = gate.attach(emb)
    out = emb(x)
    # expected: field a (position 0) and b (position 2) scaled by their value's gate, price (1) unchanged
    scale = 1 / torch.sigmoid(torch.tensor(0.2))
    ga = torch.sigmoid(3.0 * gate.weight[x["a"].long() + gate.offsets["a"] - 1, 0]) * scale
    gb = torch.sigmoid(3.0 * gate.weight[x["b"].long() + gate.offsets["b"] - 1, 0]) * scale
    assert torch.allclose(out[:, 0], plain[:, 0] * ga[:, None].detach())
    assert torch.allclose(out[:, 1], plain[:, 1])
    assert torch.allclose(out[:, 2], plain[:, 2] * gb[:, None].detach())
    out.sum().backward()
    # d/dm of sum_j e_j * scale * sigmoid(T m) = scale * T * s (1 - s) * sum_j e_j, summed over the rows reading m
    w = gate.weight.detach()
    want = torch.zeros_like(w)
    for name, pos in (("a", 0), ("b", 2)):
        r = x[name].long() + gate.offsets[name] - 1
        s = torch.sigmoid(3.0 * w[r, 0])
        want.index_add_(0, r, (scale * 3.0 * s * (1 - s) * plain[:, pos].sum(1))[:, None])
    assert torch.allclose(gate.weight.grad, want, atol=1e-7)
    for h in handles:
        h.remove()
    assert torch.allclose(emb(x), plain)


@pytest.mark.parametrize("model", ["fm", "deepfm", "dcn", "ipnn", "dnn"])
def test_closed_gates_remove_every_categorical_field_from_each_backbone(model):
    """All gates hard and closed == every categorical embedding row zero (the models that read
    ``embedding.flat(batch)``, DCN and DNN, included)."""
    import copy

    from bars.methods.optfs import GatedModel
    from bars.models import build

    torch.manual_seed(0)
    backbone = build(model, SPEC, {"embedding_dim": 4})
    for p in backbone.parameters():
        torch.nn.init.normal_(p, 0, 0.3)
    zeroed = copy.deepcopy(backbone)
    with torch.no_grad():
        for m in zeroed.modules():
            if isinstance(m, FeatureEmbedding) and m.weight is not None:
                m.weight.zero_()
    gate = FeatureGate(SPEC)
    gated = GatedModel(backbone, gate).eval()
    x, _ = tiny_batch(32)
    open_logits = gated(x).detach()
    with torch.no_grad():
        gate.weight.fill_(-1.0)
    gate.hard = True
    closed = gated(x).detach()
    assert torch.allclose(closed, zeroed.eval()(x), atol=1e-6)
    assert not torch.allclose(closed, open_logits, atol=1e-3)


def test_gate_refuses_a_model_without_embeddings():
    with pytest.raises(ValueError, match="no FeatureEmbedding"):
        FeatureGate(SPEC).attach(torch.nn.Linear(2, 2))


# ------------------------------------------------------------------------------------------------ the axis

OPTFS_RUN = ["method=optfs", "method.search_epochs=2", "method.rewind_epoch=1", "method.sparsity=1e-3"]


def _cfg(tmp_path, model: str, *extra: str, tracked: bool = True):
    return method_cfg(tmp_path, model, OPTFS_RUN, *extra, tracked=tracked)


def test_default_config_has_no_method_block_and_none_is_plain():
    assert "method" not in compose(["model=deepfm"])  # existing configs (and their fingerprints) are unchanged
    validate(compose(["model=deepfm", "method=none"]), "train")


def test_unknown_or_bad_method_keys_are_errors_naming_the_key():
    with pytest.raises(ConfigError, match=r"unknown method.optfs key\(s\) \['temprature'\]"):
        validate(compose(["model=deepfm", "method=optfs", "+method.temprature=3"]), "train")
    with pytest.raises(ConfigError, match=r"method.rewind_epoch must be an int in \[0, search_epochs=3\)"):
        validate(compose(["model=deepfm", "method=optfs", "method.search_epochs=3", "method.rewind_epoch=3"]), "train")
    with pytest.raises(ConfigError, match=r"method.name 'optf' is not one of"):
        validate(compose(["model=deepfm", "method=optfs", "method.name=optf"]), "train")


def test_sweep_space_merges_the_method_space():
    from bars.search import space_of

    space = space_of(compose(["model=deepfm", "method=optfs"]))
    assert {"method.sparsity", "method.final_temperature", "method.search_epochs", "method.rewind_epoch"} <= set(space)
    assert "method.sparsity" not in space_of(compose(["model=deepfm"]))
    # a sweep over the method is a study of its own, beside the backbone's
    assert compose(["model=deepfm", "method=optfs"]).sweep.study == "deepfm+optfs__movielens_small"
    assert compose(["model=deepfm"]).sweep.study == "deepfm__movielens_small"


@pytest.mark.parametrize("model", ["fm", "dcn", "ipnn", "dnn"])
def test_optfs_over_each_backbone(tmp_path, model):
    from bars.run import train_one

    r = train_one(_cfg(tmp_path, model, tracked=False), quiet=True)
    assert r.run_id is None and 0.5 < r.metrics["test_auc"] < 1
    assert 0 < r.metrics["features_kept_count"] <= r.metrics["features_total"]
    folder = next((tmp_path / "results" / "methods").iterdir())
    assert {p.name for p in (folder / "search").iterdir()} >= {"gates.pt", "rewind.pt", "done.json"}
    gates = torch.load(folder / "search" / "gates.pt", weights_only=True)["weight"]
    assert int((gates[1:] > 0).sum()) == r.metrics["features_kept_count"]


def test_stages_are_child_runs_resume_skips_finished_stages_and_the_board_shows_the_method(tmp_path):
    from bars.leaderboard import build
    from bars.records import get_client, load_runs
    from bars.run import train_one
    from bars.tracking import tracker_of

    cfg = _cfg(tmp_path, "deepfm", "train.max_epochs=2")
    calls = {"n": 0}

    def interrupt(log):  # the final stage's first epoch: a Ctrl-C in the middle of the retrain
        calls["n"] += 1
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_one(cfg, quiet=True, extra_tags={"stage": "final"}, on_epoch=interrupt)
    assert calls["n"] == 1
    folder = next((tmp_path / "results" / "methods").iterdir())
    assert (folder / "search" / "done.json").exists() and not (folder / "retrain" / "done.json").exists()
    parent_id = json.loads((folder / "method.json").read_text())["parent_run_id"]
    tracker = tracker_of(cfg)
    assert tracker.run_status(parent_id) == "KILLED"

    r = train_one(cfg, quiet=True, extra_tags={"stage": "final"})  # the rerun: search skipped, retrain run
    assert r.run_id == parent_id and tracker.run_status(parent_id) == "FINISHED"
    client = get_client(str(cfg.tracking.uri))
    runs = client.search_runs([tracker.experiment_id()], max_results=50)
    children = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == parent_id]
    stages = sorted((x.data.tags["stage"], x.info.status) for x in children)
    assert stages == [("retrain", "FINISHED"), ("retrain", "KILLED"), ("search", "FINISHED")]
    for x in children:
        assert x.data.tags["method"] == "optfs" and x.data.tags["backbone"] == "deepfm"
    parent = client.get_run(parent_id)
    retrain = next(x for x in children if x.data.tags["stage"] == "retrain" and x.info.status == "FINISHED")
    assert parent.data.metrics["test_auc"] == retrain.data.metrics["test_auc"] == r.metrics["test_auc"]
    assert parent.data.tags["model"] == "deepfm+optfs" and "features_kept" in parent.data.metrics
    search_done = json.loads((folder / "search" / "done.json").read_text())
    assert r.metrics["features_kept"] == search_done["metrics"]["features_kept"]

    # a third run finds the method finished: nothing new is started
    assert train_one(cfg, quiet=True, extra_tags={"stage": "final"}).run_id == parent_id
    assert len(client.search_runs([tracker.experiment_id()], max_results=50)) == len(runs)

    # the plain backbone beside it on the board, with the features-kept column
    plain = compose([f"{k}={v}" for k, v in (("model", "deepfm"),)] + [
        o for o in ("data=movielens_small", "data.rows=6000", "model.params.hidden_units=[16]", "train.max_epochs=1",
                    "train.num_threads=1", "train.device=cpu", "train.batch_size=512",
                    f"paths.data={tmp_path / 'data'}", f"paths.checkpoints={tmp_path / 'ckpt'}",
                    f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}")])
    train_one(plain, quiet=True, extra_tags={"stage": "final"})
    boards = build(load_runs(str(cfg.tracking.uri), [str(cfg.tracking.experiment)]), published={})
    rows = {row.model: row for row in boards["movielens_small"].rows}
    assert set(rows) == {"deepfm", "deepfm+optfs"}
    assert rows["deepfm+optfs"].kept_fraction == pytest.approx(r.metrics["features_kept"])
    assert rows["deepfm"].kept_fraction is None
    from bars.leaderboard_render import render_csv

    csv = render_csv(boards["movielens_small"])
    assert "kept_fraction" in csv.splitlines()[0]


def test_search_temperature_follows_the_official_schedule(tmp_path):
    """maskTrainer.py@9500f1f7 lines 65 and 102-103: temp starts at 1 and is multiplied by
    final_temp ** (1 / (search_epoch - 1)) before every epoch after the first."""
    from bars.methods import OptFSConfig
    from bars.methods.optfs import SearchStage

    stage = SearchStage(OptFSConfig(search_epochs=5, final_temperature=200.0), tmp_path)
    temp, inc = 1.0, 200.0 ** (1.0 / 4)
    for epoch in range(5):
        if epoch > 0:
            temp *= inc
        assert stage.temperature(epoch) == pytest.approx(temp, rel=1e-12)
    assert stage.temperature(4) == pytest.approx(200.0)
