"""OptEmbed on the methods axis (bars.methods.optembed, issue 13 item 3): real training on a small slice of the
shipped movielens data, a real MLflow store; the three stages as child runs, resume, the board row with both kept
figures; the threshold's SGD step and the evolutionary search against the official code's procedure written out
(``supernet.py``, ``evolution.py`` of https://github.com/fuyuanlyu/OptEmbed at 0feda5f8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _methods_common import SMALL, method_cfg

from bars.config import compose
from bars.validate import ConfigError, validate

OPTEMBED_RUN = ["method=optembed", "method.iterations=3", "method.keep_num=3", "method.mutation_num=3", "method.crossover_num=3", "method.threshold_lr=0.1", "method.threshold_reg=0.01"]


def _cfg(tmp_path, model: str, *extra: str, tracked: bool = True):
    return method_cfg(tmp_path, model, OPTEMBED_RUN, *extra, tracked=tracked)


def test_unknown_or_bad_optembed_keys_are_errors_naming_the_key():
    validate(compose(["model=deepfm", "method=optembed"]), "train")
    with pytest.raises(ConfigError, match=r"unknown method.optembed key\(s\) \['mutation_number'\]"):
        validate(compose(["model=deepfm", "method=optembed", "+method.mutation_number=3"]), "train")
    with pytest.raises(ConfigError, match="method.norm must be 1 or 2"):
        validate(compose(["model=deepfm", "method=optembed", "method.norm=3"]), "train")
    with pytest.raises(ConfigError, match=r"method.mutation_prob must be a number in \[0, 1\]"):
        validate(compose(["model=deepfm", "method=optembed", "method.mutation_prob=1.5"]), "train")
    with pytest.raises(ConfigError, match="method.iterations must be an int >= 1"):
        validate(compose(["model=deepfm", "method=optembed", "method.iterations=0"]), "train")
    with pytest.raises(ConfigError, match="method.mutation_num \\+ method.crossover_num must be >= 1"):
        validate(compose(["model=deepfm", "method=optembed", "method.mutation_num=0", "method.crossover_num=0"]),
                 "train")
    with pytest.raises(ConfigError, match="method.keep_num \\+ method.mutation_num must be >= 1"):
        validate(compose(["model=deepfm", "method=optembed", "method.mutation_num=0", "method.keep_num=0"]), "train")
    with pytest.raises(ConfigError, match="method.threshold_lr must be a number >= 0"):
        validate(compose(["model=deepfm", "method=optembed", "method.threshold_lr=-1"]), "train")
    validate(compose(["model=deepfm", "method=optembed", "method.supernet_epochs=3"]), "train")
    validate(compose(["model=deepfm", "method=optembed", "method.threshold_level=feature"]), "train")
    with pytest.raises(ConfigError, match="method.threshold_level must be 'field' or 'feature'"):
        validate(compose(["model=deepfm", "method=optembed", "method.threshold_level=row"]), "train")


def test_sweep_space_merges_the_optembed_space_and_its_study_is_its_own():
    from bars.search import space_of

    space = space_of(compose(["model=deepfm", "method=optembed"]))
    assert {"method.threshold_lr", "method.threshold_reg"} <= set(space)
    assert "method.sparsity" not in space and "method.alpha_lr" not in space  # OptFS's, DNIS's not merged
    assert compose(["model=deepfm", "method=optembed"]).sweep.study == "deepfm+optembed__movielens_small"


def _vocab_rows(tmp_path):
    spec = json.loads(next((tmp_path / "data" / "movielens_small").iterdir()).joinpath("feature_spec.json").read_text())
    vocab = {f["name"]: f["vocab_size"] for f in spec["features"]}
    fields = ["user", "movie", "year", "hour", "weekday"]  # movielens_small's categorical fields, spec order
    return fields, torch.tensor([vocab[f] - 1 for f in fields])


@pytest.mark.parametrize("model,level", [("fm", "field"), ("dcn", "field"), ("ipnn", "feature"), ("dnn", "field")])
def test_optembed_over_each_backbone(tmp_path, model, level):
    from bars.methods import method_config
    from bars.methods.optembed import EvolutionStage
    from bars.run import train_one

    cfg = _cfg(tmp_path, model, f"method.threshold_level={level}", tracked=False)
    r = train_one(cfg, quiet=True)
    m = r.metrics
    assert r.run_id is None and 0.5 < m["test_auc"] < 1
    folder = next((tmp_path / "results" / "methods").iterdir())
    assert {p.name for p in (folder / "supernet").iterdir()} >= {"supernet.pt", "rows.pt", "done.json"}
    assert {p.name for p in (folder / "evolution").iterdir()} >= {"arch.pt", "history.json", "done.json"}
    arch = torch.load(folder / "evolution" / "arch.pt", weights_only=True)
    rows = torch.load(folder / "supernet" / "rows.pt", weights_only=True)["row_keep"]
    assert torch.equal(arch["row_keep"], rows)  # the evolution searches dims under the supernet's row mask
    fields, vocab_rows = _vocab_rows(tmp_path)
    dims = arch["dims"]
    assert tuple(dims.shape) == (5,) and bool(((dims >= 1) & (dims <= 10)).all())
    assert [m[f"dims_{f}"] for f in fields] == dims.float().tolist()
    kept_rows, offset = [], 1
    for n in vocab_rows.tolist():
        kept_rows.append(int(rows[offset: offset + n].sum()))
        offset += n
    assert [m[f"rows_{f}"] for f in fields] == [float(k) for k in kept_rows]
    assert m["embedding_rows_total"] == int(vocab_rows.sum()) and m["embedding_rows_kept_count"] == sum(kept_rows)
    assert m["embedding_params_total"] == int(vocab_rows.sum()) * 10
    assert m["embedding_params_kept_count"] == sum(k * int(d) for k, d in zip(kept_rows, dims, strict=True))
    assert m["embedding_params_kept"] == pytest.approx(m["embedding_params_kept_count"] / m["embedding_params_total"])
    assert m["embedding_rows_kept"] < 1  # threshold_lr 0.1 and a strong regulariser prune rows in one epoch
    # the evolution is seeded: run again on the same supernet, same seed -> the same dims and history
    history = json.loads((folder / "evolution" / "history.json").read_text())
    again = EvolutionStage(method_config(cfg), folder).run_stage(cfg, parent_run_id=None, extra_tags={}, quiet=True)
    assert torch.equal(torch.load(folder / "evolution" / "arch.pt", weights_only=True)["dims"], dims)
    assert json.loads((folder / "evolution" / "history.json").read_text()) == history
    assert again.metrics["val_auc"] == pytest.approx(max(h["best"] for h in history))


def test_stages_are_child_runs_resume_and_the_board_shows_deepfm_optembed_with_both_kept_columns(tmp_path):
    from bars.leaderboard import build
    from bars.leaderboard_render import render_csv, render_markdown
    from bars.records import get_client, load_runs
    from bars.run import train_one
    from bars.tracking import tracker_of

    cfg = _cfg(tmp_path, "deepfm", "train.max_epochs=2")

    def interrupt(log):  # a Ctrl-C in the retrain's first epoch
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_one(cfg, quiet=True, extra_tags={"stage": "final"}, on_epoch=interrupt)
    folder = next((tmp_path / "results" / "methods").iterdir())
    assert (folder / "supernet" / "done.json").exists() and (folder / "evolution" / "done.json").exists()
    assert not (folder / "retrain" / "done.json").exists()
    arch_before = (folder / "evolution" / "arch.pt").read_bytes()
    parent_id = json.loads((folder / "method.json").read_text())["parent_run_id"]
    r = train_one(cfg, quiet=True, extra_tags={"stage": "final"})  # resumed: supernet and evolution not run again
    assert (folder / "evolution" / "arch.pt").read_bytes() == arch_before
    tracker = tracker_of(cfg)
    assert r.run_id == parent_id and tracker.run_status(parent_id) == "FINISHED"
    client = get_client(str(cfg.tracking.uri))
    runs = client.search_runs([tracker.experiment_id()], max_results=50)
    children = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == parent_id]
    assert sorted((x.data.tags["stage"], x.info.status) for x in children) == [
        ("evolution", "FINISHED"), ("retrain", "FINISHED"), ("retrain", "KILLED"), ("supernet", "FINISHED")]
    assert all(x.data.tags["method"] == "optembed" and x.data.tags["backbone"] == "deepfm" for x in children)
    evo = next(x for x in children if x.data.tags["stage"] == "evolution")
    hist = client.get_metric_history(evo.info.run_id, "evo_best_so_far_auc")
    assert [h.step for h in hist] == [1, 2, 3]  # one record per generation
    assert [h.value for h in hist] == sorted(h.value for h in hist)  # the best so far never drops
    assert evo.data.metrics["val_auc"] == pytest.approx(hist[-1].value)
    supernet = next(x for x in children if x.data.tags["stage"] == "supernet")
    assert supernet.data.metrics["threshold_steps"] == 2 * 10  # one SGD step of the thresholds per training step
    parent = client.get_run(parent_id)
    retrain = next(x for x in children if x.data.tags["stage"] == "retrain" and x.info.status == "FINISHED")
    assert parent.data.metrics["test_auc"] == retrain.data.metrics["test_auc"] == r.metrics["test_auc"]
    assert parent.data.tags["model"] == "deepfm+optembed"
    assert parent.data.metrics["embedding_params_kept"] == evo.data.metrics["embedding_params_kept"]
    assert parent.data.metrics["embedding_rows_kept"] == supernet.data.metrics["embedding_rows_kept"]

    plain = compose(["model=deepfm", "data=movielens_small", "data.rows=6000", "model.params.hidden_units=[16]",
                     "train.max_epochs=1", "train.num_threads=1", "train.device=cpu", "train.batch_size=512",
                     f"paths.data={tmp_path / 'data'}", f"paths.checkpoints={tmp_path / 'ckpt'}",
                     f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    train_one(plain, quiet=True, extra_tags={"stage": "final"})
    boards = build(load_runs(str(cfg.tracking.uri), [str(cfg.tracking.experiment)]), published={})
    rows = {row.model: row for row in boards["movielens_small"].rows}
    assert set(rows) == {"deepfm", "deepfm+optembed"}
    row = rows["deepfm+optembed"]
    assert row.method == "optembed" and row.kept_fraction == pytest.approx(r.metrics["embedding_params_kept"])
    assert row.kept_count == r.metrics["embedding_params_kept_count"]
    assert row.kept_total == r.metrics["embedding_params_total"]
    assert row.kept2_fraction == pytest.approx(r.metrics["embedding_rows_kept"])
    assert row.kept2_count == r.metrics["embedding_rows_kept_count"]
    assert row.kept2_total == r.metrics["embedding_rows_total"]
    assert rows["deepfm"].kept_fraction is None and rows["deepfm"].kept2_fraction is None
    header = render_csv(boards["movielens_small"]).splitlines()[0]
    assert "kept_fraction" in header and "kept2_fraction" in header
    md = render_markdown(boards["movielens_small"], "test")
    assert "OptEmbed: emb. rows" in md and f"{row.kept2_fraction:.3f}" in md


# ------------------------------------------------------------------------ the procedure, against the official one

def test_the_thresholds_take_one_sgd_step_per_training_step_outside_the_trainers_adam(tmp_path):
    """supernet.py@0feda5f8 SuperNet.__update: loss = BCE + alpha * sum exp(-t); backward; the thresholds' own
    SGD (lr t_lr, no weight decay) steps them; the network's Adam steps the rest."""
    from bars.data.loader import load_dataset
    from bars.data.prepare import prepare
    from bars.methods import OptEmbedConfig
    from bars.methods.optembed import SupernetStage
    from bars.models import build
    from bars.objective import loss_function
    from bars.train import TrainConfig, TrainStep

    ds = load_dataset(prepare(_cfg(tmp_path, "fm", tracked=False)))
    torch.manual_seed(5)
    cfg = OptEmbedConfig(threshold_lr=0.05, threshold_reg=0.3)
    train_cfg = TrainConfig.from_cfg({"batch_size": 512, "device": "cpu", "net_regularizer": 0.0,
                                      "embedding_regularizer": 0.0})
    stage = SupernetStage(cfg, tmp_path)
    model = stage.wrap(build("fm", ds.spec, {"embedding_dim": 10}), ds.spec, train_cfg, seed=1)
    model.init_bars_(0.05)
    mask = model.mask
    with torch.no_grad():
        mask.threshold.copy_(torch.tensor([0.30, 0.25, 0.35, 0.2, 0.3]))
    t0 = mask.threshold.detach().clone()
    xt, yt = next(ds.splits["train"].batches(512, shuffle=False))
    model.train()
    # by hand: the same forward (same random dimension draw), the gradient of the objective w.r.t. t
    torch.manual_seed(11)
    loss = loss_function("bce")(model(xt), yt) + 0.3 * torch.exp(-mask.threshold).sum()
    (g,) = torch.autograd.grad(loss, [mask.threshold])
    assert g.abs().sum() > 0
    step = TrainStep(model, train_cfg)
    assert not any(p is mask.threshold for p in step.params)  # the trainer's Adam never holds the thresholds
    torch.manual_seed(11)
    step(xt, yt)
    torch.testing.assert_close(mask.threshold.detach(), t0 - 0.05 * g, rtol=0, atol=1e-7)
    assert mask.threshold.grad is None and model.threshold_steps == 1


