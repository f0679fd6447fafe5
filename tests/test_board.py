"""`bars board` (bars.board): every model of a dataset swept at one fair budget, final seeds, the leaderboard, in
one resumable command, on a tiny movielens_small (2,000 rows, prepared for real; every model composed and built on
its feature spec for real).

Fast tests: the plan, the errors, and the board's control flow (sweep, finals, a failing model, the budget rule,
REBUDGET) with real Optuna studies and a stand-in trainer that reports rows per epoch, tracking off. Slow tests
(``slow``: a fresh MLflow store alone costs ~10 s here): one real board, LR and FM trained through
``bars.run.train_one`` into a temporary MLflow store, DIN skipped by its build error, DNN failing in every trial,
then the leaderboard; a rerun trains nothing (MLflow runs counted)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from bars import board as B
from bars.config import compose

ROWS = 2000  # train split ~1,600 rows: a 3k-samples budget is two one-epoch trials


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from bars.data.prepare import prepare

    root = tmp_path_factory.mktemp("board-data")
    prepare(compose(["data=movielens_small", f"data.rows={ROWS}", f"paths.data={root}"]), quiet=True)
    return root


def stores(root: Path, data_root: Path, *extra: str) -> list[str]:
    return [f"data.rows={ROWS}", f"paths.data={data_root}", f"paths.results={root / 'results'}",
            f"paths.sweeps={root / 'sweeps'}", f"paths.checkpoints={root / 'ckpt'}",
            f"tracking.uri=sqlite:///{root / 'mlflow.db'}", "train.max_epochs=1", "sweep.threads=1",
            "train.num_threads=1", "sweep.progress=off", "sweep.max_failed=2", *extra]


def mlflow_runs(root: Path) -> list:
    from bars.records import get_client

    c = get_client(f"sqlite:///{root / 'mlflow.db'}")
    exp = c.get_experiment_by_name("movielens_small")
    return list(c.search_runs([exp.experiment_id], max_results=1000)) if exp else []


def failing_for(model: str):
    """The real trainer, except that every run of ``model`` raises (a model whose training breaks)."""
    from bars.run import train_one

    def train(cfg, **kwargs):
        if str(cfg.model.id) == model:
            raise RuntimeError(f"{model} exploded (test)")
        return train_one(cfg, **kwargs)

    return train


def standin(fail: str | None = None, rows: int = 1000):
    """A trainer that reports ``rows`` training rows per epoch (as bars.train does) without training; every run
    of the model ``fail`` raises."""
    from bars import compute as C
    from bars.train import EpochLog

    def train(cfg, *, on_epoch=None, parent_run_id=None, extra_tags=None, quiet=False):
        if str(cfg.model.id) == fail:
            raise RuntimeError(f"{fail} exploded (test)")
        epochs = int(cfg.train.max_epochs)
        v = 0.7 + 0.01 * float(cfg.train.learning_rate)
        for e in range(1, epochs + 1):
            if on_epoch:
                on_epoch(EpochLog(epoch=e, train_loss=0.5, val={"auc": v, "logloss": 0.5}, monitor=v, lr=0.001,
                                  samples_per_s=1.0, seconds=0.0, improved=True, strikes=0,
                                  train_samples=rows * e, valid_samples=100 * e))
        return SimpleNamespace(run_id=None, metrics={"val_auc": v, "val_logloss": 0.5, "test_auc": v}, epochs=epochs,
                               samples={C.TRAIN_SAMPLES: rows * epochs, C.VALID_SAMPLES: 100 * epochs})

    return train


def study_trials(root: Path, model: str, study: str | None = None) -> int:
    from bars import study as ST

    cfg = compose([f"model={model}", "data=movielens_small", f"paths.sweeps={root / 'sweeps'}",
                   *([f"sweep.study={study}"] if study else [])])
    return len(ST.counted(ST.load_study(cfg, ST.open_storage(ST.storage_url(cfg)), 0).get_trials()))


# ---------------------------------------------------------------------------------------------- fast checks
def test_unknown_model_is_an_error_naming_the_registry():
    with pytest.raises(B.BoardError, match=r"unknown model.*'nosuch'.*registered models.*bars\.models registry"
                                           r".*dcn, dcnv2"):
        B.resolve_models("lr,nosuch")
    assert B.resolve_models("all") == B.registered_models()
    assert "lr" in B.registered_models() and "autoint_plus" in B.registered_models()  # config ids, not classes
    assert B.resolve_models("fm, lr,fm") == ["fm", "lr"]


def test_overrides_the_board_owns_and_worker_packing():
    from bars.compute import parse_budget

    b = parse_budget("1M samples")
    ov = B.board_overrides("frappe_vt", b, None, ["train.device=cpu"])
    assert ov == ["data=frappe_vt", "sweep.budget=1M samples", "sweep.trials=null", "final.same_commit=false",
                  "train.device=cpu"]
    assert "final.same_commit=false" not in B.board_overrides("d", b, None, ["final.same_commit=true"])
    # WORKERS=8 on one GPU: 8 workers packed on it; on two GPUs 4 each; on the CPU k processes
    assert "sweep.workers_per_gpu=8" in B.board_overrides("d", b, 8, [], gpus=["0"])
    assert "sweep.workers_per_gpu=4" in B.board_overrides("d", b, 8, [], gpus=["0", "1"])
    cpu = B.board_overrides("d", b, 2, [], gpus=[])
    assert "sweep.workers=2" in cpu and not any(o.startswith("sweep.workers_per_gpu") for o in cpu)
    assert "sweep.workers_per_gpu=2" in B.board_overrides("d", b, 8, ["sweep.workers_per_gpu=2"], gpus=["0"])
    assert "sweep.trials=5" in B.board_overrides("d", b, None, ["sweep.trials=5"])  # an explicit cap is kept
    assert "sweep.trials=null" not in B.board_overrides("d", b, None, ["sweep.trials=5"])
    for bad in ("model=dcn", "final.seeds=3", "data=frappe_vt"):
        with pytest.raises(B.BoardError, match="the board sets"):
            B.board_overrides("d", b, None, [bad])
    with pytest.raises(B.BoardError, match=">= 1"):
        B.board_overrides("d", b, 0, [])
    named = B.board_overrides("d", b, None, [], name="fair")
    assert "sweep.study='${model.id}__${data.name}${bars_suffix:${preset}}__fair'" in named
    for bad_name in ("Fair", "a b", "../x"):
        with pytest.raises(B.BoardError, match="--name"):
            B.board_overrides("d", b, None, [], name=bad_name)
    with pytest.raises(B.BoardError, match="drop sweep.study or BOARD="):
        B.board_overrides("d", b, None, ["sweep.study=x"], name="fair")


def test_plan_lists_models_skips_by_build_error_and_fails_a_bad_override(tmp_path, data_root, capsys):
    """No training: the plan composes and builds every model; DIN and ESMM cannot run on plain CTR rows (their
    build errors are the reasons); an override LR lacks fails LR alone (the error names the key)."""
    out = B.run_board("movielens_small", models="lr,fm,din,esmm", budget="3k samples", seeds=2, plan=True,
                      overrides=stores(tmp_path, data_root, "model.params.embedding_dim=10"))
    text = capsys.readouterr().out
    models = out["board"]["models"]
    assert out["exit_code"] == 0
    assert models["fm"]["status"] == "pending" and models["fm"]["study"] == "fm__movielens_small"
    assert models["din"]["status"] == "skipped" and "no sequence field" in models["din"]["reason"]
    assert models["esmm"]["status"] == "skipped" and "CTCVR" in models["esmm"]["reason"]
    assert models["lr"]["status"] == "failed" and "embedding_dim" in models["lr"]["reason"]
    assert "din: ModelConfigError" in text and "esmm: ValueError: ESMM needs" in text
    assert "0 done, 0 partial, 1 not started, 1 failed, 2 skipped" in text
    assert "budget 3k samples" in text and "2 seeds" in text and "sampler tpe, pruner none" in text
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "results").exists()  # nothing written
    assert not (tmp_path / "mlflow.db").exists()
    named = B.run_board("movielens_small", models="fm", budget="3k samples", seeds=2, plan=True, name="fair",
                        overrides=stores(tmp_path, data_root))
    assert named["board"]["models"]["fm"]["study"] == "fm__movielens_small__fair" and named["board"]["name"] == "fair"
    assert "movielens_small (board fair)" in capsys.readouterr().out


def test_bad_budget_and_seeds_are_errors_before_anything(tmp_path, data_root):
    with pytest.raises(B.BoardError, match=r"BUDGET \(--budget\).*'5M' has no unit"):
        B.run_board("movielens_small", models="lr", budget="5M", plan=True, overrides=stores(tmp_path, data_root))
    with pytest.raises(B.BoardError, match="--seeds must be >= 1"):
        B.run_board("movielens_small", models="lr", budget="5k samples", seeds=0, plan=True,
                    overrides=stores(tmp_path, data_root))
    with pytest.raises(B.BoardError, match="not sweep.budget"):
        B.run_board("movielens_small", models="lr", plan=True,
                    overrides=stores(tmp_path, data_root, "sweep.budget=5k samples"))


def test_board_flow_and_a_failing_model(tmp_path, data_root, capsys):
    """Sweeps run in-process at the budget (3 trials of 1,000 rows = 3k), final runs follow; FM's every trial
    fails: recorded failed with the trial's error, LR goes on, exit status 1."""
    ov = stores(tmp_path, data_root, "tracking.enabled=false")
    out = B.run_board("movielens_small", models="lr,fm,din", budget="3k samples", seeds=2, overrides=ov,
                      train_fn=standin(fail="fm"))
    text = capsys.readouterr().out
    rec = out["board"]
    assert out["exit_code"] == 1 and rec["counts"]["failed"] == 1 and rec["counts"]["skipped"] == 1
    lr, fm = rec["models"]["lr"], rec["models"]["fm"]
    assert lr["sweep"]["done"] and lr["sweep"]["trials"] == 3 and lr["sweep"]["spent"] == 3000
    assert lr["sweep"]["compute"]["compute_train_samples"] == 3000
    # tracking off: the finals ran (printed) but cannot be confirmed from a store: 0/2 finished, partial
    assert lr["status"] == "partial" and "2 final seeds to run" in lr["reason"]
    assert "bars final: [2/2] seed 2022" in text
    assert fm["status"] == "failed" and "2 trials failed" in fm["reason"] and "fm exploded (test)" in fm["reason"]
    assert "bars board: fm failed: SweepError" in text
    assert (tmp_path / "sweeps" / "lr__movielens_small" / "best.overrides").is_file()
    assert json.loads((tmp_path / "results" / "movielens_small_board.json").read_text()) == rec
    assert "no model has finished final runs" in text  # no leaderboard without final runs in a store


