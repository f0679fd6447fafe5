"""`bars compress run_id=<id> [rank=<k> | ratio=<r>] [rows=<n>]` (`make compress`): low-rank compression of a
trained run by atomic feature mimicking (Yu et al., "Unified Low-rank Compression Framework for Click-through
Rate Prediction", KDD 2024 ADS).

Each ``nn.Linear`` ``y = W x + b`` of the run's model (best weights, eval mode) is replaced, in registration order,
by two Linears of rank ``k`` that reproduce the projection of its OUTPUTS onto their top-``k`` principal
directions:

    mu, C = mean and covariance of y over ``rows`` training rows;  U_k = top-k eigenvectors of C
    y' = U_k U_k^T (y - mu) + mu = U_k (U_k^T W x + U_k^T (b - mu)) + mu
    -> Linear(in, k): weight U_k^T W, bias U_k^T (b - mu);  Linear(k, out): weight U_k, bias mu

(the paper's step 2 / step 3: it compresses output features, not weights, so no retraining). The statistics of a
layer are collected with the layers before it already compressed (the error of earlier layers is what later ones
see at inference). A layer is kept as it is when the factorisation would not have fewer parameters (e.g. an
output Linear to one unit), or when the model reads its weight directly (the model then fails on the
replacement, which is checked on a batch). Embedding tables are not compressed here (the dense parameters are).

Ranks: ``rank=<k>`` for every layer (capped at ``min(in, out)``); ``ratio=<r>`` (default 3) makes the model's
dense parameters (everything outside the embedding tables, the Linears that stay included) at least ``r`` times
fewer, and spends that budget where it keeps the most output variance: every eligible Linear starts at rank 1 and
the next rank goes, one at a time, to the layer whose next principal direction holds the largest share of its
output variance per parameter it costs (eigenvalues from one pass over the uncompressed model), while the budget
allows and the factorisation stays smaller than the layer. A ratio the kept parameters alone exceed is an error. The result is evaluated on the validation and test splits next to the uncompressed model, timed on
CPU, and recorded as an MLflow child run of the source run (``stage=compress``): dense parameters, model bytes
(the serialised state dict), CPU latency per batch, AUC/logloss before and after, and the ranks; the compressed
weights go to ``<paths.checkpoints>/<run id>/compressed-<label>.pt`` (:func:`load_compressed` rebuilds the
model). The leaderboard shows a compressed run of a final run as its own row, ``<model> [compressed <label>]``.
"""

from __future__ import annotations

import io
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

OPTIONS = ("run_id", "rank", "ratio", "rows")
DEFAULT_RATIO = 3.0
DEFAULT_ROWS = 50_000
STAT_BATCH = 4096
LATENCY_BATCH = 1024
LATENCY_REPEATS = 15


class CompressError(ValueError):
    """A bad rank, ratio or rows value, or nothing to compress."""


# --------------------------------------------------------------------------------------------- options
def parse_rank(rank: Any = None, ratio: Any = None, rows: Any = None) -> tuple[int | None, float | None, int]:
    """``(rank, ratio, rows)`` from the command's strings: exactly one of rank / ratio (ratio 3 when neither)."""
    if rank not in (None, "") and ratio not in (None, ""):
        raise CompressError(f"give rank= or ratio=, not both (rank={rank}, ratio={ratio})")
    k = r = None
    if rank not in (None, ""):
        try:
            k = int(str(rank))
        except ValueError:
            raise CompressError(f"rank must be a positive integer, got {rank!r}") from None
        if k < 1:
            raise CompressError(f"rank must be a positive integer, got {rank!r}")
    else:
        try:
            r = float(str(ratio)) if ratio not in (None, "") else DEFAULT_RATIO
        except ValueError:
            raise CompressError(f"ratio must be a number > 1 (how many times fewer dense parameters), got "
                                f"{ratio!r}") from None
        if not math.isfinite(r) or r <= 1.0:
            raise CompressError(f"ratio must be a number > 1 (how many times fewer dense parameters), got "
                                f"{ratio!r}")
    try:
        n = int(str(rows)) if rows not in (None, "") else DEFAULT_ROWS
    except ValueError:
        raise CompressError(f"rows must be a positive integer, got {rows!r}") from None
    if n < 1:
        raise CompressError(f"rows must be a positive integer, got {rows!r}")
    return k, r, n