def _official_search(score, num_fields, dim, cfg, seed):
    """The loop of evolution.py@0feda5f8 EvolutionSearcher.search, written out over plain lists (the official
    candidates are dimension *indices* in [0, d): here dims = index + 1), without its two slips (docs/fidelity.md):
    the mutation copies its parent (the official one edits the parent tensor in place) and the crossover point is
    drawn over the fields. Random draws in the same order as bars.methods.optembed.evolve."""
    import random

    rng = random.Random(seed)
    cands = [[rng.randint(1, dim) for _ in range(num_fields)]
             for _ in range(cfg.keep_num + cfg.mutation_num + cfg.crossover_num)]
    best, best_auc = None, 0.0
    for _ in range(cfg.iterations):
        aucs = [score(c) for c in cands]
        idx = sorted(range(len(cands)), key=lambda i: 1 - aucs[i])  # np.argsort([1 - auc]) (stable here)
        cands = [cands[i] for i in idx]
        if best_auc < aucs[idx[0]]:
            best, best_auc = list(cands[0]), aucs[idx[0]]
        mutation = []
        for i in range(cfg.mutation_num):
            origin = list(cands[i])
            for f in range(num_fields):
                if rng.random() < cfg.mutation_prob:
                    origin[f] = rng.randint(1, dim - 1) + 1  # official index randint(1, latent_dim) -> dims 2..d
            mutation.append(origin)
        crossover, seen = [], set()
        for _ in range(cfg.crossover_num):
            x, y = rng.randint(0, cfg.crossover_num), rng.randint(0, cfg.crossover_num)
            while (x, y) in seen:
                x, y = rng.randint(0, cfg.crossover_num), rng.randint(0, cfg.crossover_num)
            seen.add((x, y))
            point = rng.randint(1, num_fields - 1)
            crossover.append(cands[x][:point] + cands[y][point:])
        cands = cands[:cfg.keep_num] + mutation + crossover
    return best, best_auc


