"""`make bench-reference ARGS=--whole-run`: a whole training run of bars and of FuxiCTR 2.3.10, side by side.

One run = what a user's command does from its start to its end, for a fixed number of epochs (4):
- bars: ``bars train``'s path through ``bars.run``: the config composed (``bars.config.compose``), the store's
  housekeeping, then ``bars.run.train_one`` with tracking on (MLflow SQLite store, spool and checkpoints in this
  bench's temporary folder): prepare (reuse of the prepared dataset), load, build, fit with validation every epoch,
  the test pass, the run's records (params, per-epoch metrics, artifacts, the best checkpoint);
- FuxiCTR: its ``run_expid.py`` flow: ``FeatureProcessor`` + ``build_dataset`` (the dataset is already built, as
  on any rerun: it reads the feature map), ``FeatureMap.load``, the model (this project's FuxiCTR composition,
  tests/reference/fuxictr_zoo/<m>.py, on FuxiCTR's own feature map), ``RankDataLoader`` (train, valid),
  ``BaseModel.fit`` (validation every epoch, the best checkpoint written at each improvement, reloaded at the end),
  the validation pass run_expid.py repeats after fit, then the test loader and ``evaluate``.

Both sides read the same CSV files, with the same model configuration (BARS's best Frappe_x1 configuration of the
model: conf/presets/bars/frappe_x1/<m>.yaml, its ``set`` block, at both shapes), the same seed and the same number
of threads (``torch.set_num_threads`` and OMP/MKL_NUM_THREADS in both processes). ``max_strikes`` / FuxiCTR's
``early_stop_patience`` are raised above the epoch count so that both sides run exactly ``--epochs`` epochs (the
learning rate still decays on a non-improving epoch, alike on both). Each run is a fresh process of its side's
Python (bars: the project's venv, ``--bars-python``; FuxiCTR: this reference venv); the first run of each side
builds the data (bars: ``prepare``; FuxiCTR: its FeatureProcessor fit and transform) and, for bars, creates the
MLflow store: both are printed apart and left out of the medians. Then ``--repeats`` rounds alternate bars /
FuxiCTR so that machine noise hits both alike. Figures are medians.

Shapes:
- frappe: the Frappe_x1 layout and sizes (202,027 / 57,722 / 28,860 rows, 10 categorical fields): valid and test
  are BARS's real Frappe_x1 valid.csv and test.csv (../shared/datasets/frappe_x1/derived); the real train split is
  not on this machine, so train is 202,027 rows drawn with replacement (seeded) from the real valid + test rows;
- criteo: 13 numeric fields (log-scaled values, as Criteo_x1's normalised ones) + 26 categorical ones (skewed ids,
  vocabularies from 10 to 100,000), ``--criteo-rows`` training rows (valid and test 1/8 of it each); FinalMLP's
  feature-selection contexts (Frappe's user / item) become C1 / C2.

The split of each side's run (seconds): ``data`` (bars: prepare/reuse + load; FuxiCTR: build_dataset's reuse,
the feature map, the train/valid loaders), ``build`` (the model), ``train`` (the training passes), ``valid`` (the
validation passes: FuxiCTR's include the one run_expid.py repeats after fit), ``test`` (bars: the test pass;
FuxiCTR: the test loader and its evaluate), ``fixed`` (the rest of the run: config, tracking, checkpoints, the
store's housekeeping, bookkeeping), ``run`` (all of it) and ``process`` (the process's wall time: interpreter start
and imports included), ``cpu`` (the process's CPU seconds, user + system, its loader processes included: on a
loaded machine the figure that moves least with the load).

After each model's table (unless ``--no-products-bound``): the validation rows/s of both sides, and the most that
bars's float32 matrix products alone allow: every ``nn.Linear`` call of one validation batch timed by itself on the
same threads (``products_worker``), so a validation goal can be read against what the host's products can do.

    PYTHONPATH=. .venv-ref/bin/python tests/reference/bench_reference.py --whole-run [--models dcn,deepfm,finalmlp]
        [--shapes frappe,criteo] [--epochs 4] [--repeats 3] [--threads 2] [--bars-python .venv/bin/python]
        [--fuxictr-loader npz|parquet]
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FRAPPE_DIR = ROOT.parent / "shared" / "datasets" / "frappe_x1" / "derived"
FRAPPE_FIELDS = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city"]
FRAPPE_TRAIN_ROWS = 202_027
CRITEO_INT = [f"I{i}" for i in range(1, 14)]
CRITEO_CAT = [f"C{i}" for i in range(1, 27)]
DEFAULT_MODELS = "dcn,deepfm,finalmlp"
SEED = 2021
PHASES = ("data", "build", "train", "valid", "test", "fixed", "run", "process", "cpu")


# ------------------------------------------------------------------------------------------------ data
def frappe_dir() -> Path:
    """The folder holding BARS's Frappe_x1 valid.csv.gz / test.csv.gz: ``BARS_FRAPPE_X1_DERIVED``, else
    datasets/frappe_x1/derived under ``BARS_SHARED``, ../shared or /work/shared (as the reference suite's conftest)."""
    if os.environ.get("BARS_FRAPPE_X1_DERIVED"):
        return Path(os.environ["BARS_FRAPPE_X1_DERIVED"])
    for cand in (os.environ.get("BARS_SHARED"), ROOT.parent / "shared", "/work/shared"):
        if cand and (Path(cand) / "datasets" / "frappe_x1" / "derived").is_dir():
            return Path(cand) / "datasets" / "frappe_x1" / "derived"
    return FRAPPE_DIR


def write_data(shape: str, folder: Path, criteo_rows: int) -> Path:
    """train.csv / valid.csv / test.csv of ``shape`` in ``folder`` (label first, then the fields)."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    if shape == "frappe":
        src = frappe_dir()
        missing = [n for n in ("valid.csv.gz", "test.csv.gz") if not (src / n).exists()]
        if missing:
            raise SystemExit(f"bench whole run: the Frappe_x1 files {missing} are not in {src} "
                             "(set BARS_FRAPPE_X1_DERIVED to the folder holding valid.csv.gz and test.csv.gz)")
        lines = {}
        for split in ("valid", "test"):
            with gzip.open(src / f"{split}.csv.gz", "rt", newline="") as f:
                text = f.read().replace("\r\n", "\n").strip("\n").split("\n")
            header, lines[split] = text[0], text[1:]
            (folder / f"{split}.csv").write_text("\n".join(text) + "\n")
        pool = lines["valid"] + lines["test"]
        pick = np.random.default_rng(SEED).integers(0, len(pool), FRAPPE_TRAIN_ROWS)
        (folder / "train.csv").write_text(header + "\n" + "\n".join(pool[i] for i in pick) + "\n")
        return folder
    rng = np.random.default_rng(SEED)
    vocab = np.geomspace(10, 100_000, len(CRITEO_CAT)).astype(int)
    header = ",".join(["label", *CRITEO_INT, *CRITEO_CAT])
    sizes = {"train": criteo_rows, "valid": criteo_rows // 8, "test": criteo_rows // 8}
    for split, n in sizes.items():
        cols = [(rng.random(n) < 0.25).astype(int).astype(str)]
        cols += [np.char.mod("%.6f", np.log1p(rng.random(n) ** 2 * 100) / 5) for _ in CRITEO_INT]
        cols += [np.char.add("v", (rng.random(n) ** 3 * v).astype(int).astype(str)) for v in vocab]
        rows = cols[0]
        for c in cols[1:]:
            rows = np.char.add(np.char.add(rows, ","), c)
        (folder / f"{split}.csv").write_text(header + "\n" + "\n".join(rows.tolist()) + "\n")
    return folder


def preset_set(model: str) -> dict[str, Any]:
    """The ``set`` block of conf/presets/bars/frappe_x1/<model>.yaml (BARS's best Frappe_x1 run of the model)."""
    import yaml

    path = ROOT / "conf" / "presets" / "bars" / "frappe_x1" / f"{model}.yaml"
    if not path.exists():
        raise SystemExit(f"bench whole run: no BARS Frappe_x1 preset for {model!r} ({path})")
    return dict(yaml.safe_load(path.read_text(encoding="utf-8"))["set"])


def shape_params(model: str, shape: str) -> dict[str, Any]:
    """The preset's keys for ``shape``: Frappe field names in FinalMLP-style contexts become C1 / C2 at criteo."""
    out = {}
    rename = {"user": "C1", "item": "C2"} if shape == "criteo" else {}
    for k, v in preset_set(model).items():
        if isinstance(v, list) and k.endswith("_context"):
            v = [rename.get(x, x) for x in v]
        out[k] = v
    return out


# ------------------------------------------------------------------------------------------------ bars worker
def bars_overrides(a: dict[str, Any]) -> list[str]:
    root, shape = Path(a["root"]), a["shape"]
    data = "frappe_x1" if shape == "frappe" else "criteo_x1"
    ov = [f"data={data}", f"data.raw_dir={a['data_dir']}", "data.verify_md5=false", f"model={a['model']}"]
    for k, v in a["params"].items():
        if k == "train.max_epochs" or k == "train.max_strikes":
            continue
        ov.append(f"{k}={json.dumps(v)}")
    ov += [f"train.max_epochs={a['epochs']}", f"train.max_strikes={a['epochs'] + 1}", "train.device=cpu",
           f"train.num_threads={a['threads']}", "tracking.enabled=true",
           f"tracking.uri=sqlite:///{root / 'bars' / 'mlflow.db'}", "tracking.experiment=whole-run",
           f"tracking.helper={a.get('tracking_helper', 'auto')}",
           f"tracking.spool_dir={root / 'bars' / 'spool'}", f"paths.data={root / 'bars' / 'data'}",
           f"paths.checkpoints={root / 'bars' / 'ckpt'}"]
    return ov + list(a.get("bars_overrides", ()))


def bars_worker(a: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    if a.get("tracking_helper", "auto") == "auto":  # as `bars train` (bars.cli): the tracking helper started
        from bars.run import startup  # first thing, then the run's modules imported with the collector paused

        startup()
    import torch

    from bars.config import compose
    from bars.run import housekeeping, train_one

    torch.set_num_threads(a["threads"])
    t1 = time.perf_counter()
    cfg = compose(bars_overrides(a))
    housekeeping(cfg, "train")
    t2 = time.perf_counter()
    res = train_one(cfg, quiet=True)
    t3 = time.perf_counter()
    ph = res.phases
    split = {"data": ph.get("prepare", 0.0) + ph.get("load", 0.0), "build": ph.get("build", 0.0),
             "train": ph.get("train", 0.0), "valid": ph.get("valid", 0.0), "test": ph.get("test", 0.0)}
    split["run"] = t3 - t1
    split["fixed"] = split["run"] - sum(split[k] for k in ("data", "build", "train", "valid", "test"))
    return {"split": split, "imports": t1 - t0, "epochs": res.epochs, "valid_passes": res.epochs,
            "valid_rows": res.samples.get("compute_valid_samples", 0) // max(res.epochs, 1),
            "test_auc": res.metrics.get("test_auc"), "val_auc": res.metrics.get("val_auc"),
            "phases": ph, "housekeeping": t2 - t1}


def products_worker(a: dict[str, Any]) -> dict[str, Any]:
    """The float32 ceiling of bars's validation pass set by its matrix products alone: one validation batch
    (``train.eval_batch_size`` rows of the valid split) through the model in eval mode records every ``nn.Linear``
    call's shape; each product is then timed by itself (``torch.addmm``, or ``mm`` without a bias: the median of 30
    after 3 warm-ups, on the run's threads). ``rows/s <= batch / their sum`` with nothing else done; products
    outside ``nn.Linear`` (attention, a cross layer's vector product) are not counted, so the bound is generous.
    Also the model's whole forward on the same batch, timed the same way. The process's allocator is set as a bars
    run's (``train.reuse_freed_memory``)."""
    import torch

    from bars.config import compose, to_container
    from bars.data.loader import load_dataset
    from bars.data.prepare import prepare
    from bars.models import build

    torch.set_num_threads(a["threads"])
    cfg = compose(bars_overrides(a))
    if cfg.train.reuse_freed_memory:  # as a bars run's setup (bars.run._setup): the allocator's setting
        from bars.heap import reuse_freed_memory

        reuse_freed_memory()
    ds = load_dataset(prepare(cfg, quiet=True), splits=("valid",))
    model = build(cfg.model.name, ds.spec, to_container(cfg.model.params)).eval()
    rows = int(cfg.train.eval_batch_size)
    xb, _ = next(iter(ds.splits["valid"].batches(rows, shuffle=False, seed=0, device="cpu")))
    rows = int(next(iter(xb.values())).shape[0])
    shapes: list[tuple[int, int, int, bool]] = []

    def record(mod, inputs, _out):
        x = inputs[0]
        shapes.append((x.numel() // mod.in_features, mod.in_features, mod.out_features, mod.bias is not None))

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.inference_mode():
        model(xb)
    for h in hooks:
        h.remove()

    def median_s(fn) -> float:
        for _ in range(3):
            fn()
        ts = []
        for _ in range(30):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    g = torch.Generator().manual_seed(SEED)
    products, flops = 0.0, 0
    with torch.inference_mode():
        for n, k, m, bias in shapes:
            x, w = torch.randn(n, k, generator=g), torch.randn(m, k, generator=g)
            b = torch.randn(m, generator=g)
            wt = w.t()
            products += median_s(functools.partial(torch.addmm, b, x, wt) if bias else functools.partial(torch.mm, x, wt))
            flops += 2 * n * k * m
        forward = median_s(lambda: model(xb))
    return {"rows": rows, "linear_calls": len(shapes), "products_s": products, "forward_s": forward,
            "gflops": flops / products / 1e9 if products else 0.0}


# ------------------------------------------------------------------------------------------------ FuxiCTR worker
def fuxictr_columns(shape: str) -> tuple[list[dict], dict]:
    if shape == "frappe":
        cols = [{"name": FRAPPE_FIELDS, "active": True, "dtype": "str", "type": "categorical"}]
    else:
        cols = [{"name": CRITEO_INT, "active": True, "dtype": "float", "type": "numeric", "fill_na": 0},
                {"name": CRITEO_CAT, "active": True, "dtype": "str", "type": "categorical"}]
    return cols, {"name": "label", "dtype": "float"}


def fuxictr_build(a: dict[str, Any]) -> None:
    """FuxiCTR's dataset build (FeatureProcessor: read, preprocess, fit; its ``transform`` of every split), in this
    process instead of build_dataset's Ray workers; writes the parquet files build_dataset writes and, for its
    in-memory NpzDataLoader, one .npz per split (the same columns)."""
    import numpy as np
    import pandas as pd
    import polars as pl
    from fuxictr.preprocess import FeatureProcessor

    cols, label = fuxictr_columns(a["shape"])
    fe = FeatureProcessor(feature_cols=cols, label_col=label, dataset_id=a["dataset_id"], data_root=a["fx_root"])
    # FeatureProcessor.read_data's own call, with polars 2's name of its ``dtypes`` argument (``schema_overrides``):
    # FuxiCTR 2.3.10's read_data raises ArgumentRemovedError under the polars 2.x the reference venv resolves to
    ddf = {s: fe.preprocess(pl.scan_csv(source=str(Path(a["data_dir"]) / f"{s}.csv"), separator=",",
                                        schema_overrides=fe.dtype_dict, low_memory=False))
           for s in ("train", "valid", "test")}
    fe.fit(ddf["train"], min_categr_count=1)
    for s, d in ddf.items():
        batch = {c: d.select(c).collect().to_series().to_numpy() for c in d.collect_schema().names()}
        out = fe.transform(batch)
        keep = list(fe.feature_map.features) + fe.feature_map.labels
        pd.DataFrame({c: out[c] for c in keep}).to_parquet(Path(fe.data_dir) / f"{s}.parquet")
        np.savez(Path(fe.data_dir) / f"{s}.npz", **{c: np.asarray(out[c]) for c in keep})


def fuxictr_worker(a: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    import logging

    import torch
    from fuxictr.features import FeatureMap
    from fuxictr.preprocess import FeatureProcessor, build_dataset
    from fuxictr.pytorch.dataloaders import RankDataLoader
    from fuxictr.pytorch.torch_utils import seed_everything

    sys.path.insert(0, str(HERE))
    from fuxictr_zoo import REFERENCES, model_configs

    torch.set_num_threads(a["threads"])
    t1 = time.perf_counter()
    if a.get("build"):
        fuxictr_build(a)
        return {"seconds": time.perf_counter() - t1}
    logging.basicConfig(filename=str(Path(a["root"]) / "fuxictr.log"), level=logging.INFO, force=True)
    seed_everything(seed=SEED)
    p = a["params"]
    name, params = model_configs()[a["model"]]
    params = {**params, **{k.split(".", 2)[2]: v for k, v in p.items() if k.startswith("model.params.")}}
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    fmt = a["loader"]
    cols, label = fuxictr_columns(a["shape"])
    csv = {s: str(Path(a["data_dir"]) / f"{s}.csv") for s in ("train", "valid", "test")}
    run_params = {"dataset_id": a["dataset_id"], "data_root": a["fx_root"], "feature_cols": cols, "label_col": label,
                  "train_data": csv["train"], "valid_data": csv["valid"], "test_data": csv["test"],
                  "embedding_dim": params["embedding_dim"], "batch_size": int(p["train.batch_size"]),
                  "data_format": fmt, "num_workers": a["fuxictr_workers"]}
    fe = FeatureProcessor(**run_params)
    train_data, valid_data, test_data = build_dataset(fe, **run_params)  # built: reads the feature map only
    if fmt == "npz":
        train_data, valid_data, test_data = (str(Path(fe.data_dir) / f"{s}.npz") for s in ("train", "valid", "test"))
    fmap = FeatureMap(a["dataset_id"], fe.data_dir)
    fmap.load(str(Path(fe.data_dir) / "feature_map.json"), run_params)
    loader_kw = {k: v for k, v in run_params.items() if k not in ("train_data", "valid_data", "test_data")}
    train_gen, valid_gen = RankDataLoader(fmap, stage="train", train_data=train_data, valid_data=valid_data,
                                          **loader_kw)
    t_data = time.perf_counter()
    model = REFERENCES[name].composition(fmap, params, float(p["train.learning_rate"]),
                                         float(p["train.embedding_regularizer"]), float(p["train.net_regularizer"]))
    model._early_stop_patience = a["epochs"] + 1
    os.makedirs(model.model_dir, exist_ok=True)
    model.count_parameters()
    t_build = time.perf_counter()

    acc = {"valid": 0.0, "test": 0.0, "checkpoint": 0.0}
    where = ["valid"]
    evaluate, save, load = model.evaluate, model.save_weights, model.load_weights

    def timed(fn, key):
        def wrapper(*args, **kw):
            t = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                acc[where[0] if key is None else key] += time.perf_counter() - t
        return wrapper

    model.evaluate = timed(evaluate, None)
    model.save_weights, model.load_weights = timed(save, "checkpoint"), timed(load, "checkpoint")
    epochs_run = [0]
    train_epoch = model.train_epoch

    def count_epoch(gen):
        epochs_run[0] += 1
        return train_epoch(gen)

    model.train_epoch = count_epoch
    t_fit = time.perf_counter()
    model.fit(train_gen, epochs=a["epochs"], validation_data=valid_gen, max_gradient_norm=10.0)
    fit_s = time.perf_counter() - t_fit
    train_s = fit_s - acc["valid"] - acc["checkpoint"]
    model.evaluate(valid_gen)  # run_expid.py: "Validation evaluation" after fit
    valid_rows = valid_gen.num_samples
    del train_gen, valid_gen
    where[0] = "test"
    t_test = time.perf_counter()
    test_gen = RankDataLoader(fmap, stage="test", test_data=test_data, **loader_kw)
    test = model.evaluate(test_gen)
    t_end = time.perf_counter()
    split = {"data": t_data - t1, "build": t_build - t_data, "train": train_s, "valid": acc["valid"],
             "test": t_end - t_test, "run": t_end - t1}
    split["fixed"] = split["run"] - sum(split[k] for k in ("data", "build", "train", "valid", "test"))
    return {"split": split, "imports": t1 - t0, "epochs": epochs_run[0], "valid_passes": epochs_run[0] + 1,
            "valid_rows": valid_rows, "test_auc": float(test["AUC"]), "checkpoint": acc["checkpoint"]}


# ------------------------------------------------------------------------------------------------ orchestrator
def launch(python: str, side: str, a: dict[str, Any], threads: int) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    t = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([python, str(Path(__file__).resolve()), "--worker", side, json.dumps(a)],
                          check=False, capture_output=True, text=True, env=env, cwd=str(ROOT))
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the worker and its (waited-for) loader processes
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"bench whole run: the {side} run failed (exit {proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "split" in out:
        out["split"]["process"] = wall
        out["split"]["cpu"] = cpu
    else:
        out["process"] = wall
    return out


def _load() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="bars vs FuxiCTR 2.3.10: whole runs (bench_reference.py --whole-run)")
    ap.add_argument("--whole-run", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--models", default=DEFAULT_MODELS, help="models with a FuxiCTR composition and a BARS "
                    "Frappe_x1 preset (default: %(default)s)")
    ap.add_argument("--shapes", default="frappe,criteo")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--criteo-rows", type=int, default=160_000, help="criteo shape: training rows (valid and "
                    "test: 1/8 of it each)")
    ap.add_argument("--bars-python", default=str(ROOT / ".venv" / "bin" / "python"),
                    help="the project's Python (bars, hydra, mlflow); default: %(default)s")
    ap.add_argument("--fuxictr-python", default=sys.executable)
    ap.add_argument("--fuxictr-loader", choices=("npz", "parquet"), default="npz",
                    help="npz: FuxiCTR's in-memory NpzDataLoader (default); parquet: its Ray Data loader")
    ap.add_argument("--fuxictr-workers", type=int, default=1, help="FuxiCTR loader's num_workers (its default 1)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs per side before each model's repeats "
                    "(default 1; the first model of a shape always has its side's first run)")
    ap.add_argument("--tracking-helper", choices=("auto", "false"), default="auto",
                    help="bars side: auto = as `bars train` (MLflow written by the tracking helper process, the "
                         "process ended without the interpreter's teardown), false = in the run's process, normal "
                         "exit (before session 21)")
    ap.add_argument("--bars-override", action="append", default=[], metavar="KEY=VALUE",
                    help="one more Hydra override for bars's runs, after the bench's own (repeatable), e.g. "
                         "train.precision=bf16; FuxiCTR's side is unchanged")
    ap.add_argument("--no-products-bound", dest="products_bound", action="store_false",
                    help="skip the bound that bars's matrix products alone set on its validation rows/s (printed "
                         "after each model's table by default)")
    ap.add_argument("--keep", help="use (and keep) this folder instead of a temporary one")
    ap.add_argument("--json", help="also write every run's figures to this JSON file")
    args = ap.parse_args(argv)
    bad_overrides = [o for o in args.bars_override if "=" not in o or o.startswith("=")]
    if bad_overrides:
        ap.error(f"--bars-override: expected KEY=VALUE, got {bad_overrides}")
    if not Path(args.bars_python).exists():
        ap.error(f"--bars-python {args.bars_python} does not exist (make install creates .venv)")
    models = [m for m in args.models.split(",") if m]
    shapes = [s for s in args.shapes.split(",") if s]
    bad = sorted(set(shapes) - {"frappe", "criteo"})
    if bad:
        ap.error(f"--shapes: unknown {bad}; known: frappe, criteo")
    sys.path.insert(0, str(HERE))
    from fuxictr_zoo import REFERENCES, model_configs

    configs = model_configs()
    for m in models:
        preset_set(m)
        ref = REFERENCES.get(configs[m][0]) if m in configs else None
        if ref is None or ref.multi_task or ref.data != "frappe" or ref.groups is not None:
            ap.error(f"--models: {m!r} has no single-task FuxiCTR composition on plain Frappe fields "
                     "(tests/reference/fuxictr_zoo) to run as FuxiCTR's side")
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bars-whole-run-"))
    root.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    print(f"bars vs FuxiCTR 2.3.10 whole run: {args.epochs} epochs, tracking on (bars), {args.threads} threads, "
          f"FuxiCTR loader {args.fuxictr_loader}, median of {args.repeats} interleaved repeats; "
          f"bars overrides {args.bars_override or 'none'}; "
          f"load average at start {_load()}", flush=True)
    try:
        for shape in shapes:
            data_dir = write_data(shape, root / "raw" / shape, args.criteo_rows)
            built = False
            for m in models:
                a = {"shape": shape, "model": m, "params": shape_params(m, shape), "epochs": args.epochs,
                     "threads": args.threads, "root": str(root), "data_dir": str(data_dir),
                     "fx_root": str(root / "fuxictr"), "dataset_id": f"{shape}_shape", "loader": args.fuxictr_loader,
                     "fuxictr_workers": args.fuxictr_workers, "tracking_helper": args.tracking_helper,
                     "bars_overrides": args.bars_override}
                if not built:  # each side builds its dataset once per shape (not in the medians)
                    fx = launch(args.fuxictr_python, "fuxictr", {**a, "build": True}, args.threads)
                    first = launch(args.bars_python, "bars", a, args.threads)
                    print(f"{shape}: first runs (not in the medians): FuxiCTR dataset build {fx['seconds']:.1f} s; "
                          f"bars first run (prepare + MLflow store creation) {first['split']['process']:.1f} s",
                          flush=True)
                    built = True
                for i in range(args.warmup):  # untimed runs of this model on each side
                    if i or m != models[0]:
                        launch(args.bars_python, "bars", a, args.threads)
                    launch(args.fuxictr_python, "fuxictr", a, args.threads)
                runs: dict[str, list[dict[str, Any]]] = {"bars": [], "fuxictr": []}
                for _ in range(args.repeats):
                    for side, py in (("bars", args.bars_python), ("fuxictr", args.fuxictr_python)):
                        r = launch(py, side, a, args.threads)
                        r["load"] = os.getloadavg()[0]
                        runs[side].append(r)
                        records.append({"shape": shape, "model": m, "side": side, **r})
                bound = launch(args.bars_python, "products", a, args.threads) if args.products_bound else None
                if bound is not None:
                    records.append({"shape": shape, "model": m, "side": "products", **bound})
                print_table(shape, m, runs, args.epochs, bound)
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps(records, indent=1, default=str))
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"load average at end {_load()}")
    return 0


def print_table(shape: str, model: str, runs: dict[str, list[dict[str, Any]]], epochs: int,
                bound: dict[str, Any] | None = None) -> None:
    med = {s: {k: statistics.median(r["split"][k] for r in rs) for k in PHASES} for s, rs in runs.items()}
    loads = [r["load"] for rs in runs.values() for r in rs]
    print(f"\n{model} @ {shape}: seconds, median of {len(runs['bars'])} (load {min(loads):.1f}-{max(loads):.1f}); "
          f"epochs bars {[r['epochs'] for r in runs['bars']]} FuxiCTR {[r['epochs'] for r in runs['fuxictr']]}")
    print(f"{'side':<9}" + "".join(f"{k:>9}" for k in PHASES) + f"{'test AUC':>10}{'valid rows/s':>14}")
    for side, label in (("bars", "bars"), ("fuxictr", "FuxiCTR")):
        rs = runs[side]
        rate = statistics.median(r["valid_passes"] * r["valid_rows"] / r["split"]["valid"] for r in rs)
        auc = statistics.median(r["test_auc"] for r in rs)
        print(f"{label:<9}" + "".join(f"{med[side][k]:>9.2f}" for k in PHASES) + f"{auc:>10.4f}{rate:>14,.0f}")
    ratio = {k: med["fuxictr"][k] / med["bars"][k] if med["bars"][k] > 0 else float("nan") for k in PHASES}
    print(f"{'FuxiCTR/bars':<9}" + "".join(f"{ratio[k]:>9.2f}" for k in PHASES), flush=True)
    print(f"whole run ({epochs} epochs) {model} @ {shape}: bars {med['bars']['run']:.2f} s, FuxiCTR "
          f"{med['fuxictr']['run']:.2f} s: bars is {ratio['run']:.2f}x as fast (process: {ratio['process']:.2f}x)",
          flush=True)
    if bound is not None and bound["products_s"] > 0:
        rate = {s: statistics.median(r["valid_passes"] * r["valid_rows"] / r["split"]["valid"] for r in runs[s])
                for s in runs}
        ceiling = bound["rows"] / bound["products_s"]
        print(f"validation {model} @ {shape}: bars {rate['bars']:,.0f} rows/s = {rate['bars'] / rate['fuxictr']:.2f}x "
              f"FuxiCTR; its {bound['linear_calls']} Linear products timed alone at {bound['rows']:,} rows "
              f"({bound['gflops']:.0f} GFLOP/s) allow at most {ceiling:,.0f} rows/s "
              f"({ceiling / rate['fuxictr']:.2f}x FuxiCTR; the pass is at {rate['bars'] / ceiling:.0%} of it, the "
              f"forward alone {bound['rows'] / bound['forward_s']:,.0f} rows/s)", flush=True)


def worker_main(side: str, payload: str) -> int:
    a = json.loads(payload)
    out = bars_worker(a) if side == "bars" else products_worker(a) if side == "products" else fuxictr_worker(a)
    print(json.dumps(out, default=float))
    if side == "bars" and a.get("tracking_helper", "auto") == "auto":  # as `bars train` ends (bars.cli)
        from bars.cli import _exit_now

        _exit_now(0)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        raise SystemExit(worker_main(sys.argv[2], sys.argv[3]))
    raise SystemExit(main())