def test_a_different_budget_is_refused_unless_rebudget(tmp_path, data_root):
    """A rerun at another budget is refused before anything runs, naming the study and both budgets; REBUDGET
    continues the study with the new one; the same command again (the board's budget by default) trains
    nothing more."""
    ov = stores(tmp_path, data_root, "tracking.enabled=false")
    B.run_board("movielens_small", models="lr", budget="3k samples", seeds=1, overrides=ov, train_fn=standin(),
                say=lambda s: None)
    assert study_trials(tmp_path, "lr") == 3
    with pytest.raises(B.BoardError) as e:
        B.run_board("movielens_small", models="lr,fm", budget="5k samples", seeds=1, overrides=ov,
                    train_fn=standin())
    assert "study lr__movielens_small was run with sweep.budget=3k samples; this board asks for 5k samples" \
        in str(e.value) and "REBUDGET=1" in str(e.value)
    assert study_trials(tmp_path, "lr") == 3  # refused before anything ran
    out = B.run_board("movielens_small", models="lr", budget="5k samples", seeds=1, overrides=ov,
                      train_fn=standin(), rebudget=True, say=lambda s: None)
    assert out["board"]["models"]["lr"]["sweep"]["spent"] == 5000 and study_trials(tmp_path, "lr") == 5
    assert out["board"]["budget"]["spec"] == "5k samples"
    out = B.run_board("movielens_small", models="lr", overrides=ov, train_fn=standin(),
                      say=lambda s: None)  # no BUDGET, no SEEDS: the board's own
    assert out["board"]["budget"]["spec"] == "5k samples" and study_trials(tmp_path, "lr") == 5
    assert out["board"]["seeds"] == 1 and out["board"]["models"]["lr"]["final"]["seeds"] == 1