@pytest.mark.parametrize("seed", [0, 1, 2021])
def test_evolution_is_the_official_search_and_is_seeded(seed):
    from bars.methods import OptEmbedConfig
    from bars.methods.optembed import evolve

    target = [3, 9, 1, 6, 10, 2, 7]

    def score(c):  # a deterministic stand-in for the validation AUC, with a unique optimum
        return 1.0 / (1.0 + sum((a - b) ** 2 for a, b in zip(c, target, strict=True)) + 0.001 * sum(c))

    cfg = OptEmbedConfig(iterations=30)
    best, best_score, history = evolve(score, 7, 10, cfg, seed)
    assert (best, best_score) == _official_search(score, 7, 10, cfg, seed)
    assert evolve(score, 7, 10, cfg, seed)[0] == best  # same seed, same dims
    assert len(history) == 30 and [h["generation"] for h in history] == list(range(1, 31))
    so_far = [h["best_so_far"] for h in history]
    assert so_far == sorted(so_far) and so_far[-1] == best_score == score(best)
    assert best_score > history[0]["best"]  # the search improves on its random start
    others = {tuple(evolve(score, 7, 10, OptEmbedConfig(iterations=2), s)[0]) for s in range(5)}
    assert len(others) > 1  # the seed matters


def test_a_parameter_budget_keeps_the_evolution_within_it_and_is_off_by_default():
    import dataclasses

    from bars.methods import OptEmbedConfig
    from bars.methods.optembed import evolve

    rows = [900, 60, 20, 10, 5, 3, 2]  # one large field, as Frappe's item

    def cost(c):
        return sum(r * d for r, d in zip(rows, c, strict=True)) / (sum(rows) * 10)

    def score(c):  # more dimensions score higher: unconstrained, the search goes large
        return sum(c) + 0.01 * c[0]

    cfg = OptEmbedConfig(iterations=10)
    free, _, _ = evolve(score, 7, 10, cfg, 2021)
    assert evolve(score, 7, 10, cfg, 2021, cost=cost)[0] == free  # null budget: the cost changes nothing
    assert cost(free) > 0.5
    seen = []
    budgeted = dataclasses.replace(cfg, max_params_kept=0.5)
    best, best_score, _ = evolve(lambda c: seen.append(list(c)) or score(c), 7, 10, budgeted, 2021, cost=cost)
    assert cost(best) <= 0.5 and best_score == score(best) and seen and all(cost(c) <= 0.5 for c in seen)
    assert best[0] < free[0] and max(best[1:]) == 10  # the budget comes out of the large field
    with pytest.raises(ValueError, match=r"method.max_params_kept=0.05: even 1 dimension\(s\) per field keep\(s\) 0.1000"):
        evolve(score, 7, 10, dataclasses.replace(cfg, max_params_kept=0.05), 2021, cost=cost)
    with pytest.raises(ConfigError, match=r"method.max_params_kept must be null or a number in \(0, 1\]"):
        validate(compose(["model=deepfm", "method=optembed", "method.max_params_kept=1.5"]), "train")
    validate(compose(["model=deepfm", "method=optembed", "method.max_params_kept=0.5"]), "train")