def layer_rank(layer: nn.Linear, rank: int | None, ratio: float | None) -> int | None:
    """The rank this layer gets, or None when a factorisation would not have fewer parameters."""
    i, o = layer.in_features, layer.out_features
    full = i * o + (o if layer.bias is not None else 0)
    if rank is not None:
        k = min(rank, i, o)
    else:  # the same ratio in every layer (compress_model spends one budget over the model instead)
        assert ratio is not None
        k = math.floor((full / ratio - o) / (i + o + 1))
    if k < 1 or k * (i + o + 1) + o >= full:
        return None
    return k


def factorized_params(i: int, o: int, k: int) -> int:
    return k * (i + o + 1) + o


def max_rank(layer: nn.Linear) -> int:
    """The largest rank whose factorisation has fewer parameters than the layer (0: none)."""
    i, o = layer.in_features, layer.out_features
    full = i * o + (o if layer.bias is not None else 0)
    return max(0, min(i, o, math.ceil((full - o) / (i + o + 1)) - 1))


def allocate_ranks(layers: dict[str, nn.Linear], eigenvalues: dict[str, torch.Tensor], budget: float
                   ) -> dict[str, int]:
    """Ranks for ``layers`` whose factorisations total at most ``budget`` parameters: rank 1 each, then greedily
    the next rank to the layer whose next eigenvalue (share of its output variance) per added parameter is the
    largest. ``eigenvalues[name]``: descending, non-negative."""
    import heapq

    ranks = {n: 1 for n in layers}
    used = sum(factorized_params(m.in_features, m.out_features, 1) for m in layers.values())
    if used > budget:
        raise CompressError(f"the budget ({budget:,.0f} parameters) does not fit even rank 1 in every Linear "
                            f"({used:,} parameters)")
    share = {n: e / e.sum() if float(e.sum()) > 0 else torch.zeros_like(e) for n, e in eigenvalues.items()}
    heap = []
    for n, m in layers.items():
        if max_rank(m) > 1 and len(share[n]) > 1 and float(share[n][1]) > 1e-9:
            heap.append((-float(share[n][1]) / (m.in_features + m.out_features + 1), n))
    heapq.heapify(heap)
    while heap:
        _, n = heapq.heappop(heap)
        m = layers[n]
        cost = m.in_features + m.out_features + 1
        if used + cost > budget:
            continue  # a cheaper layer may still fit
        ranks[n] += 1
        used += cost
        k = ranks[n]
        if k < max_rank(m) and k < len(share[n]) and float(share[n][k]) > 1e-9:  # a zero direction gains nothing
            heapq.heappush(heap, (-float(share[n][k]) / cost, n))
    return ranks


# --------------------------------------------------------------------------------------------- the transform
def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def low_rank_pair(in_features: int, out_features: int, k: int) -> nn.Sequential:
    """The replacement's structure: ``Linear(in, k)`` then ``Linear(k, out)``."""
    return nn.Sequential(nn.Linear(in_features, k), nn.Linear(k, out_features))