def test_an_interrupted_board_keeps_its_summary_and_resumes(tmp_path, data_root):
    """Ctrl-C in FM's sweep: the summary on disk is whole (LR's sweep spent, FM partial: interrupted), nothing
    half-written is left; the same command again continues: LR is not swept again, FM is. (A named board: its own
    studies <model>__<data>__<name> and summary file.)"""
    ov = stores(tmp_path, data_root, "tracking.enabled=false")
    fine = standin()

    def interrupt_fm(cfg, **kwargs):
        if str(cfg.model.id) == "fm":
            raise KeyboardInterrupt
        return fine(cfg, **kwargs)

    with pytest.raises(KeyboardInterrupt):
        B.run_board("movielens_small", models="lr,fm", budget="3k samples", seeds=1, overrides=ov,
                    train_fn=interrupt_fm, say=lambda s: None, name="fair")
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["movielens_small__fair_board.json"]
    assert sorted(p.name for p in (tmp_path / "sweeps").iterdir()) == ["fm__movielens_small__fair",
                                                                        "lr__movielens_small__fair"]
    rec = json.loads((tmp_path / "results" / "movielens_small__fair_board.json").read_text())
    assert rec["models"]["lr"]["sweep"]["done"] and rec["models"]["lr"]["sweep"]["trials"] == 3
    assert rec["models"]["fm"]["status"] == "partial" and rec["models"]["fm"]["reason"] == "interrupted"
    out = B.run_board("movielens_small", models="lr,fm", seeds=1, overrides=ov, train_fn=fine, say=lambda s: None,
                      name="fair")
    assert study_trials(tmp_path, "lr", "lr__movielens_small__fair") == 3
    assert out["board"]["models"]["fm"]["sweep"]["done"] and out["board"]["budget"]["spec"] == "3k samples"
    assert out["exit_code"] == 0


