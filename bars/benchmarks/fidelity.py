"""`bars bench fidelity`: the measured effect of each FuxiCTR-fidelity switch on real data (docs/fidelity.md).

Data: the BARS Frappe_x1 validation CSV (57,722 real rows; Frappe may not be redistributed, so it is read from
``--csv``, default ``$BARS_SHARED`` or ``../shared``: datasets/frappe_x1/derived/valid.csv.gz), split 80/20 into
train/valid with a seeded permutation, each field encoded as bars does (0 padding, 1 OOV, 2.. by count desc then
value). Every run is the full BARS protocol (``bars.train.fit``: Adam 1e-3, batch 4096, early stopping on val AUC,
best weights), embedding regularizer 0.05 (BARS Frappe_x1 best for the deep models; 0 for FM, whose
first-order weights are embeddings too), seeds 2021.. .

Models are the shipped configs (conf/model/<id>.yaml: BARS's Frappe_x1 best networks) at embedding 10. Each
experiment compares the FuxiCTR behaviour (today's default) with the alternative it replaced:
- loss: ``train.loss`` bce (sigmoid, then BCE on probabilities) vs bce_logits, for DCN and FM;
- autoint_qkv: AutoInt (no MLP), separate Q/K/V initialisation vs one fused [3*att, in] matrix's (emulated: each
  projection drawn with the fused matrix's xavier std); autoint_dropout: AutoInt+ (net dropout 0.1), the net
  dropout in attention too (attention_dropout null) vs none there (attention_dropout 0);
- finalmlp_ctx: empty contexts, context bias zeros vs N(0, 1) (``fs_context_bias_init``);
- deepfm_bias / finalmlp_bias: DeepFM's LR bias, FinalMLP's w_y bias trained (FuxiCTR) vs frozen at 0 (the
  former single bias).

    bars bench fidelity [--seeds 3] [--experiments loss,autoint_qkv,...] [--max-epochs 30] [--threads 2] [--csv PATH]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bars.config import PROJECT_ROOT


def default_csv() -> Path:
    for root in (os.environ.get("BARS_SHARED"), PROJECT_ROOT.parent / "shared", "/work/shared"):
        if root:
            p = Path(root) / "datasets" / "frappe_x1" / "derived" / "valid.csv.gz"
            if p.is_file():
                return p
    return PROJECT_ROOT.parent / "shared" / "datasets" / "frappe_x1" / "derived" / "valid.csv.gz"


def load_frappe_valid_as_train(csv: Path, seed: int = 2021):
    import polars as pl

    from bars.data.loader import SplitTensors
    from bars.data.spec import Feature, FeatureSpec

    if not csv.is_file():
        raise SystemExit(f"bars bench fidelity: {csv} not found (the BARS Frappe_x1 valid.csv.gz; pass --csv)")
    df = pl.read_csv(csv)
    perm = np.random.default_rng(seed).permutation(df.height)
    tr_idx, va_idx = perm[: int(0.8 * df.height)], perm[int(0.8 * df.height):]
    feats, tr, va = [], {}, {}
    for f in [c for c in df.columns if c != "label"]:
        col = df[f].to_numpy()
        vals, counts = np.unique(col[tr_idx], return_counts=True)
        order = np.lexsort((vals, -counts))
        lut = np.ones(int(col.max()) + 1, dtype=np.int32)
        lut[vals[order]] = np.arange(2, 2 + len(vals), dtype=np.int32)
        enc = lut[col]
        feats.append(Feature(name=f, type="categorical", vocab_size=len(vals) + 2))
        tr[f], va[f] = torch.from_numpy(enc[tr_idx]), torch.from_numpy(enc[va_idx])
    y = torch.from_numpy(df["label"].to_numpy().astype(np.float32))
    spec = FeatureSpec(dataset="frappe_x1_valid_as_train", label="label", features=tuple(feats))
    return spec, SplitTensors(tr, y[tr_idx]), SplitTensors(va, y[va_idx])


def _model(cid: str, **overrides) -> tuple[str, dict]:
    """(registry name, params) of config ``cid`` at embedding 10, with ``overrides``."""
    from bars.config import compose, to_container

    model = to_container(compose([f"model={cid}", "protocol.embedding_dim=10"]).model)
    return str(model["name"]), {**model["params"], **overrides}


# a variant: (model config id, params overrides, train overrides, hook(model) applied after initialisation)
Variant = tuple[str, dict, dict, Callable[[nn.Module], None] | None]


def _fused_qkv_init(model: nn.Module) -> None:
    """Each of w_q, w_k, w_v drawn with the xavier std of one fused [3 * att, in] matrix (the former layout)."""
    from bars.models.layers import MultiHeadSelfAttention

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, MultiHeadSelfAttention):
                for w in (m.w_q, m.w_k, m.w_v):
                    out_dim, in_dim = w.weight.shape
                    w.weight.normal_(0.0, math.sqrt(2.0 / (in_dim + 3 * out_dim)))


def _freeze(*names: str) -> Callable[[nn.Module], None]:
    def hook(model: nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in names:
                with torch.no_grad():
                    p.zero_()
                p.requires_grad_(False)

    return hook


FRAPPE_FINALMLP = {"fs1_context": [], "fs2_context": []}
EXPERIMENTS: dict[str, dict[str, list[Variant]]] = {
    "loss": {
        "dcn bce (FuxiCTR)": [("dcn", {}, {}, None)],
        "dcn bce_logits": [("dcn", {}, {"loss": "bce_logits"}, None)],
        "fm bce (FuxiCTR)": [("fm", {}, {"embedding_regularizer": 0.0}, None)],
        "fm bce_logits": [("fm", {}, {"embedding_regularizer": 0.0, "loss": "bce_logits"}, None)],
    },
    "autoint_qkv": {
        "autoint separate Q/K/V init (FuxiCTR)": [("autoint", {}, {}, None)],
        "autoint fused-QKV init": [("autoint", {}, {}, _fused_qkv_init)],
    },
    "autoint_dropout": {
        "autoint+ dropout 0.1 in attention (FuxiCTR)": [("autoint_plus", {}, {}, None)],
        "autoint+ no attention dropout": [("autoint_plus", {"attention_dropout": 0.0}, {}, None)],
    },
    "finalmlp_ctx": {
        "finalmlp ctx bias zeros (FuxiCTR)": [("finalmlp", FRAPPE_FINALMLP, {}, None)],
        "finalmlp ctx bias N(0,1)": [("finalmlp", {**FRAPPE_FINALMLP, "fs_context_bias_init": "normal"}, {}, None)],
    },
    "deepfm_bias": {
        "deepfm LR bias + MLP bias (FuxiCTR)": [("deepfm", {}, {}, None)],
        "deepfm MLP bias only": [("deepfm", {}, {}, _freeze("lr.bias"))],
    },
    "finalmlp_bias": {
        "finalmlp w_x + w_y biases (FuxiCTR)": [("finalmlp", {"fs1_context": ["user"], "fs2_context": ["item"]},
                                                 {}, None)],
        "finalmlp w_x bias only": [("finalmlp", {"fs1_context": ["user"], "fs2_context": ["item"]}, {},
                                    _freeze("fusion.w_y.bias"))],
    },
}


def run(data, variant: Variant, seed: int, max_epochs: int, threads: int = 2) -> dict[str, float]:
    from bars.models import build
    from bars.train import TrainConfig, _init, fit, seed_everything

    spec, tr, va = data
    cid, params, train, hook = variant
    cfg = TrainConfig(**{"max_epochs": max_epochs, "embedding_regularizer": 0.05, "device": "cpu",
                         "num_threads": threads, **train})
    name, p = _model(cid, **params)
    model = build(name, spec, p)
    seed_everything(seed, deterministic=True)
    _init(model, cfg.embedding_init_std)
    if hook is not None:
        hook(model)
    t = time.perf_counter()
    res = fit(model, tr, va, cfg, seed=seed, init=False)
    return {"auc": res.best_val["auc"], "logloss": res.best_val["logloss"], "epochs": res.epochs,
            "seconds": time.perf_counter() - t}


def main() -> int:
    ap = argparse.ArgumentParser(prog="bars bench fidelity", description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=None)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--experiments", default=",".join(EXPERIMENTS))
    args = ap.parse_args()
    data = load_frappe_valid_as_train(args.csv or default_csv())
    seeds = [2021 + i for i in range(args.seeds)]
    print(f"Frappe_x1 valid split as train/valid 80/20 ({len(data[1]):,} / {len(data[2]):,} rows), seeds {seeds}, "
          f"BARS protocol, embedding regularizer 0.05, <= {args.max_epochs} epochs")
    print(f"{'experiment':<16} {'variant':<44} {'val AUC mean ± std':>22} {'val logloss mean ± std':>24} "
          f"{'epochs':>7}")
    done: dict[tuple, list[dict[str, float]]] = {}
    for exp in [e for e in args.experiments.split(",") if e]:
        if exp not in EXPERIMENTS:
            raise SystemExit(f"unknown experiment {exp!r}; known: {list(EXPERIMENTS)}")
        for label, (variant,) in EXPERIMENTS[exp].items():
            key = (variant[0], repr(sorted(variant[1].items())), repr(sorted(variant[2].items())), variant[3])
            if key not in done:  # the same variant in two experiments (e.g. the FuxiCTR default) runs once
                done[key] = [run(data, variant, s, args.max_epochs, args.threads) for s in seeds]
            rs = done[key]
            auc = [r["auc"] for r in rs]
            ll = [r["logloss"] for r in rs]
            sd = statistics.stdev if len(rs) > 1 else (lambda _: 0.0)
            print(f"{exp:<16} {label:<44} {statistics.mean(auc):>12.5f} ± {sd(auc):.5f} "
                  f"{statistics.mean(ll):>14.5f} ± {sd(ll):.5f} {statistics.mean(r['epochs'] for r in rs):>7.1f}"
                  f"   per seed AUC {[round(a, 5) for a in auc]}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