@torch.no_grad()
def output_statistics(model: nn.Module, layer: nn.Linear, batches: list[dict[str, torch.Tensor]]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[out]`` and covariance ``[out, out]`` (float64) of ``layer``'s outputs over ``batches`` (every call
    of the layer counts: a Linear used twice per row contributes both outputs)."""
    o = layer.out_features
    s1 = torch.zeros(o, dtype=torch.float64)
    s2 = torch.zeros(o, o, dtype=torch.float64)
    count = [0]

    def hook(_m, _inp, out):
        y = out.detach().reshape(-1, o).to(torch.float64)
        s1.add_(y.sum(0))
        s2.add_(y.T @ y)
        count[0] += y.shape[0]

    handle = layer.register_forward_hook(hook)
    try:
        for xb in batches:
            model(xb)
    finally:
        handle.remove()
    n = max(count[0], 1)
    mu = s1 / n
    cov = s2 / n - torch.outer(mu, mu)
    return mu, (cov + cov.T) / 2


@torch.no_grad()
def all_output_eigenvalues(model: nn.Module, layers: dict[str, nn.Linear], batches: list[dict[str, torch.Tensor]]
                           ) -> dict[str, torch.Tensor]:
    """Descending eigenvalues of each layer's output covariance, from one pass over ``batches``."""
    sums = {n: [torch.zeros(m.out_features, dtype=torch.float64),
                torch.zeros(m.out_features, m.out_features, dtype=torch.float64), 0] for n, m in layers.items()}

    def hook_of(n: str, o: int):
        def hook(_m, _inp, out):
            y = out.detach().reshape(-1, o).to(torch.float64)
            sums[n][0].add_(y.sum(0))
            sums[n][1].add_(y.T @ y)
            sums[n][2] += y.shape[0]
        return hook

    handles = [m.register_forward_hook(hook_of(n, m.out_features)) for n, m in layers.items()]
    try:
        for xb in batches:
            model(xb)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for n, (s1, s2, c) in sums.items():
        c = max(c, 1)
        mu = s1 / c
        cov = s2 / c - torch.outer(mu, mu)
        out[n] = torch.linalg.eigvalsh((cov + cov.T) / 2).clamp_min(0).flip(0)
    return out


@torch.no_grad()
def mimic(layer: nn.Linear, mu: torch.Tensor, cov: torch.Tensor, k: int) -> nn.Sequential:
    """The rank-``k`` pair reproducing ``U_k U_k^T (y - mu) + mu`` of ``layer``'s output ``y``."""
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    u = vecs[:, -k:].flip(-1)  # [out, k], the top-k principal directions
    w = layer.weight.detach().to(torch.float64)
    b = layer.bias.detach().to(torch.float64) if layer.bias is not None else torch.zeros_like(mu)
    pair = low_rank_pair(layer.in_features, layer.out_features, k).to(layer.weight.device, layer.weight.dtype)
    dtype = layer.weight.dtype
    pair[0].weight.copy_((u.T @ w).to(dtype))
    pair[0].bias.copy_((u.T @ (b - mu)).to(dtype))
    pair[1].weight.copy_(u.to(dtype))
    pair[1].bias.copy_(mu.to(dtype))
    return pair


@dataclass
class LayerReport:
    name: str
    in_features: int
    out_features: int
    rank: int | None  # None: kept as it is
    params_before: int
    params_after: int
    kept_variance: float | None = None  # share of the output variance the top-k directions hold
    note: str = ""


@dataclass
class Compression:
    model: nn.Module
    layers: list[LayerReport] = field(default_factory=list)

    @property
    def ranks(self) -> dict[str, int]:
        return {r.name: r.rank for r in self.layers if r.rank is not None}