# -------------------------------------------------------------------------------------- one real board run
@pytest.fixture(scope="module")
def board_run(tmp_path_factory, data_root):
    root = tmp_path_factory.mktemp("board")
    ov = stores(root, data_root)
    out = B.run_board("movielens_small", models="lr,fm,dnn,din", budget="3k samples", seeds=2, overrides=ov,
                      train_fn=failing_for("dnn"), say=lambda s: None)
    return {"root": root, "ov": ov, "out": out, "runs": mlflow_runs(root)}


@pytest.mark.slow
def test_board_sweeps_finals_and_leaderboard_for_each_model(board_run):
    root, out = board_run["root"], board_run["out"]
    rec = out["board"]
    assert out["exit_code"] == 1  # DNN failed
    assert {m: s["status"] for m, s in rec["models"].items()} == {"lr": "done", "fm": "done", "dnn": "failed",
                                                                    "din": "skipped"}
    assert "dnn exploded (test)" in rec["models"]["dnn"]["reason"]
    assert rec["budget"] == {"unit": "samples", "amount": 3000.0, "spec": "3k samples"} and rec["seeds"] == 2
    runs = board_run["runs"]
    for m in ("lr", "fm"):
        sw = rec["models"][m]["sweep"]
        assert sw["done"] and sw["spent"] >= 3000 and sw["trials"] >= 2 and sw["budget"]["spec"] == "3k samples"
        assert sw["compute"]["compute_train_samples"] == sw["spent"]
        assert (root / "sweeps" / f"{m}__movielens_small" / "best.overrides").is_file()
        finals = [r for r in runs if r.data.tags.get("stage") == "final" and r.data.tags.get("model") == m]
        assert sorted(int(r.data.tags["seed"]) for r in finals) == [2021, 2022]
        assert all(r.info.status == "FINISHED" for r in finals)
        assert rec["models"][m]["final"]["finished"] == 2
        trials = [r for r in runs if r.data.tags.get("stage") == "trial" and r.data.tags.get("model") == m]
        assert len(trials) == sw["trials"]
    assert not [r for r in runs if r.data.tags.get("stage") in ("final", "trial") and r.data.tags.get("model")
                in ("dnn", "din")]
    rows = {r["model"]: r for r in csv.DictReader((root / "results" / "movielens_small.csv").open())}
    assert set(rows) == {"lr", "fm"}
    assert all(int(r["n"]) == 2 for r in rows.values())
    md = (root / "results" / "movielens_small.md").read_text()
    assert "every model's sweep had the same compute budget, sweep.budget=3k samples; 2 final seeds per model" in md
    on_disk = json.loads((root / "results" / "movielens_small_board.json").read_text())
    assert on_disk == rec and on_disk["counts"]["done"] == 2 and on_disk["counts"]["skipped"] == 1