def test_a_retrain_under_full_masks_is_plain_training(tmp_path):
    """Every row kept and every dimension: the retrain stage computes exactly what plain training does (same seed,
    same initialisation, same batches), so a difference in the measured rows comes from the masks alone."""
    from bars.methods import method_config
    from bars.methods.optembed import RetrainStage
    from bars.run import train_one
    from bars.train import save_checkpoint

    cfg = _cfg(tmp_path, "deepfm", "train.max_epochs=2", tracked=False)
    plain = compose([o for o in cfg_overrides(tmp_path) if not o.startswith("method")])
    r_plain = train_one(plain, quiet=True)
    folder = tmp_path / "arch"
    _, vocab_rows = _vocab_rows(tmp_path)
    save_checkpoint({"row_keep": torch.ones(1 + int(vocab_rows.sum())), "dims": torch.full((5,), 10)},
                    folder / "evolution" / "arch.pt")
    r = train_one(cfg, quiet=True, stage=RetrainStage(method_config(cfg), folder))
    assert r.metrics["test_auc"] == r_plain.metrics["test_auc"]
    assert r.metrics["test_logloss"] == r_plain.metrics["test_logloss"]
    assert r.metrics["embedding_params_kept"] == 1.0 and r.metrics["embedding_rows_kept"] == 1.0