@torch.no_grad()
def compress_model(model: nn.Module, batches: list[dict[str, torch.Tensor]], *, rank: int | None = None,
                   ratio: float | None = None) -> Compression:
    """Compress ``model`` in place (every eligible ``nn.Linear``, in registration order) from its outputs on
    ``batches`` (training rows); returns the model and a report per Linear."""
    model.eval()
    reports: list[LayerReport] = []
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    check = batches[0]
    planned: dict[str, int] | None = None
    if rank is None:  # ratio: one budget for the whole model, spent where it keeps the most variance
        assert ratio is not None
        eligible = {n: m for n, m in linears if max_rank(m) >= 1}
        dense = dense_parameters(model)
        kept = dense - sum(sum(p.numel() for p in m.parameters()) for m in eligible.values())
        budget = dense / ratio - kept
        least = sum(factorized_params(m.in_features, m.out_features, 1) for m in eligible.values())
        if not eligible or budget < least:
            raise CompressError(f"ratio={ratio:g}: the dense parameters ({dense:,}) cannot become {ratio:g}x fewer: "
                                f"{kept:,} of them are not in a Linear that a factorisation makes smaller, and "
                                f"rank 1 in every other Linear takes {least:,}")
        planned = allocate_ranks(eligible, all_output_eigenvalues(model, eligible, batches), budget)
    for name, layer in linears:
        i, o = layer.in_features, layer.out_features
        full = sum(p.numel() for p in layer.parameters())
        k = layer_rank(layer, rank, None) if planned is None else planned.get(name)
        if k is None:
            reports.append(LayerReport(name, i, o, None, full, full, note="no saving at this rank"))
            continue
        mu, cov = output_statistics(model, layer, batches)
        pair = mimic(layer, mu, cov, k)
        evals = torch.linalg.eigvalsh(cov).clamp_min(0)
        kept = float(evals[-k:].sum() / evals.sum()) if float(evals.sum()) > 0 else 1.0
        _set_module(model, name, pair)
        try:
            model(check)
        except (AttributeError, RuntimeError, TypeError, IndexError) as e:  # the model reads the Linear itself
            _set_module(model, name, layer)
            reports.append(LayerReport(name, i, o, None, full, full,
                                       note=f"kept: the model uses the layer directly ({type(e).__name__})"))
            continue
        reports.append(LayerReport(name, i, o, k, full, sum(p.numel() for p in pair.parameters()), kept))
    return Compression(model, reports)


def apply_structure(model: nn.Module, ranks: dict[str, int]) -> nn.Module:
    """``model`` with the named Linears replaced by rank-``k`` pairs (uninitialised weights): the structure a
    compressed checkpoint's state dict loads into."""
    for name, k in ranks.items():
        layer = model.get_submodule(name)
        if not isinstance(layer, nn.Linear):
            raise CompressError(f"{name} is not a Linear of this model ({type(layer).__name__})")
        _set_module(model, name, low_rank_pair(layer.in_features, layer.out_features, k))
    return model


def save_compressed(result: Compression, path: Path) -> Path:
    """The compressed weights and their ranks (``torch.load(weights_only=True)`` reads them), written atomically."""
    from bars.fileio import atomic_write

    state = {"state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
             "ranks": json.dumps(result.ranks)}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(state, f)

    atomic_write(path, write)
    return path


def load_compressed(model: nn.Module, path: str | Path) -> nn.Module:
    """The uncompressed ``model`` (built from the run's config) turned into the compressed one saved at ``path``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    apply_structure(model, {k: int(v) for k, v in json.loads(state["ranks"]).items()})
    model.load_state_dict(state["state_dict"])
    return model.eval()


# --------------------------------------------------------------------------------------------- measures
def dense_parameters(model: nn.Module) -> int:
    """Trainable parameters outside the embedding tables (``split_parameters``'s net part, or the model's own)."""
    own = getattr(model, "split_parameters", None)
    if callable(own):
        _, net = own()
    else:
        from bars.models.layers import split_parameters

        _, net = split_parameters(model)
    return sum(p.numel() for p in net if p.requires_grad)


def model_bytes(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


@torch.inference_mode()
def cpu_latency_ms(model: nn.Module, batch: dict[str, torch.Tensor], repeats: int = LATENCY_REPEATS) -> float:
    """Median milliseconds of one forward pass over ``batch`` on CPU (after two warm-up passes)."""
    model.eval()
    for _ in range(2):
        model(batch)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(batch)
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(statistics.median(times))


def training_batches(train: Any, rows: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``rows`` training rows (a seeded random subset when the split is larger), in batches."""
    n = len(train)
    take = min(rows, n)
    out = []
    for xb, _ in train.batches(STAT_BATCH, shuffle=take < n, seed=seed):
        out.append(xb)
        if sum(len(next(iter(b.values()))) for b in out) >= take:
            break
    return out


