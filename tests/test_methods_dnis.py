"""DNIS on the methods axis (bars.methods.dnis, issue 13 item 5): real training on a small slice of the shipped
movielens data, a real MLflow store; the soft selection, the selection step and the pruning against the paper's
formulas written out by hand on real rows.

DNIS has no public code, so "the paper's equations" are the formulas of its method section (arXiv 2006.04466,
section 3), written out here: the soft selection layer ``e~_i = e_i (.) alpha_{k(i)}`` (``k(i)``: the block of
feature ``i``; bars' blocks are the fields), the bi-level problem ``min_alpha L_val(w*(alpha), alpha)`` with
``w*(alpha) = argmin_w L_train(w, alpha)`` solved by alternating gradient steps (bars: first-order, DARTS xi = 0;
plus ``l1 * sum |alpha|``), and the pruning "keep the dimensions with ``|alpha|`` above a threshold". The
paper's equation numbers are not cited: its text was not retrievable where this was written (only the abstract);
docs/fidelity.md "DNIS (issue 13)" lists every assumption.
"""

from __future__ import annotations

import json

import pytest
import torch
from _methods_common import method_cfg

from bars.config import compose
from bars.validate import ConfigError, validate

DNIS_RUN = ["method=dnis", "method.search_epochs=2", "method.alpha_lr=0.05", "method.keep_ratio=0.5"]


def _cfg(tmp_path, model: str, *extra: str, tracked: bool = True):
    return method_cfg(tmp_path, model, DNIS_RUN, *extra, tracked=tracked)


def test_unknown_or_bad_dnis_keys_are_errors_naming_the_key():
    validate(compose(["model=deepfm", "method=dnis"]), "train")
    with pytest.raises(ConfigError, match=r"unknown method.dnis key\(s\) \['keep_ration'\]"):
        validate(compose(["model=deepfm", "method=dnis", "+method.keep_ration=0.3"]), "train")
    with pytest.raises(ConfigError, match="method.keep_ratio and method.threshold: set exactly one"):
        validate(compose(["model=deepfm", "method=dnis", "method.threshold=0.1"]), "train")
    with pytest.raises(ConfigError, match=r"method.keep_ratio must be a number in \(0, 1\]"):
        validate(compose(["model=deepfm", "method=dnis", "method.keep_ratio=1.5"]), "train")
    with pytest.raises(ConfigError, match="method.alpha_lr must be a number > 0"):
        validate(compose(["model=deepfm", "method=dnis", "method.alpha_lr=0"]), "train")
    validate(compose(["model=deepfm", "method=dnis", "method.keep_ratio=null", "method.threshold=0.05"]), "train")
    with pytest.raises(ConfigError, match="method.min_dims must be an int >= 0"):
        validate(compose(["model=deepfm", "method=dnis", "method.min_dims=-1"]), "train")


def test_sweep_space_merges_the_dnis_space_and_its_study_is_its_own():
    from bars.search import space_of

    space = space_of(compose(["model=deepfm", "method=dnis"]))
    assert {"method.alpha_lr", "method.l1", "method.search_epochs"} <= set(space)
    assert "method.sparsity" not in space  # OptFS's space is not merged
    assert compose(["model=deepfm", "method=dnis"]).sweep.study == "deepfm+dnis__movielens_small"