@pytest.mark.slow
def test_rerun_trains_nothing_new_and_plan_shows_done(board_run, capsys, monkeypatch):
    root, ov = board_run["root"], board_run["ov"]
    before = len(mlflow_runs(root))
    out = B.run_board("movielens_small", models="lr,fm,dnn,din", seeds=2, overrides=ov,  # budget: the board's
                      train_fn=failing_for("dnn"), say=lambda s: None, leaderboard=False)
    assert len(mlflow_runs(root)) == before
    assert out["board"]["models"]["lr"]["status"] == "done" and out["exit_code"] == 1
    plan = B.run_board("movielens_small", models="lr,fm", seeds=2, overrides=ov, plan=True)
    text = capsys.readouterr().out
    assert plan["exit_code"] == 0 and "2 done" in text and "final 2/2 seeds" in text and "(spent)" in text
    assert len(mlflow_runs(root)) == before
    # after a new commit: the board (final.same_commit=false) still finds its final runs; make final's strict
    # rule (final.same_commit=true) would retrain them
    import bars.environment

    monkeypatch.setattr(bars.environment, "git_info", lambda root=None: {"git_commit": "f" * 40, "git_dirty": "false"})
    capsys.readouterr()
    assert B.run_board("movielens_small", models="lr", overrides=ov, plan=True)["board"]["models"]["lr"]["status"] \
        == "done"
    strict = B.run_board("movielens_small", models="lr", overrides=[*ov, "final.same_commit=true"], plan=True)
    assert strict["board"]["models"]["lr"]["final"]["finished"] == 0