# --------------------------------------------------------------------------------------------- the command
@dataclass
class CompressResult:
    run_id: str
    label: str
    before: dict[str, float]
    after: dict[str, float]
    layers: list[LayerReport]
    checkpoint: Path
    child_run_id: str | None


def label_of(rank: int | None, ratio: float | None) -> str:
    return f"rank={rank}" if rank is not None else f"ratio={ratio:g}"


def compress_run(run_id: str, current: DictConfig, *, rank: Any = None, ratio: Any = None, rows: Any = None,
                 track: bool = True, say: Any = print) -> CompressResult:
    """Compress run ``run_id`` (from the store at ``current.tracking.uri``), evaluate, record a child run."""
    from bars.data.loader import load_dataset
    from bars.recorded import child_run, load_recorded_run
    from bars.train import evaluate

    k, r, n_rows = parse_rank(rank, ratio, rows)
    rec = load_recorded_run(run_id, current, say=say)
    if rec.method:  # its row, its checkpoint's reload (load_compressed) and its masks are not handled here yet
        raise CompressError(f"run {run_id} is a {rec.method} run ({rec.model_label}): bars compress supports plain "
                            f"runs only; compress the backbone's run, or export this one (make export RUN={run_id})")
    label = label_of(k, r)
    ds = load_dataset(rec.folder, splits=("train", "valid", "test"))
    model = rec.model
    threads = torch.get_num_threads()
    test = ds.splits["test"]
    lat_batch = next(test.batches(LATENCY_BATCH, shuffle=False))[0]

    def measure(m: nn.Module) -> dict[str, float]:
        out = {"dense_params": float(dense_parameters(m)), "params": float(sum(p.numel() for p in m.parameters())),
               "model_bytes": float(model_bytes(m)), "latency_ms": cpu_latency_ms(m, lat_batch)}
        for split in ("valid", "test"):
            scores = {key: float(v) for key, v in evaluate(m, ds.splits[split]).items() if math.isfinite(v)}
            out |= {f"{split}_{key}": v for key, v in scores.items()}
            for name in ("auc", "logloss"):  # a multi-task model's first task (auc_<task>) stands for the model
                first = next((key for key in scores if key == name or key.startswith(name + "_")), None)
                out[f"{split}_{name}"] = scores[first] if first else math.nan
        return out

    before = measure(model)
    t0 = time.perf_counter()
    result = compress_model(model, training_batches(ds.splits["train"], n_rows, seed=int(rec.cfg.get("seed", 0))),
                            rank=k, ratio=r)
    seconds = time.perf_counter() - t0
    if not result.ranks:
        raise CompressError(f"{label}: no Linear of model {rec.cfg.model.name} gets fewer parameters "
                            f"({', '.join(f'{x.name} {x.in_features}x{x.out_features}' for x in result.layers) or 'it has no nn.Linear'})"
                            + ("; choose a smaller rank" if k is not None else "; choose a smaller ratio"))
    after = measure(result.model)
    ckpt = Path(str(rec.cfg.paths.checkpoints)) / run_id / f"compressed-{label.replace('=', '')}.pt"
    save_compressed(result, ckpt)

    from bars.leaderboard import row_key

    model_id = rec.record.tags.get("model", rec.cfg.model.id)
    tags = {"stage": "compress", "source_run": run_id, "compression": label, "model": model_id,
            "model_class": str(rec.cfg.model.name), "data": str(rec.cfg.data.name),
            "data_fingerprint": rec.record.tags.get("data_fingerprint"), "seed": rec.record.tags.get("seed"),
            "source_stage": rec.record.stage or "",
            "source_row": row_key(rec.record), "checkpoint": str(ckpt), "device": "cpu"}
    tags = {key: v for key, v in tags.items() if v is not None}
    params = {"compress": {"method": "atomic_feature_mimicking", "rank": k, "ratio": r, "rows": n_rows,
                           "ranks": json.dumps(result.ranks)}}
    for key in ("data.protocol_name", "protocol.seed", "data.bars_split"):
        if key in rec.record.params:
            params[key] = rec.record.params[key]
    child_id = None
    with child_run(rec, track, f"compress__{model_id}__{label}", tags, params) as child:
        if child is not None:
            child_id = child.run_id
            m = {f"{key}_before": v for key, v in before.items()} | {f"{key}_after": v for key, v in after.items()}
            m |= {"test_auc": after["test_auc"], "test_logloss": after["test_logloss"],
                  "val_auc": after["valid_auc"], "val_logloss": after["valid_logloss"],
                  "n_params": after["params"], "compress_seconds": seconds, "cpu_threads": float(threads),
                  "dense_params_ratio": before["dense_params"] / after["dense_params"],
                  "delta_test_auc": after["test_auc"] - before["test_auc"],
                  "compressed_layers": float(len(result.ranks))}
            child.log_metrics(m)
            child.log_dict({"layers": [vars(x) for x in result.layers]}, "compress/layers.json")
    say(report(rec.describe(), label, before, after, result.layers, ckpt, child_id, run_id))
    return CompressResult(run_id, label, before, after, result.layers, ckpt, child_id)