def cfg_overrides(tmp_path):
    return ["model=deepfm", "data=movielens_small", "data.rows=6000", "train.max_epochs=2", "train.num_threads=1",
            "train.device=cpu", "train.batch_size=512", f"paths.data={tmp_path / 'data'}",
            f"paths.checkpoints={tmp_path / 'ckpt'}", f"paths.results={tmp_path / 'results'}",
            "tracking.enabled=false", *SMALL["deepfm"]]


def test_retrain_from_the_supernet_starts_from_its_weights_under_the_found_masks(tmp_path):
    """``method.retrain_from=supernet`` (the official ``retrain.py --init_name``): the retrain stage loads the
    supernet's best-epoch weights instead of initialising; the default starts from scratch."""
    from bars.data.prepare import prepare
    from bars.data.spec import FeatureSpec
    from bars.methods import method_config
    from bars.methods.optembed import RetrainStage, SupernetStage
    from bars.models import build
    from bars.train import save_checkpoint

    cfg = _cfg(tmp_path, "deepfm", "method.retrain_from=supernet", tracked=False)
    spec = FeatureSpec.load(Path(prepare(cfg, quiet=True)) / "feature_spec.json")
    mcfg = method_config(cfg)
    folder = tmp_path / "m"

    def backbone():
        return build(str(cfg.model.name), spec, dict(cfg.model.params))

    supernet = SupernetStage(mcfg, folder).wrap(backbone(), spec, None, 0)
    with torch.no_grad():
        for p in supernet.parameters():
            p.normal_()
    save_checkpoint(supernet, folder / "supernet" / "supernet.pt")
    _, rows = _vocab_rows(tmp_path)
    keep = torch.ones(1 + int(rows.sum()))
    keep[1] = 0
    save_checkpoint({"row_keep": keep, "dims": torch.tensor([3, 4, 5, 6, 7])}, folder / "evolution" / "arch.pt")
    stage = RetrainStage(mcfg, folder)
    assert stage.init is False  # fit does not initialise: the weights are the supernet's
    model = stage.wrap(backbone(), spec, None, 0)
    want = {k: v for k, v in supernet.state_dict().items() if k.startswith("backbone.")}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in want.items())
    assert model.mask.mode == "fixed" and model.mask.dims.tolist() == [3, 4, 5, 6, 7]
    assert torch.equal(model.mask.row_keep, keep)
    assert RetrainStage(method_config(_cfg(tmp_path, "deepfm", tracked=False)), folder).init is True  # default
    with pytest.raises(ConfigError, match="method.retrain_from must be 'scratch' or 'supernet'"):
        validate(compose(["model=deepfm", "method=optembed", "method.retrain_from=search"]), "train")