@pytest.mark.slow
def test_real_board_refuses_another_budget_and_rebudget_trains_nothing_when_spent(board_run, capsys):
    root, ov = board_run["root"], board_run["ov"]
    before = len(mlflow_runs(root))
    with pytest.raises(B.BoardError, match=r"study lr__movielens_small was run with sweep.budget=3k samples; this "
                                           r"board asks for 2k samples"):
        B.run_board("movielens_small", models="lr,fm", budget="2k samples", seeds=2, overrides=ov)
    plan = B.run_board("movielens_small", models="lr", budget="2k samples", seeds=2, overrides=ov, plan=True)
    assert plan["exit_code"] == 2 and "budget conflicts" in capsys.readouterr().out
    # REBUDGET: the study continues with the new budget (already spent: nothing trains, finals are the same runs)
    out = B.run_board("movielens_small", models="lr", budget="2k samples", seeds=2, overrides=ov, rebudget=True,
                      say=lambda s: None, leaderboard=False)
    assert out["board"]["models"]["lr"]["status"] == "done"
    assert out["board"]["models"]["lr"]["sweep"]["budget"]["spec"] == "2k samples"
    assert len(mlflow_runs(root)) == before
    B.run_board("movielens_small", models="lr", budget="3k samples", seeds=2, overrides=ov, rebudget=True,
                say=lambda s: None, leaderboard=False)  # back to the board's budget for the other tests
    assert len(mlflow_runs(root)) == before


