"""`bars bench esmm` (`make bench-esmm`): ESMM's post-click conversion rate against a CVR model trained on clicked
rows only, on the synthetic funnel (bars.data.funnel), over several training seeds.

The question ESMM answers (Ma et al., SIGIR 2018): a CVR model is used on every impression, but a conventional one
is trained on clicked impressions only (sample-selection bias, sparse labels). The funnel generator knows, for
every impression, whether it would convert if clicked (``oracle=True``: ``would_convert``), so the CVR a model
predicts can be scored over the entire space, which real data cannot do. Both models see the same features (user,
item, category, hour, price), embedding size and MLP tower ([360, 200, 80] by default, ESMM's CVR tower):

- ``esmm``: trained on every training impression, losses on click and conversion (= click AND buy, CTCVR);
  pCVR is its CVR tower (``ESMM.cvr_logits``); early stopping on validation CTCVR AUC;
- ``clicked-only``: a DNN (bars ``dnn``) on the clicked training impressions, label conversion (= buy, given the
  click); early stopping on validation AUC over the clicked validation rows.

Printed per seed and as mean +- std: CVR AUC over all test impressions against ``would_convert`` (entire space),
CVR AUC on the clicked test impressions against the observed conversion (the paper's usual CVR AUC), and ESMM's
CTR / CTCVR AUC. One data set (a seeded 8:1:1 row split); the training seed varies. The funnel's size and generator
seed are the shipped ``data=synthetic_funnel``'s (conf/data/synthetic_funnel.yaml: one source), unless flags change
them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from bars import metrics
from bars.data.funnel import generate_funnel
from bars.data.loader import SplitTensors
from bars.data.spec import Feature, FeatureSpec
from bars.models import build
from bars.train import TrainConfig, fit, predict

CATEGORICAL = ("user", "item", "category", "hour")


def shipped_size() -> dict[str, int]:
    """The shipped funnel's generator arguments (conf/data/synthetic_funnel.yaml): users, impressions, items,
    categories, seed. Dense enough for the click task to learn the users' tastes and the items' vectors (about 200
    impressions a user, 400 an item): ESMM's CVR tower shares those embeddings. docs/fidelity.md section 17 has
    sparser funnels (e.g. 1,500 users x 40 impressions, 2,000 items: CTR AUC 0.61) where the clicked-only model was
    ahead."""
    from bars.config import compose

    d = compose(["data=synthetic_funnel"]).data
    return {"users": int(d.users), "impressions": int(d.impressions_per_user), "items": int(d["items"]),
            "categories": int(d.categories), "seed": int(d.generator_seed)}


def load(users: int, seed: int = 0, items: int = 2000, impressions: int = 40, categories: int = 30
         ) -> tuple[FeatureSpec, dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """The funnel with the oracle columns, encoded as tensors: categorical index = value + 1 (0 is padding),
    price as log(price) numeric; click, conversion and the oracle columns (would_convert, convert_probability,
    click_probability) and price as numpy arrays."""
    with tempfile.TemporaryDirectory() as d:
        path = generate_funnel(Path(d) / "funnel.parquet", users=users, items=items, categories=categories,
                               impressions_per_user=impressions, seed=seed, oracle=True)
        t = pq.read_table(path).to_pydict()
    feats = [Feature(c, "categorical", vocab_size=int(max(t[c])) + 2) for c in CATEGORICAL]
    feats.append(Feature("price", "numeric"))
    cols = {c: torch.tensor(t[c], dtype=torch.int64) + 1 for c in CATEGORICAL}
    cols["price"] = torch.log(torch.tensor(t["price"], dtype=torch.float32))
    labels = {k: np.asarray(t[k], dtype=np.float32) for k in ("click", "conversion", "would_convert")}
    labels |= {k: np.asarray(t[k], dtype=np.float64) for k in ("convert_probability", "click_probability", "price")}
    spec = FeatureSpec(dataset="synthetic_funnel_bench", label="click", labels=("click", "conversion"),
                       features=tuple(feats))
    return spec, cols, labels


def _split(cols, y: np.ndarray, idx: np.ndarray, names: tuple[str, ...]) -> SplitTensors:
    i = torch.from_numpy(idx)
    yt = torch.from_numpy(y[idx])
    first = yt[:, 0] if yt.dim() == 2 else yt
    return SplitTensors({k: v[i] for k, v in cols.items()}, first, yt if yt.dim() == 2 else None, names)


def run(users: int, seeds: list[int], epochs: int, tower: tuple[int, ...], batch: int, lr: float,
        say=print, items: int = 2000, impressions: int = 40, categories: int = 30, data_seed: int = 0
        ) -> dict[str, list[float]]:
    spec, cols, lab = load(users, seed=data_seed, items=items, impressions=impressions, categories=categories)
    n = len(lab["click"])
    perm = np.random.default_rng(2021).permutation(n)
    tr, va, te = perm[: int(0.8 * n)], perm[int(0.8 * n): int(0.9 * n)], perm[int(0.9 * n):]
    clicked = lab["click"] == 1
    say(f"funnel: {n:,} impressions ({users:,} users x {impressions} impressions on {items:,} items, "
        f"{categories} categories, generator seed {data_seed}), click rate {lab['click'].mean():.3f}, conversion (CTCVR) "
        f"rate {lab['conversion'].mean():.4f}, would-convert rate {lab['would_convert'].mean():.3f}; train "
        f"{len(tr):,} rows ({int(clicked[tr].sum()):,} clicked), test {len(te):,} ({int(clicked[te].sum()):,} "
        f"clicked)")
    yc = lab["click"][te] == 1
    for name, score in (("the generator's conversion probability (the ceiling)", lab["convert_probability"]),
                        ("-price alone", -lab["price"])):
        say(f"  CVR AUC of {name}: all test impressions {metrics.auc(lab['would_convert'][te], score[te]):.4f}, "
            f"clicked test rows {metrics.auc(lab['conversion'][te][yc], score[te][yc]):.4f}")
    say(f"  CTR AUC of the generator's click probability (the ceiling): "
        f"{metrics.auc(lab['click'][te], lab['click_probability'][te]):.4f}")
    both = np.stack([lab["click"], lab["conversion"]], 1)
    test_all = _split(cols, both, te, ("click", "conversion"))
    single_spec = FeatureSpec(dataset=spec.dataset, label="conversion", features=spec.features)
    out: dict[str, list[float]] = {k: [] for k in ("esmm_entire", "base_entire", "esmm_clicked", "base_clicked",
                                                     "esmm_ctr", "esmm_ctcvr")}
    for seed in seeds:
        t0 = time.perf_counter()
        common = {"learning_rate": lr, "batch_size": batch, "max_epochs": epochs, "embedding_regularizer": 1e-6,
                  "device": "cpu"}
        torch.manual_seed(seed)
        esmm = build("esmm", spec, {"embedding_dim": 10, "tower_hidden_units": tower})
        r_esmm = fit(esmm, _split(cols, both, tr, ("click", "conversion")),
                     _split(cols, both, va, ("click", "conversion")),
                     TrainConfig(**common, monitor="val_auc_conversion"), seed=seed)
        esmm.eval()
        with torch.no_grad():
            p_cvr = torch.sigmoid(esmm.cvr_logits(test_all.features)).numpy()
        p_both = predict(esmm, test_all).numpy()
        torch.manual_seed(seed)
        base = build("dnn", single_spec, {"embedding_dim": 10, "hidden_units": tower, "activation": "relu",
                                          "batch_norm": False, "dropout": 0.0})
        r_base = fit(base, _split(cols, lab["conversion"], tr[clicked[tr]], ()),
                     _split(cols, lab["conversion"], va[clicked[va]], ()), TrainConfig(**common), seed=seed)
        q_cvr = predict(base, test_all).numpy()
        out["esmm_entire"].append(metrics.auc(lab["would_convert"][te], p_cvr))
        out["base_entire"].append(metrics.auc(lab["would_convert"][te], q_cvr))
        out["esmm_clicked"].append(metrics.auc(lab["conversion"][te][yc], p_cvr[yc]))
        out["base_clicked"].append(metrics.auc(lab["conversion"][te][yc], q_cvr[yc]))
        out["esmm_ctr"].append(metrics.auc(lab["click"][te], p_both[:, 0]))
        out["esmm_ctcvr"].append(metrics.auc(lab["conversion"][te], p_both[:, 1]))
        say(f"seed {seed}: CVR AUC over all test impressions (vs would_convert): ESMM {out['esmm_entire'][-1]:.4f}, "
            f"clicked-only {out['base_entire'][-1]:.4f}; on clicked test rows (vs conversion): ESMM "
            f"{out['esmm_clicked'][-1]:.4f}, clicked-only {out['base_clicked'][-1]:.4f}; ESMM CTR AUC "
            f"{out['esmm_ctr'][-1]:.4f}, CTCVR AUC {out['esmm_ctcvr'][-1]:.4f}; best epoch ESMM {r_esmm.best_epoch} "
            f"of {r_esmm.epochs}, clicked-only {r_base.best_epoch} of {r_base.epochs} "
            f"({time.perf_counter() - t0:.0f} s)")
    return out


def _ms(v: list[float]) -> str:
    return f"{statistics.mean(v):.4f} +- {statistics.stdev(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = shipped_size()
    ap.add_argument("--users", type=int, default=size["users"], help="generated users (default: the shipped "
                    "data=synthetic_funnel's data.users)")
    ap.add_argument("--impressions", type=int, default=size["impressions"],
                    help="mean impressions per user (default: data.impressions_per_user)")
    ap.add_argument("--items", type=int, default=size["items"], help="generated items (default: data.items)")
    ap.add_argument("--categories", type=int, default=size["categories"],
                    help="item categories (default: data.categories)")
    ap.add_argument("--data-seed", type=int, default=size["seed"], help="generator seed (default: "
                    "data.generator_seed)")
    ap.add_argument("--seeds", default="0,1,2", help="training seeds")
    ap.add_argument("--epochs", type=int, default=20, help="max epochs (early stopping as the protocol)")
    ap.add_argument("--tower", default="360,200,80", help="MLP widths of the CVR tower and the baseline")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-3)
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    tower = tuple(int(u) for u in a.tower.split(","))
    torch.set_num_threads(max(1, torch.get_num_threads()))
    r = run(a.users, seeds, a.epochs, tower, a.batch, a.lr, items=a.items, impressions=a.impressions,
            categories=a.categories, data_seed=a.data_seed)
    diff = [x - y for x, y in zip(r["esmm_entire"], r["base_entire"], strict=True)]
    print(f"\nCVR AUC over all test impressions (entire space, vs would_convert), {len(seeds)} seeds:")
    print(f"  ESMM (pCVR tower)        {_ms(r['esmm_entire'])}")
    print(f"  clicked-only CVR (DNN)   {_ms(r['base_entire'])}")
    print(f"  ESMM - clicked-only      {_ms(diff)} (per seed: {', '.join(f'{d:+.4f}' for d in diff)})")
    print(f"CVR AUC on clicked test rows (vs conversion): ESMM {_ms(r['esmm_clicked'])}, "
          f"clicked-only {_ms(r['base_clicked'])}")
    print(f"ESMM CTR AUC {_ms(r['esmm_ctr'])}, CTCVR AUC {_ms(r['esmm_ctcvr'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