def test_min_row_count_prunes_the_rare_values_rows_from_the_supernet_on_and_is_off_by_default(tmp_path):
    """``method.min_row_count`` (a bars switch, not the paper): the rows of values seen fewer than that many times
    in the training split are zero in the supernet (whatever their norm), in its row mask, in the evolution's and
    the retrain's; 0 (the default) binds nothing. Thresholds frozen at 0 (``threshold_lr 0``) so that every other
    row is kept and the row mask is the frequency rule alone, counted here from the training split independently."""
    from collections import Counter

    from bars.data.loader import load_dataset
    from bars.methods import method_config
    from bars.methods.optembed import SupernetStage
    from bars.run import train_one

    cfg = _cfg(tmp_path, "deepfm", "method.threshold_lr=0", "method.min_row_count=3", tracked=False)
    m = train_one(cfg, quiet=True).metrics
    folder = next((tmp_path / "results" / "methods").iterdir())
    rows = torch.load(folder / "supernet" / "rows.pt", weights_only=True)["row_keep"]
    arch = torch.load(folder / "evolution" / "arch.pt", weights_only=True)
    assert torch.equal(arch["row_keep"], rows)
    ds = load_dataset(next((tmp_path / "data" / "movielens_small").iterdir()))
    fields, vocab_rows = _vocab_rows(tmp_path)
    expected, offset = [1.0], 1
    for f, n in zip(fields, vocab_rows.tolist(), strict=True):
        counts = Counter(ds.splits["train"].column(f).tolist())
        expected += [1.0 if counts.get(v, 0) >= 3 else 0.0 for v in range(1, n + 1)]
        assert m[f"rows_{f}"] == sum(expected[offset: offset + n])
        offset += n
    assert rows.tolist() == expected and 0 < sum(expected[1:]) < int(vocab_rows.sum())
    assert m["embedding_rows_kept_count"] == sum(expected[1:])

    # the supernet's embedding of a forced-off value is zero (eval mode: every dimension kept), others unchanged
    stage = SupernetStage(method_config(cfg), tmp_path / "s")
    from bars.data.spec import FeatureSpec
    from bars.models import build

    spec = FeatureSpec.load(next((tmp_path / "data" / "movielens_small").iterdir()) / "feature_spec.json")
    model = stage.wrap(build(str(cfg.model.name), spec, dict(cfg.model.params)), spec, None, 2021)
    emb = model.mask.owners["movie"]
    batch = dict(ds.splits["train"].features)  # every training row: rare movies among them
    model.eval()
    plain = emb(batch).detach()
    assert model.mask.row_allow is None
    stage.bind_data(ds.splits)
    pruned = emb(batch).detach()
    movie = batch["movie"].long()
    off = model.mask.offsets["movie"] - 1
    allowed = model.mask.row_allow[movie + off].bool()
    i = emb.field_names.index("movie")
    assert not allowed.all() and allowed.any()
    assert torch.equal(pruned[~allowed, i], torch.zeros_like(pruned[~allowed, i]))
    assert torch.equal(pruned[allowed, i], plain[allowed, i])
    off_stage = SupernetStage(method_config(_cfg(tmp_path, "deepfm", tracked=False)), tmp_path / "t")
    off_model = off_stage.wrap(build(str(cfg.model.name), spec, dict(cfg.model.params)), spec, None, 2021)
    off_stage.bind_data(ds.splits)
    assert off_model.mask.row_allow is None  # min_row_count 0: the paper's masks
    with pytest.raises(ConfigError, match=r"method.min_row_count must be an int >= 0, got -1"):
        validate(compose(["model=deepfm", "method=optembed", "method.min_row_count=-1"]), "train")