@pytest.mark.slow
def test_cli_plan_exit_codes(board_run, capsys):
    ov = board_run["ov"]
    assert B.main(["--data", "movielens_small", "--models", "lr,nosuch", "--plan", *ov]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert B.main(["--data", "movielens_small", "--models", "fm", "--budget", "3k samples", "--seeds", "2",
                   "--plan", *ov]) == 0


# -------------------------------------------------------------------------------------- the leaderboard note
def _records(budgets: dict[str, str]) -> list:
    from bars.records import RunRecord

    out = []
    for i, (model, spec) in enumerate(sorted(budgets.items())):
        study = f"{model}__movielens_small"
        out.append(RunRecord(f"p{i}", "movielens_small", "FINISHED", 1, 2, tags={
            "stage": "sweep", "sweep_study": study, "model": model, "data": "movielens_small",
            "compute_budget": spec, "compute_budget_unit": "samples"}))
        out.append(RunRecord(f"t{i}", "movielens_small", "FINISHED", 1, 2, tags={
            "stage": "trial", "sweep_study": study, "model": model, "data": "movielens_small", "trial_number": "0",
            "state": "complete"}, metrics={"val_auc": 0.7}))
        for seed in (2021, 2022):
            out.append(RunRecord(f"f{i}{seed}", "movielens_small", "FINISHED", 3, 4, tags={
                "stage": "final", "sweep_study": study, "model": model, "data": "movielens_small",
                "seed": str(seed)}, params={"protocol.seed": "2021"},
                metrics={"test_auc": 0.7 + 0.01 * i + (seed - 2021) * 0.001, "test_logloss": 0.5}))
    return out


def test_leaderboard_notes_the_tuning_budget_and_flags_different_ones():
    from bars.leaderboard import build
    from bars.leaderboard_render import footnotes

    board = build(_records({"lr": "3k samples", "fm": "3k samples"}), published={})["movielens_small"]
    assert board.tuning_budgets == (("fm", "3k samples"), ("lr", "3k samples"))
    assert ("Tuning budget: every model's sweep had the same compute budget, sweep.budget=3k samples; 2 final "
            "seeds per model.") in footnotes(board)
    board = build(_records({"lr": "3k samples", "fm": "5k samples"}), published={})["movielens_small"]
    assert any(n.startswith("Tuning budgets DIFFER between models") and "fm 5k samples, lr 3k samples" in n
               for n in footnotes(board))
    plain = [r for r in _records({"lr": "3k samples"}) if r.stage != "sweep"]  # a trial-count sweep: no note
    assert not any("Tuning budget" in n for n in footnotes(build(plain, published={})["movielens_small"]))


def test_jobs_must_be_positive_and_not_combined_with_workers_or_a_train_fn(tmp_path, data_root):
    ov = stores(tmp_path, data_root)
    for kw, words in (({"jobs": 0}, "must be >= 1"), ({"jobs": 2, "workers": 2}, "choose one"),
                      ({"jobs": 2, "train_fn": standin()}, "train_fn")):
        with pytest.raises(B.BoardError, match=words):
            B.run_board("movielens_small", models="lr,fm", budget="3k samples", seeds=1, overrides=ov,
                        say=lambda s: None, **kw)
    assert not (tmp_path / "results").exists()  # refused before anything is planned or written


def test_the_summary_never_shows_a_password(tmp_path, data_root):
    board = B.plan_board("movielens_small", models="lr", budget="3k samples", seeds=1,
                         overrides=stores(tmp_path, data_root, "tracking.enabled=false"))
    board.overrides = [*board.overrides, "sweep.storage=postgresql://bars:hunter2@db:5432/optuna"]
    rec = json.dumps(board.record())
    assert "hunter2" not in rec and "postgresql://bars@db:5432/optuna" in rec


@pytest.mark.slow
def test_jobs_run_models_side_by_side_in_their_own_processes(tmp_path, data_root):
    """``--jobs 2``: LR and FM each in a ``bars board --models <m>`` process (real training into one MLflow
    store), their lines relayed with the model's prefix, the summary and the leaderboard written once by the
    parent with both models done; DIN is skipped in the parent (its build error), never started."""
    lines: list[str] = []
    out = B.run_board("movielens_small", models="lr,fm,din", budget="3k samples", seeds=1,
                      overrides=stores(tmp_path, data_root), jobs=2, say=lines.append)
    rec = out["board"]
    assert out["exit_code"] == 0, "\n".join(lines[-40:])
    assert {m: s["status"] for m, s in rec["models"].items()} == {"lr": "done", "fm": "done", "din": "skipped"}
    assert any(s.startswith("[lr] bars board:") for s in lines) and any(s.startswith("[fm] bars board:")
                                                                        for s in lines)
    assert not any(s.startswith("[din]") for s in lines)
    assert "bars board: 2 models, 2 at a time, one process each" in "\n".join(lines)
    finals = [r for r in mlflow_runs(tmp_path) if r.data.tags.get("stage") == "final"]
    assert sorted(r.data.tags["model"] for r in finals) == ["fm", "lr"]
    assert json.loads((tmp_path / "results" / "movielens_small_board.json").read_text()) == rec
    rows = {r["model"] for r in csv.DictReader((tmp_path / "results" / "movielens_small.csv").open())}
    assert rows == {"lr", "fm"}
    assert not [p for p in (tmp_path / "results").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_ctrl_c_stops_a_jobs_board_and_its_model_processes(tmp_path, data_root):
    """Ctrl-C in a terminal (SIGINT to the whole process group) during ``--jobs 2``: both model processes stop,
    nothing of the group is left running, the board exits 130 with both models partial (interrupted) in its
    summary, and the summary says so."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    cmd = [sys.executable, "-m", "bars.cli", "board", "--data", "movielens_small", "--models", "lr,fm", "--jobs", "2",
           "--budget", "1G samples", "--seeds", "1", "--no-leaderboard", *stores(tmp_path, data_root)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    started: set[str] = set()
    both = threading.Event()

    def read() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            lines.append(line.rstrip())
            for m in ("lr", "fm"):
                if line.startswith(f"[{m}] bars sweep: 1 worker"):
                    started.add(m)
            if started == {"lr", "fm"}:
                both.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert both.wait(240), "\n".join(lines[-40:])
        time.sleep(2)  # both sweeps are training
        os.killpg(p.pid, signal.SIGINT)
        assert p.wait(90) == 130, "\n".join(lines[-40:])
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the model processes are gone too (their group is the board's)
        try:
            os.killpg(p.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.killpg(p.pid, signal.SIGKILL)
        pytest.fail("a model process outlived the board")
    reader.join(10)
    rec = json.loads((tmp_path / "results" / "movielens_small_board.json").read_text())
    assert {m: (s["status"], s.get("reason")) for m, s in rec["models"].items()} == \
        {"lr": ("partial", "interrupted"), "fm": ("partial", "interrupted")}, "\n".join(lines[-40:])
    assert any("bars board: interrupted; the summary is in" in s for s in lines)