@pytest.mark.parametrize("model", ["fm", "dcn", "ipnn", "dnn"])
def test_dnis_over_each_backbone_prunes_to_the_target_ratio(tmp_path, model):
    from bars.models.layers import prune_mask
    from bars.run import train_one

    r = train_one(_cfg(tmp_path, model, tracked=False), quiet=True)
    m = r.metrics
    assert r.run_id is None and 0.5 < m["test_auc"] < 1
    folder = next((tmp_path / "results" / "methods").iterdir())
    assert {p.name for p in (folder / "search").iterdir()} >= {"alpha.pt", "mask.pt", "done.json"}
    alpha = torch.load(folder / "search" / "alpha.pt", weights_only=True)["alpha"]
    keep = torch.load(folder / "search" / "mask.pt", weights_only=True)["keep"].bool()
    assert not torch.equal(alpha, torch.ones_like(alpha))  # the selection step moved alpha
    fields = ["user", "movie", "year", "hour", "weekday"]  # movielens_small's categorical fields, spec order
    spec = json.loads(next((tmp_path / "data" / "movielens_small").iterdir()).joinpath("feature_spec.json").read_text())
    vocab = {f["name"]: f["vocab_size"] for f in spec["features"]}
    rows = torch.tensor([vocab[f] - 1 for f in fields])
    assert tuple(alpha.shape) == (5, 10) and torch.equal(prune_mask(alpha, rows, keep_ratio=0.5), keep)
    kept = int((keep.sum(1) * rows).sum())
    total = int(rows.sum()) * 10
    assert m["embedding_params_kept_count"] == kept and m["embedding_params_total"] == total
    assert m["embedding_params_kept"] == pytest.approx(kept / total) and kept / total <= 0.5
    # the target is hit: one more value of |alpha| would keep more than half
    nxt = alpha.abs()[~keep].max()
    assert int(((alpha.abs() >= nxt).sum(1) * rows).sum()) > 0.5 * total
    assert [m[f"dims_{f}"] for f in fields] == keep.sum(1).float().tolist()  # mixed dimensions per field