def test_min_dims_floors_every_candidate_of_the_evolution_and_1_is_the_official_search():
    import dataclasses

    from bars.methods import OptEmbedConfig
    from bars.methods.optembed import evolve

    rows = [900, 60, 20, 10, 5, 3, 2]

    def cost(c):
        return sum(r * d for r, d in zip(rows, c, strict=True)) / (sum(rows) * 10)

    seen = []

    def score(c):  # fewer dimensions score higher: unconstrained, the search goes to the floor
        seen.append(list(c))
        return -sum(c)

    cfg = OptEmbedConfig(iterations=10)
    assert evolve(score, 7, 10, dataclasses.replace(cfg, min_dims=1), 2021) == evolve(score, 7, 10, cfg, 2021)
    assert min(min(c) for c in seen) == 1
    seen.clear()
    floored = dataclasses.replace(cfg, min_dims=4, max_params_kept=0.5)
    best, _, _ = evolve(score, 7, 10, floored, 2021, cost=cost)
    assert seen and all(min(c) >= 4 and cost(c) <= 0.5 for c in seen) and min(best) == 4
    with pytest.raises(ValueError, match=r"method.max_params_kept=0.3: even 4 dimension\(s\) per field keep\(s\) 0.4000"):
        evolve(score, 7, 10, dataclasses.replace(floored, max_params_kept=0.3), 2021, cost=cost)
    with pytest.raises(ValueError, match=r"max_params_kept=0.4 with method.min_dims=4: no feasible candidate"):
        evolve(score, 7, 10, dataclasses.replace(floored, max_params_kept=0.4), 2021, cost=cost)  # only all-4s fit
    with pytest.raises(ValueError, match="method.min_dims=11 is above the embedding width 10"):
        evolve(score, 7, 10, dataclasses.replace(cfg, min_dims=11), 2021)
    with pytest.raises(ConfigError, match=r"method.min_dims must be an int >= 1, got 0"):
        validate(compose(["model=deepfm", "method=optembed", "method.min_dims=0"]), "train")


def test_frequency_blocks_give_rare_and_frequent_values_their_own_dimension_and_bake_bitwise(tmp_path):
    """``method.frequency_blocks`` (a bars switch, not the paper): each field's values split by training count
    (here ``[3]``: seen fewer than 3 times, the rest), a dimension searched and kept per block; the units follow the
    training split's counts (counted here independently), the retrain masks each row to its block's dimension, the
    parameters kept count each block's rows times its dimension, and the baked tables score as the hooked model."""
    from collections import Counter

    from bars.data.loader import load_dataset
    from bars.methods import method_config
    from bars.methods.optembed import RetrainStage
    from bars.run import train_one

    cfg = _cfg(tmp_path, "deepfm", "method.threshold_lr=0", "method.frequency_blocks=[3]", tracked=False)
    m = train_one(cfg, quiet=True).metrics
    folder = next((tmp_path / "results" / "methods").iterdir())
    arch = torch.load(folder / "evolution" / "arch.pt", weights_only=True)
    assert torch.equal(arch["row_unit"], torch.load(folder / "supernet" / "rows.pt", weights_only=True)["row_unit"])
    ds = load_dataset(next((tmp_path / "data" / "movielens_small").iterdir()))
    fields, vocab_rows = _vocab_rows(tmp_path)
    units, offset = [0], 1
    for i, (f, n) in enumerate(zip(fields, vocab_rows.tolist(), strict=True)):
        counts = Counter(ds.splits["train"].column(f).tolist())
        units += [2 * i + (1 if counts.get(v, 0) >= 3 else 0) for v in range(1, n + 1)]
        offset += n
    assert arch["row_unit"].tolist() == units
    dims = arch["dims"].tolist()
    assert len(dims) == 10 and all(1 <= d <= 10 for d in dims)
    per_unit = Counter(units[1:])
    assert m["embedding_params_kept_count"] == sum(per_unit[u] * dims[u] for u in range(10))  # every row kept
    assert m["embedding_rows_kept"] == 1.0 and per_unit[2] > 0 and per_unit[3] > 0  # movie: rare and frequent
    assert [m[f"dims_{f}_b{k}"] for f in fields for k in (0, 1)] == [float(d) for d in dims]
    assert [m[f"rows_{f}_b{k}"] for f in fields for k in (0, 1)] == [float(per_unit[u]) for u in range(10)]

    # the retrain's mask: a row keeps exactly its block's first dims; baking scores bitwise as the hooked model
    stage = RetrainStage(method_config(cfg), folder)
    from bars.data.spec import FeatureSpec
    from bars.models import build

    spec = FeatureSpec.load(next((tmp_path / "data" / "movielens_small").iterdir()) / "feature_spec.json")
    model = stage.wrap(build(str(cfg.model.name), spec, dict(cfg.model.params)), spec, None, 2021)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.normal_()
    model.eval()
    batch = dict(ds.splits["train"].features)
    out = model.mask.owners["movie"](batch).detach()
    i = model.mask.owners["movie"].field_names.index("movie")
    unit = arch["row_unit"][batch["movie"].long() + model.mask.offsets["movie"] - 1]
    width = (out[:, i] != 0).sum(1)
    assert set(unit.tolist()) == {2, 3} and torch.equal(width, arch["dims"][unit])
    baked = model.bake().model
    assert torch.equal(baked(batch), model(batch))
    # what bars predict / export load: final_model from the retrain's checkpoint carries each row's block
    from bars.methods import final_model
    from bars.train import load_checkpoint, save_checkpoint

    save_checkpoint(model, tmp_path / "best.pt")
    loaded = load_checkpoint(final_model(cfg, build(str(cfg.model.name), spec, dict(cfg.model.params)), spec),
                             tmp_path / "best.pt").eval()
    assert torch.equal(loaded.mask.row_unit, arch["row_unit"]) and torch.equal(loaded.mask.dims, arch["dims"])
    assert torch.equal(loaded.bake().model(batch), baked(batch))
    with pytest.raises(ConfigError, match=r"method.frequency_blocks must be a list of increasing ints >= 1"):
        validate(compose(["model=deepfm", "method=optembed", "method.frequency_blocks=[5,3]"]), "train")