def report(what: str, label: str, before: dict, after: dict, layers: list[LayerReport], ckpt: Path,
           child_id: str | None, run_id: str) -> str:
    lines = [f"bars compress: {what}, {label} (atomic feature mimicking)"]
    for x in layers:
        if x.rank is None:
            lines.append(f"  {x.name:<24} {x.in_features}x{x.out_features}  kept ({x.note})")
        else:
            lines.append(f"  {x.name:<24} {x.in_features}x{x.out_features}  rank {x.rank}: {x.params_before:,} -> "
                         f"{x.params_after:,} params, {100 * (x.kept_variance or 0):.2f}% of the output variance")
    lines.append(f"  {'':<14}{'before':>14}{'after':>14}")
    for key, fmt in (("dense_params", "{:,.0f}"), ("params", "{:,.0f}"), ("model_bytes", "{:,.0f}"),
                     ("latency_ms", "{:.3f}"), ("valid_auc", "{:.6f}"), ("valid_logloss", "{:.6f}"),
                     ("test_auc", "{:.6f}"), ("test_logloss", "{:.6f}")):
        lines.append(f"  {key:<14}{fmt.format(before[key]):>14}{fmt.format(after[key]):>14}")
    lines.append(f"  dense parameters {before['dense_params'] / after['dense_params']:.2f}x fewer; test AUC "
                 f"{after['test_auc'] - before['test_auc']:+.6f}; weights {ckpt}"
                 + (f"; recorded as MLflow run {child_id} (child of {run_id})" if child_id else ""))
    return "\n".join(lines)


def main() -> int:
    """``bars compress run_id=<id> [rank=<k> | ratio=<r>] [rows=<n>]``."""
    from bars.config import hydra_command
    from bars.data.errors import DataError
    from bars.predict import PredictError, parse_options
    from bars.recorded import RecordedRunError

    try:
        opts, rest = parse_options(sys.argv[1:], OPTIONS, "compress")
    except PredictError as e:
        print(str(e), file=sys.stderr)
        return 2
    if not opts.get("run_id"):
        print("usage: bars compress run_id=<MLflow run id> [rank=<k> | ratio=<r>] [rows=<n>]   "
              "(make compress RUN=<id> [RANK=<k> | RATIO=<r>])", file=sys.stderr)
        return 2
    sys.argv = [sys.argv[0], *rest]
    return hydra_command("compress", lambda cfg, _: compress_run(opts["run_id"], cfg, rank=opts.get("rank"),
                                                                 ratio=opts.get("ratio"), rows=opts.get("rows"))
                         and 0, (CompressError, RecordedRunError, DataError), error_code=1)


if __name__ == "__main__":
    raise SystemExit(main())
