"""tests/reference/bench_whole_run.py (``make bench-reference ARGS=--whole-run``): its bars side composes a valid
``bars train`` config from BARS's Frappe_x1 presets, and its data files have the promised shapes. The bench itself
runs in the reference venv (FuxiCTR); these checks need only the project's venv."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _bench():
    spec = importlib.util.spec_from_file_location("bench_whole_run", HERE / "reference" / "bench_whole_run.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_whole_run", mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("model", ["dcn", "deepfm", "finalmlp"])
def test_bars_side_composes_the_preset_with_four_epochs_and_tracking(tmp_path, model):
    from bars.config import compose
    from bars.validate import validate

    b = _bench()
    data = b.write_data("criteo", tmp_path / "raw", 80)
    a = {"shape": "criteo", "model": model, "params": b.shape_params(model, "criteo"), "epochs": 4, "threads": 1,
         "root": str(tmp_path), "data_dir": str(data)}
    cfg = compose(b.bars_overrides(a))
    validate(cfg, "train")
    assert cfg.model.id == model and cfg.data.name == "criteo_x1" and cfg.data.raw_dir == str(data)
    assert cfg.train.max_epochs == 4 and cfg.train.max_strikes == 5 and cfg.train.num_threads == 1
    assert cfg.tracking.enabled and str(tmp_path) in cfg.tracking.uri
    preset = b.preset_set(model)
    for key, want in preset.items():
        if key.startswith("model.params.") and not key.endswith("_context"):
            assert cfg.model.params[key.split(".", 2)[2]] == want, key
    assert cfg.train.embedding_regularizer == preset["train.embedding_regularizer"]
    if model == "finalmlp":  # Frappe's context fields, renamed at the criteo shape
        assert list(cfg.model.params.fs1_context) == ["C1"] and list(cfg.model.params.fs2_context) == ["C2"]


def test_criteo_shape_files(tmp_path):
    b = _bench()
    folder = b.write_data("criteo", tmp_path, 160)
    for split, rows in (("train", 160), ("valid", 20), ("test", 20)):
        lines = (folder / f"{split}.csv").read_text().splitlines()
        assert lines[0].split(",") == ["label", *b.CRITEO_INT, *b.CRITEO_CAT]
        assert len(lines) == rows + 1 and all(len(x.split(",")) == 40 for x in lines[1:])


def test_frappe_shape_files_are_bars_frappe_x1_rows(tmp_path):
    b = _bench()
    src = b.frappe_dir()
    if not (src / "valid.csv.gz").exists():
        pytest.skip(f"the Frappe_x1 files are not in {src}")
    folder = b.write_data("frappe", tmp_path, 0)
    valid = (folder / "valid.csv").read_text().splitlines()
    train = (folder / "train.csv").read_text().splitlines()
    assert valid[0] == "label," + ",".join(b.FRAPPE_FIELDS) and len(valid) == 57_722 + 1
    assert len(train) == b.FRAPPE_TRAIN_ROWS + 1 and train[0] == valid[0]
    pool = set(valid[1:]) | set((folder / "test.csv").read_text().splitlines()[1:])
    assert set(train[1:1000]) <= pool


def test_bars_overrides_come_last_and_reach_the_config(tmp_path):
    from bars.config import compose

    b = _bench()
    data = b.write_data("criteo", tmp_path / "raw", 80)
    a = {"shape": "criteo", "model": "dcn", "params": b.shape_params("dcn", "criteo"), "epochs": 4, "threads": 1,
         "root": str(tmp_path), "data_dir": str(data),
         "bars_overrides": ["train.precision=bf16", "train.max_epochs=2"]}
    ov = b.bars_overrides(a)
    assert ov[-2:] == ["train.precision=bf16", "train.max_epochs=2"]
    cfg = compose(ov)
    assert cfg.train.precision == "bf16" and cfg.train.max_epochs == 2  # the user's override wins over the bench's


def test_a_bars_override_without_a_value_is_an_error(capsys):
    b = _bench()
    with pytest.raises(SystemExit):
        b.main(["--whole-run", "--bars-override", "train.precision"])
    assert "--bars-override: expected KEY=VALUE, got ['train.precision']" in capsys.readouterr().err


def test_products_bound_times_every_linear_call_of_one_validation_batch(tmp_path):
    import torch

    from bars.config import compose, to_container
    from bars.models import build

    b = _bench()
    data = b.write_data("criteo", tmp_path / "raw", 400)
    a = {"shape": "criteo", "model": "dcn", "params": b.shape_params("dcn", "criteo"), "epochs": 4, "threads": 1,
         "root": str(tmp_path), "data_dir": str(data)}
    out = b.products_worker(a)
    cfg = compose(b.bars_overrides(a))
    from bars.data.spec import FeatureSpec  # the spec the worker's prepare wrote

    spec = FeatureSpec.load(next((tmp_path / "bars" / "data").rglob("feature_spec.json")))
    model = build(cfg.model.name, spec, to_container(cfg.model.params))
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    # DCN: three cross layers (390 -> 1, no bias), the [400, 400, 400] MLP and the output layer, each called once
    assert out["linear_calls"] == len(linears) == 7
    assert out["rows"] == 50  # the valid split (400 / 8 rows) in one batch of eval_batch_size
    assert out["products_s"] > 0 and out["forward_s"] > 0 and out["gflops"] > 0


def test_the_table_prints_the_products_bound(capsys):
    b = _bench()

    def run(valid_s: float) -> dict:
        return {"split": {k: 1.0 for k in b.PHASES} | {"valid": valid_s}, "valid_passes": 4, "valid_rows": 1000,
                "epochs": 4, "test_auc": 0.8, "load": 1.0}

    runs = {"bars": [run(0.01)], "fuxictr": [run(0.04)]}  # 400,000 and 100,000 rows/s
    b.print_table("frappe", "dcn", runs, 4, {"rows": 8000, "products_s": 0.016, "forward_s": 0.02,
                                             "linear_calls": 4, "gflops": 300.0})
    out = capsys.readouterr().out
    assert "bars 400,000 rows/s = 4.00x FuxiCTR" in out
    assert "allow at most 500,000 rows/s (5.00x FuxiCTR; the pass is at 80% of it" in out
    assert "the forward alone 400,000 rows/s" in out