def test_stages_are_child_runs_and_the_board_shows_deepfm_dnis_with_its_kept_column(tmp_path):
    from bars.leaderboard import build
    from bars.leaderboard_render import render_csv, render_markdown
    from bars.records import get_client, load_runs
    from bars.run import train_one
    from bars.tracking import tracker_of

    cfg = _cfg(tmp_path, "deepfm", "train.max_epochs=2")
    calls = {"n": 0}

    def interrupt(log):  # a Ctrl-C in the retrain's first epoch
        calls["n"] += 1
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_one(cfg, quiet=True, extra_tags={"stage": "final"}, on_epoch=interrupt)
    folder = next((tmp_path / "results" / "methods").iterdir())
    assert (folder / "search" / "done.json").exists() and not (folder / "retrain" / "done.json").exists()
    parent_id = json.loads((folder / "method.json").read_text())["parent_run_id"]
    r = train_one(cfg, quiet=True, extra_tags={"stage": "final"})  # resumed: the search is not run again
    tracker = tracker_of(cfg)
    assert r.run_id == parent_id and tracker.run_status(parent_id) == "FINISHED"
    client = get_client(str(cfg.tracking.uri))
    runs = client.search_runs([tracker.experiment_id()], max_results=50)
    children = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == parent_id]
    assert sorted((x.data.tags["stage"], x.info.status) for x in children) == [
        ("retrain", "FINISHED"), ("retrain", "KILLED"), ("search", "FINISHED")]
    assert all(x.data.tags["method"] == "dnis" and x.data.tags["backbone"] == "deepfm" for x in children)
    search = next(x for x in children if x.data.tags["stage"] == "search")
    assert search.data.metrics["selection_steps"] == 2 * 10  # one selection step per training step (4,724 rows / 512)
    parent = client.get_run(parent_id)
    retrain = next(x for x in children if x.data.tags["stage"] == "retrain" and x.info.status == "FINISHED")
    assert parent.data.metrics["test_auc"] == retrain.data.metrics["test_auc"] == r.metrics["test_auc"]
    assert parent.data.tags["model"] == "deepfm+dnis"
    assert parent.data.metrics["embedding_params_kept"] == search.data.metrics["embedding_params_kept"] <= 0.5

    plain = compose(["model=deepfm", "data=movielens_small", "data.rows=6000", "model.params.hidden_units=[16]",
                     "train.max_epochs=1", "train.num_threads=1", "train.device=cpu", "train.batch_size=512",
                     f"paths.data={tmp_path / 'data'}", f"paths.checkpoints={tmp_path / 'ckpt'}",
                     f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    train_one(plain, quiet=True, extra_tags={"stage": "final"})
    boards = build(load_runs(str(cfg.tracking.uri), [str(cfg.tracking.experiment)]), published={})
    rows = {row.model: row for row in boards["movielens_small"].rows}
    assert set(rows) == {"deepfm", "deepfm+dnis"}
    row = rows["deepfm+dnis"]
    assert row.method == "dnis" and row.kept_fraction == pytest.approx(r.metrics["embedding_params_kept"])
    assert row.kept_count == r.metrics["embedding_params_kept_count"]
    assert row.kept_total == r.metrics["embedding_params_total"] and rows["deepfm"].kept_fraction is None
    assert "kept_fraction" in render_csv(boards["movielens_small"]).splitlines()[0]
    assert "DNIS: emb. params" in render_markdown(boards["movielens_small"], "test")


# ---------------------------------------------------------------------- against the paper's formulas, by hand

def _movielens(tmp_path):
    from bars.data.loader import load_dataset
    from bars.data.prepare import prepare

    cfg = _cfg(tmp_path, "deepfm", tracked=False)
    return load_dataset(prepare(cfg))


def test_soft_selection_and_pruning_equal_the_papers_formulas_on_real_rows(tmp_path):
    """e~ = e (.) alpha_{k(i)} per row and field, looked up by hand in each field's own table; then the pruning
    decision by a plain loop: entries in decreasing |alpha|, a whole value of |alpha| at a time, while the
    parameters kept (sum_f vocab_f x dims_f) stay within keep_ratio."""
    from bars.methods.dnis import SelectedModel, embedding_width
    from bars.models import build
    from bars.models.layers import DimensionSelection, prune_mask

    ds = _movielens(tmp_path)
    torch.manual_seed(3)
    backbone = build("deepfm", ds.spec, {"embedding_dim": 10, "hidden_units": [16]})
    emb = backbone.embedding
    with torch.no_grad():
        emb.weight.normal_()
    d = embedding_width(backbone)
    assert d == 10
    sel = DimensionSelection(ds.spec, d)
    alpha = torch.randn(len(sel.field_names), d, generator=torch.Generator().manual_seed(4)).round(decimals=1)
    with torch.no_grad():
        sel.weight.copy_(alpha)
    SelectedModel(backbone, sel)
    xb, _ = next(ds.splits["test"].batches(64, shuffle=False))
    out = emb(xb)
    for f, name in enumerate(sel.field_names):
        table = emb.table(name)  # [vocab - 1, d]: rows of indices 1..vocab-1
        pos = emb.field_names.index(name)
        for b in range(64):
            i = int(xb[name][b])
            e = table[i - 1] if i > 0 else torch.zeros(d)
            torch.testing.assert_close(out[b, pos], e * alpha[f])

    rows = [ds.spec[n].vocab_size - 1 for n in sel.field_names]
    total = sum(rows) * d
    for ratio in (0.2, 0.5, 0.8):
        budget = ratio * total
        keep = [[False] * d for _ in rows]
        kept = 0
        values = sorted({abs(float(a)) for a in alpha.flatten()}, reverse=True)
        for v in values:
            group = [(f, j) for f in range(len(rows)) for j in range(d) if abs(float(alpha[f, j])) == v]
            cost = sum(rows[f] for f, _ in group)
            if kept + cost > budget:
                break
            kept += cost
            for f, j in group:
                keep[f][j] = True
        assert prune_mask(alpha, torch.tensor(rows), keep_ratio=ratio).tolist() == keep
    assert prune_mask(alpha, torch.tensor(rows), threshold=0.5).tolist() == (alpha.abs() > 0.5).tolist()


def test_one_selection_step_is_a_first_order_step_on_the_validation_loss(tmp_path):
    """Before the backbone's step on a training batch: alpha <- Adam(alpha, dL_val/dalpha + l1 sign(alpha)) on a
    validation batch with the weights fixed; the backbone's own step then leaves alpha where it is."""
    from bars.methods import DNISConfig
    from bars.methods.dnis import SearchStage
    from bars.models import build
    from bars.objective import loss_function
    from bars.train import TrainConfig, TrainStep

    ds = _movielens(tmp_path)
    valid = ds.splits["valid"]

    torch.manual_seed(5)
    backbone = build("fm", ds.spec, {"embedding_dim": 10})
    cfg = DNISConfig(alpha_lr=0.01, l1=0.1)
    train_cfg = TrainConfig.from_cfg({"batch_size": 4096, "device": "cpu"})  # one validation batch: all 642 rows
    stage = SearchStage(cfg, tmp_path)
    model = stage.wrap(backbone, ds.spec, train_cfg, seed=1)
    model.init_bars_(1e-1)
    stage.bind_data(ds.splits)
    sel = model.selection
    with torch.no_grad():
        sel.weight.copy_(1 + 0.1 * torch.randn(sel.weight.shape, generator=torch.Generator().manual_seed(6)))
    a0 = sel.weight.detach().clone()
    w0 = {k: v.clone() for k, v in backbone.state_dict().items()}
    # by hand: the validation loss of the whole split (one batch; FM has no dropout, so row order does not matter)
    xv, yv = next(valid.batches(4096, shuffle=False))
    sel.grad_on = True
    loss = loss_function("bce")(backbone(xv), yv)
    sel.grad_on = False
    (g,) = torch.autograd.grad(loss, [sel.weight])
    g = g + 0.1 * torch.sign(a0)
    expected = a0 - 0.01 * g / (g.abs() + 1e-8)  # Adam's first step: lr * m_hat / (sqrt(v_hat) + eps)
    model.train()
    step = TrainStep(model, train_cfg)
    xt, yt = next(ds.splits["train"].batches(512, shuffle=False))
    step(xt, yt)
    torch.testing.assert_close(sel.weight.detach(), expected, rtol=0, atol=1e-6)
    assert model.searcher is not None and model.searcher.steps == 1
    assert not any(p is sel.weight for p in step.params)  # the trainer's Adam never holds alpha
    changed = [k for k, v in backbone.state_dict().items() if not torch.equal(v, w0[k])]
    assert changed  # the backbone's step ran after the selection step


@pytest.mark.parametrize("mode", ["search", "search_scaled"])
def test_retrain_from_the_search_starts_from_its_last_weights(tmp_path, mode):
    """bars switch ``method.retrain_from``: the retrain loads the search's last backbone weights (``search``), with
    ``alpha`` multiplied into each selected field's table columns (``search_scaled``), and fit does not
    re-initialise them; ``scratch`` (the paper's) leaves initialisation to fit."""
    from bars.methods import DNISConfig
    from bars.methods.dnis import RetrainStage
    from bars.models import build
    from bars.models.layers import FeatureEmbedding
    from bars.train import save_checkpoint
    from tests._tiny_ctr import SPEC

    torch.manual_seed(0)
    searched = build("deepfm", SPEC, {"embedding_dim": 4, "hidden_units": [8]})
    for p in searched.parameters():
        torch.nn.init.normal_(p)
    alpha = torch.rand(2, 4) + 0.5
    keep = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
    (tmp_path / "search").mkdir()
    save_checkpoint(searched, tmp_path / "search" / "weights.pt")
    save_checkpoint({"alpha": alpha}, tmp_path / "search" / "alpha.pt")
    save_checkpoint({"keep": keep}, tmp_path / "search" / "mask.pt")
    assert RetrainStage(DNISConfig(), tmp_path).init  # the paper's: from scratch
    stage = RetrainStage(DNISConfig(retrain_from=mode), tmp_path)
    assert not stage.init
    model = stage.wrap(build("deepfm", SPEC, {"embedding_dim": 4, "hidden_units": [8]}), SPEC, None, 0)
    got, want = model.backbone.state_dict(), searched.state_dict()
    table = next(f"{n}.weight" for n, m in model.backbone.named_modules()
                 if isinstance(m, FeatureEmbedding) and m.dim == 4)  # the d-wide table DNIS selects over
    emb = model.backbone.get_submodule(table[: -len(".weight")])
    for k in want:
        if mode == "search" or k != table:
            assert torch.equal(got[k], want[k]), k
    if mode == "search_scaled":
        for i, name in enumerate(("a", "b")):
            lo, n = emb._offset[name], SPEC[name].vocab_size - 1
            assert torch.equal(got[table][lo:lo + n], want[table][lo:lo + n] * alpha[i])
        assert torch.equal(got[table][0], want[table][0])  # the padding row
    assert torch.equal(model.selection.keep, keep) and model.selection.hard
    with pytest.raises(ConfigError, match="method.retrain_from must be"):
        validate(compose(["model=deepfm", "method=dnis", "method.retrain_from=warm"]), "train")
    with pytest.raises(ConfigError, match="method.prune must be"):
        validate(compose(["model=deepfm", "method=dnis", "method.prune=cost"]), "train")
    with pytest.raises(ConfigError, match="method.prune=per_field prunes against the keep_ratio budget"):
        validate(compose(["model=deepfm", "method=dnis", "method.prune=per_field", "method.keep_ratio=null",
                          "method.threshold=0.1"]), "train")
