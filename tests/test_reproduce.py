"""`bars reproduce`: a real run on a tiny tabular dataset, rerun from its MLflow record; identical on CPU."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from bars.config import PROJECT_ROOT, compose
from bars.reproduce import ReproduceError, compare, rebase_config, reproduce, split_run_id

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _write_csv(path: Path, n: int = 600, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "user", "item", "price", "hist"])
        for _ in range(n):
            u, it = int(rng.integers(0, 30)), int(rng.integers(0, 20))
            y = int((u % 3 == 0) ^ bool(rng.random() < 0.2))
            hist = "|".join(str(x) for x in rng.integers(0, 10, int(rng.integers(1, 4))))
            w.writerow([y, f"u{u}", f"i{it}", f"{rng.random():.3f}", hist])
    return path


def _current(root: Path, uri: str, *extra: str):
    """The config `bars reproduce` composes here: only paths and tracking matter."""
    return compose([f"tracking.uri={uri}", f"paths.data={root / 'data'}", f"paths.checkpoints={root / 'ckpt'}",
                    *extra])


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    from bars.run import train_one

    root = tmp_path_factory.mktemp("repro")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    data_file = _write_csv(root / "tiny.csv")
    cfg = compose([
        "model=dcn", "data=tabular", f"data.file={data_file}", "data.categorical=[user,item]",
        "data.numeric=[price]", "data.sequence=[hist]", "model.params.dnn_hidden_units=[16]",
        "train.batch_size=128", "train.max_epochs=3", "train.num_threads=1", "train.device=cpu",
        f"tracking.uri={uri}", "tracking.experiment=tiny", f"paths.data={root / 'data'}",
        f"paths.checkpoints={root / 'ckpt'}", "seed=7",
    ])
    r = train_one(cfg, quiet=True, extra_tags={"stage": "final"})
    return {"root": root, "uri": uri, "run_id": r.run_id, "file": data_file}


def test_reproduce_gives_identical_metrics_on_cpu(original):
    lines: list[str] = []
    c = reproduce(original["run_id"], _current(original["root"], original["uri"]), out=lines.append)
    assert c.identical and c.ok and c.device == "cpu"
    text = "\n".join(lines)
    assert "data fingerprint" in text and "result: identical" in text
    for key in ("val_auc", "val_logloss", "test_auc", "test_logloss", "epochs", "best_epoch", "n_params"):
        row = next(r for r in c.rows if r[0] == key)
        assert row[1] == row[2] and row[3] == 0.0, row
    client = MlflowClient(tracking_uri=original["uri"])
    new = client.get_run(c.new_run_id)
    old = client.get_run(original["run_id"])
    assert new.info.status == "FINISHED"
    assert new.data.tags["stage"] == "reproduce" and new.data.tags["reproduce_of"] == original["run_id"]
    assert new.data.tags["seed"] == "7" and new.info.experiment_id == old.info.experiment_id
    for key in ("test_auc", "test_logloss", "val_auc", "val_logloss"):
        assert new.data.metrics[key] == old.data.metrics[key]


def test_changed_data_is_a_clear_error(original, tmp_path):
    # record a second run on its own copy of the data, then change that copy's content
    from bars.run import train_one

    root = original["root"]
    copy = shutil.copy(original["file"], tmp_path / "tiny.csv")
    cfg = compose([
        "model=lr", "data=tabular", f"data.file={copy}", "data.categorical=[user,item]", "data.numeric=[price]",
        "data.sequence=[hist]", "train.batch_size=128", "train.max_epochs=1", "train.num_threads=1",
        f"tracking.uri={original['uri']}", "tracking.experiment=tiny", f"paths.data={root / 'data'}",
        f"paths.checkpoints={root / 'ckpt'}",
    ])
    r = train_one(cfg, quiet=True)
    _write_csv(Path(copy), seed=1)
    with pytest.raises(ReproduceError, match="data fingerprint mismatch") as e:
        reproduce(r.run_id, _current(root, original["uri"]), out=lambda s: None)
    fp = MlflowClient(tracking_uri=original["uri"]).get_run(r.run_id).data.tags["data_fingerprint"]
    assert fp in str(e.value)


def test_unknown_run_is_a_clear_error(original):
    with pytest.raises(ReproduceError, match="no MLflow run 'deadbeef'"):
        reproduce("deadbeef", _current(original["root"], original["uri"]), out=lambda s: None)


def test_cli_prints_side_by_side_and_exits_zero(original):
    root = original["root"]
    proc = subprocess.run(
        [sys.executable, "-m", "bars.cli", "reproduce", f"run_id={original['run_id']}",
         f"tracking.uri={original['uri']}", f"paths.data={root / 'data'}", f"paths.checkpoints={root / 'ckpt'}"],
        check=False, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "original" in proc.stdout and "reproduced" in proc.stdout and "result: identical" in proc.stdout
    assert "test_auc" in proc.stdout


def test_cli_refuses_config_overrides(original):
    proc = subprocess.run(
        [sys.executable, "-m", "bars.cli", "reproduce", f"run_id={original['run_id']}", "train.max_epochs=1"],
        check=False, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "only paths.* and tracking.*" in proc.stderr


def test_compare_flags_differences_only_on_cpu():
    old = {"test_auc": 0.9, "val_auc": 0.8, "seconds_per_epoch": 1.0}
    new = {"test_auc": 0.9000001, "val_auc": 0.8, "seconds_per_epoch": 2.0}
    cpu = compare(old, new, "cpu", "a", "b")
    assert not cpu.identical and not cpu.ok
    assert compare(old, new, "cuda:0", "a", "b").ok
    same = compare(old, {**old, "seconds_per_epoch": 5.0}, "cpu", "a", "b")
    assert same.identical and same.ok  # timings are shown, never compared


def test_rebase_moves_paths_under_the_current_root():
    recorded = OmegaConf.create({
        "seed": 3, "paths": {"root": "/elsewhere/proj", "data": "/elsewhere/proj/data"},
        "tracking": {"uri": "sqlite:////elsewhere/proj/mlflow.db", "experiment": "frappe_x1", "enabled": True},
        "data": {"name": "frappe_x1", "raw_dir": "/elsewhere/proj/datasets/frappe_x1/raw", "file": "/abs/x.csv"},
    })
    current = OmegaConf.create({"paths": {"root": "/here", "data": "/here/data"},
                                "tracking": {"uri": "sqlite:////here/mlflow.db", "experiment": "movielens_small",
                                             "enabled": True}})
    cfg = rebase_config(recorded, current)
    assert cfg.paths.data == "/here/data" and cfg.tracking.uri == "sqlite:////here/mlflow.db"
    assert cfg.tracking.experiment == "frappe_x1"  # the run's experiment, not the current default
    assert cfg.data.raw_dir == "/here/datasets/frappe_x1/raw" and cfg.data.file == "/abs/x.csv"
    assert cfg.seed == 3


def test_rebase_gives_runs_older_than_the_loss_key_their_loss():
    current = OmegaConf.create({"paths": {"root": "/here"}, "tracking": {"uri": "x", "enabled": True}})
    old = rebase_config(OmegaConf.create({"train": {"batch_size": 4096}, "data": {"name": "d"}}), current)
    assert old.train.loss == "bce_logits" and old.train.batch_size == 4096
    new = rebase_config(OmegaConf.create({"train": {"loss": "bce"}, "data": {"name": "d"}}), current)
    assert new.train.loss == "bce"


def test_split_run_id():
    assert split_run_id(["run_id=abc", "tracking.uri=x"]) == ("abc", ["tracking.uri=x"])
    assert split_run_id(["tracking.uri=x"]) == (None, ["tracking.uri=x"])


def test_configs_recorded_in_the_earlier_layout_reproduce_the_same_data():
    """A run recorded before the protocol block, model ids and named recipes (data.protocol_seed,
    data.embedding_dim, no model.id, no data.recipe) is upgraded to today's layout: the same data fingerprint
    as a config composed today, the same seed and embedding size."""
    from bars.config import to_container
    from bars.data.prepare import dataset_fingerprint, load_recipe
    from bars.reproduce import upgrade_recorded_config

    today = to_container(compose(["model=fm", "data=movielens_small"]))
    old = {k: v for k, v in today.items() if k != "protocol"}
    old["data"] = {k: v for k, v in today["data"].items() if k not in ("recipe", "bars_split", "group_column")}
    old["data"] |= {"protocol_seed": 2021, "embedding_dim": 10}
    old["model"] = {k: v for k, v in today["model"].items() if k not in ("id", "bars_name")}
    up = upgrade_recorded_config(old)
    assert up["protocol"] == {"seed": 2021, "embedding_dim": 10} and "protocol_seed" not in up["data"]
    assert (up["model"]["id"], up["model"]["bars_name"]) == ("fm", None)
    assert up["data"]["recipe"] == today["data"]["recipe"]
    fp = dataset_fingerprint(load_recipe(OmegaConf.create(up)))
    assert fp == dataset_fingerprint(load_recipe(compose(["data=movielens_small"]))) == "2753b6e75517"
    assert upgrade_recorded_config(today) == today  # today's layout: unchanged


def test_recorded_model_params_that_today_refuses_are_upgraded():
    """Keys a model ignored were accepted before issue 9 and are errors today: a recorded run's params are
    upgraded to what builds today, with the same meaning; params in today's form are unchanged."""
    from bars.config import to_container
    from bars.models import make_config
    from bars.reproduce import upgrade_model_params

    mlp = {"activation": "relu", "batch_norm": False, "dropout": 0.0}
    old = {
        "lr": {"embedding_dim": 10},
        "dcn": {"embedding_dim": 10, "dnn_hidden_units": [], **mlp, "num_cross_layers": 3},
        "dcnv2": {"embedding_dim": 10, "model_structure": "crossnet_only", "dnn_hidden_units": [400], **mlp,
                  "num_cross_layers": 3},
        "xdeepfm": {"embedding_dim": 10, "cin_hidden_units": [32], "dnn_hidden_units": [], **mlp},
        "autoint": {"embedding_dim": 10, "attention_layers": 3, "num_heads": 2, "attention_dim": 40,
                    "use_residual": True, "use_scale": False, "layer_norm": False, "attention_dropout": 0.0,
                    "use_wide": False, "use_dnn": False, "dnn_hidden_units": [400, 400, 400], **mlp},
        "finalmlp": {"embedding_dim": 10, "use_fs": False, "fs_hidden_units": [400], "fs1_context": [],
                     "fs2_context": [], "num_heads": 5},
    }
    for name, params in old.items():
        with pytest.raises(Exception):  # noqa: B017 - today's config refuses it (ModelConfigError or TypeError)
            make_config(name, params)
        up = upgrade_model_params(name, params)
        make_config(name, up)  # builds today
        assert upgrade_model_params(name, up) == up
    assert "embedding_dim" not in upgrade_model_params("lr", old["lr"])
    assert upgrade_model_params("autoint", old["autoint"])["attention_dropout"] == 0.0  # the rate it trained with
    fs_old = {"embedding_dim": 10, "use_fs": True, "fs_hidden_units": [400], "fs1_context": [], "fs2_context": []}
    assert upgrade_model_params("finalmlp", fs_old)["fs_context_bias_init"] == "normal"  # N(0, 1) then
    for cid in ("lr", "dcn", "crossnet", "crossnetv2", "cin", "autoint", "autoint_plus", "finalmlp"):
        today = to_container(compose([f"model={cid}"]))["model"]
        assert upgrade_model_params(today["name"], today["params"]) == today["params"], cid