def test_a_fixed_allocation_is_the_retrain_under_given_dims_and_the_measure_script_runs_it(tmp_path):
    """``FixedDimsStage`` (a control for the method tables, not a method): every dimension given is plain training
    to the digit; half of every field's dimensions keeps half the embedding parameters and changes the run; a block
    allocation counts each block's rows (the training split's counts, counted here) times its dimension; a wrong
    number of dimensions is an error naming the units. ``scripts/measure_methods.py --fixed-dims`` runs it."""
    import importlib.util
    from collections import Counter

    from bars.data.loader import load_dataset
    from bars.methods.optembed import FixedDimsStage
    from bars.run import train_one

    plain = compose(cfg_overrides(tmp_path))
    r_plain = train_one(plain, quiet=True)
    full = train_one(plain, quiet=True, stage=FixedDimsStage([10] * 5))
    assert full.metrics["test_auc"] == r_plain.metrics["test_auc"]
    assert full.metrics["test_logloss"] == r_plain.metrics["test_logloss"]
    assert full.metrics["embedding_params_kept"] == 1.0
    half = train_one(plain, quiet=True, stage=FixedDimsStage([5] * 5)).metrics
    assert half["embedding_params_kept"] == 0.5 and half["embedding_rows_kept"] == 1.0
    assert [half[f"dims_{f}"] for f in ("user", "movie", "year", "hour", "weekday")] == [5.0] * 5
    assert half["test_auc"] != r_plain.metrics["test_auc"]

    ds = load_dataset(next((tmp_path / "data" / "movielens_small").iterdir()))
    fields, vocab_rows = _vocab_rows(tmp_path)
    dims = [2, 9, 3, 8, 4, 7, 5, 6, 1, 10]  # (rare, frequent) per field
    blocks = train_one(plain, quiet=True, stage=FixedDimsStage(dims, [3])).metrics
    kept = 0
    for i, (f, n) in enumerate(zip(fields, vocab_rows.tolist(), strict=True)):
        counts = Counter(ds.splits["train"].column(f).tolist())
        kept += sum(dims[2 * i + (1 if counts.get(v, 0) >= 3 else 0)] for v in range(1, n + 1))
    assert blocks["embedding_params_kept_count"] == kept
    assert [blocks[f"dims_{f}_b{k}"] for f in fields for k in (0, 1)] == [float(d) for d in dims]
    with pytest.raises(ValueError, match=r"fixed dims: 3 given, the mask has 5 units \(\['user', 'movie'"):
        train_one(plain, quiet=True, stage=FixedDimsStage([5, 5, 5]))

    script = Path(__file__).resolve().parents[1] / "scripts" / "measure_methods.py"
    spec = importlib.util.spec_from_file_location("measure_methods", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "fixed.json"
    assert mod.main(["--data", "movielens_small", "--models", "deepfm", "--seeds", "2021", "--fixed-dims",
                     "[5, 5, 5, 5, 5]", "--root", str(tmp_path / "measure"), "--out", str(out), "--",
                     *[o for o in cfg_overrides(tmp_path) if not o.startswith(("model=", "data=", "paths.check",
                                                                                "paths.results"))]]) == 0
    rows = json.loads(out.read_text())
    assert [(r["method"], r["kept"]) for r in rows] == [("none", None), ("fixed", 0.5)]
    assert rows[0]["test_auc"] == r_plain.metrics["test_auc"] and rows[1]["test_auc"] == half["test_auc"]
    for bad in (["--fixed-dims", "[5, 5, 5, 5, 5]", "--method", "dnis"], ["--fixed-dims", "5"]):
        with pytest.raises(SystemExit) as e:
            mod.main(bad)
        assert e.value.code == 2  # argparse's usage error, before any run
