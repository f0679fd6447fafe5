"""`bars bench train`: training samples/s on CPU through the real trainer (``bars.train.fit``), per model.

    bars bench train [--models dcn,lr] [--rows 49152] [--epochs 2] [--threads N] [--profile] [--skip-zoo]
                     [--criteo-models dcn,deepfm,dnn] [--device cpu|cuda|cuda:N]

1. Every registered model, its ``conf/model/<m>.yaml`` defaults, embedding dim 10, batch 4096, on a synthetic
   Criteo-format dataset (13 numeric fields I1-I13 + 26 categorical fields C1-C26, log-spaced vocabularies from 4 to
   300,000 rows, ~1.3M embedding rows in all; feature groups I* context, C1-C13 user, C14-C26 item), embedding
   regularizer 1e-5 (so the whole-table regularizer's cost is included).
2. DCN at the Frappe_x1 best configuration: 10 categorical fields with the vocabulary sizes BARS logged,
   embedding 10, DNN [400, 400, 400], 3 cross layers, batch norm, dropout 0.2, embedding regularizer 0.05.
   Goal: >= 30,000 training samples/s on the 2-core CPU machine, validation at least as fast per row.
3. Criteo shape (``--criteo-models``, default DCN, DeepFM, DNN at their conf defaults): the BARS Criteo_x1 layout,
   39 categorical fields (I1-I13 bucketed as BARS does, 13 vocabularies of 65-125 rows; C1-C26 log-spaced from 4 to
   1,000,000 rows), 2.5M embedding rows in all (the published Criteo_x1 DCN's 20.9M parameters imply ~2.1M), so
   the largest tables, their gradients and Adam state are Criteo-sized; embedding 10, regularizer 1e-5.
   ``--frappe-models`` adds other models at the Frappe_x1 shape (their conf defaults, embedding 10).

``--device cuda`` runs every case on the GPU (fit moves the split there once; ``step/s`` moves its batch too and
synchronises before reading the clock); ``scripts/gpu-check`` uses it.

Columns: ``train/s`` = training rows / training seconds of the last epoch measured by ``fit`` (batching,
forward, loss + regularizers, backward, clipping, Adam: everything but validation; the first epoch is warm-up);
``train/cpu-s`` = the same rows per CPU-second of this process (all threads; on a machine shared with other
jobs wall-clock figures fall, this one much less: with ``--threads 1`` it is the single-core speed);
``step/s`` = the same step on one fixed batch with no data pipeline (a ceiling: what the model costs);
``valid/s`` = rows/s of ``bars.train.evaluate`` (the trainer's eval batch, 8192, no_grad, AUC + logloss included).
``--profile`` prints torch.profiler's top operators for the Frappe DCN training step.
``--breakdown`` (``make bench-train ARGS=--breakdown``) instead times whole runs by phase, tracking off and on
(``bars.benchmarks.fixed_cost``: a run's fixed cost, issue 16).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# The Frappe_x1 shapes (vocabularies BARS logged) and DCN's best configuration live with the model micro-bench.
from bars.benchmarks.train_models import FRAPPE_DCN_BEST, frappe_like_spec

GOAL_SAMPLES_PER_S = 30_000

def criteo_like_spec():
    from bars.data.spec import Feature, FeatureSpec

    vocab = np.geomspace(4, 300_000, 26).astype(int)
    # feature groups (for DSSM, FLEN, PPNet; Criteo's fields are anonymous, so the split is arbitrary but fixed):
    # I1-I13 context, C1-C13 user, C14-C26 item
    feats = [Feature(f"I{i}", "numeric", group="context") for i in range(1, 14)]
    feats += [Feature(f"C{i}", "categorical", vocab_size=int(v), group="user" if i <= 13 else "item")
              for i, v in enumerate(vocab, 1)]
    return FeatureSpec(dataset="synthetic_criteo_like", label="label", features=tuple(feats))


def criteo_shape_spec():
    """BARS Criteo_x1's layout at its real embedding size: 39 categorical fields, the largest 1,000,000 rows."""
    from bars.data.spec import Feature, FeatureSpec

    feats = [Feature(f"I{i}", "categorical", vocab_size=60 + 5 * i) for i in range(1, 14)]
    vocab = np.geomspace(4, 1_000_000, 26).round().astype(int)
    feats += [Feature(f"C{i}", "categorical", vocab_size=int(v)) for i, v in enumerate(vocab, 1)]
    return FeatureSpec(dataset="criteo_x1_shape", label="label", features=tuple(feats))


def embedding_rows(spec) -> int:
    return sum(f.vocab_size for f in spec.features if f.vocab_size)


def synthetic_split(spec, rows: int, seed: int):
    """A SplitTensors with skewed (Zipf-like) categorical draws, numeric values ~ |N(0,1)|, 25 % positives."""
    from bars.data.loader import SplitTensors

    g = torch.Generator().manual_seed(seed)
    feats = {}
    for f in spec.features:
        if f.type == "categorical":
            u = torch.rand(rows, generator=g)
            idx = (u**3 * (f.vocab_size - 2)).long() + 2  # more mass on frequent (low) indices
            feats[f.name] = idx.clamp_max(f.vocab_size - 1).to(torch.int32)
        elif f.type == "numeric":
            feats[f.name] = torch.randn(rows, generator=g).abs()
        else:  # pragma: no cover - no sequence fields here
            feats[f.name] = torch.randint(0, f.vocab_size, (rows, f.max_len), generator=g, dtype=torch.int32)
    label = (torch.rand(rows, generator=g) < 0.25).float()
    return SplitTensors(feats, label)


@dataclass
class Row:
    name: str
    params: int
    train_per_s: float
    train_per_cpu_s: float
    step_per_s: float
    valid_per_s: float
    seconds: float


def _params(name: str, embedding_dim: int) -> dict:
    from bars.config import compose, to_container

    return to_container(compose([f"model={name}", f"protocol.embedding_dim={embedding_dim}"]).model.params)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_only_per_s(model: nn.Module, split, batch_size: int, reg: float, iters: int = 6,
                    device: torch.device | None = None, precision: str = "fp32") -> float:
    """The training step on one fixed batch (no batching/permutation), same loss, clipping and fused Adam;
    ``precision`` as ``train.precision`` (the forward under autocast, the loss in float32)."""
    from bars.train import _make_adam, _split_parameters, autocast, regularization

    device = device or torch.device("cpu")
    xb, yb = next(split.batches(batch_size, shuffle=False, seed=0, device=device))
    emb, net = _split_parameters(model)
    params = emb + net
    opt = _make_adam(params, 1e-3, device)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()

    def step():
        with autocast(device, precision):
            out = model(xb)
        loss = loss_fn(out.float(), yb)
        r = regularization(emb, reg)
        if r is not None:
            loss = loss + r
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()

    step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    return iters * batch_size / (time.perf_counter() - t)


def bench_model(name, spec, params, train, valid, epochs: int, reg: float, threads: int, device: str = "cpu",
                precision: str = "fp32", cuda_graph: bool = False) -> Row:
    from bars.models.layers import count_parameters
    from bars.models.registry import build
    from bars.train import TrainConfig, evaluate, fit, resolve_device

    t0 = time.perf_counter()
    model = build(name, spec, params)
    cfg = TrainConfig(max_epochs=epochs, embedding_regularizer=reg, device=device, num_threads=threads,
                      precision=precision, cuda_graph=cuda_graph)
    scores = iter(np.linspace(0.6, 0.7, epochs))  # a rising validation curve: no early stop, no LR decay
    cpu = [time.process_time()]  # process CPU seconds (all threads) at the end of each epoch's training

    def scripted(*a):
        cpu.append(time.process_time())
        return {"auc": next(scores), "logloss": 0.5}

    res = fit(
        model,
        train,
        valid,
        cfg,
        seed=2021,
        evaluate_fn=scripted,
        on_epoch=lambda log: cpu.append(time.process_time()),
    )
    train_per_s = res.history[-1].samples_per_s
    train_per_cpu_s = len(train) / (cpu[-2] - cpu[-3])
    step_per_s = step_only_per_s(model, train, cfg.batch_size, reg, device=resolve_device(device),
                                 precision=precision)
    evaluate(model, valid, cfg.eval_batch_size, precision=precision)  # warm-up
    t = time.perf_counter()
    evaluate(model, valid, cfg.eval_batch_size, precision=precision)
    valid_per_s = len(valid) / (time.perf_counter() - t)
    return Row(
        name,
        count_parameters(model),
        train_per_s,
        train_per_cpu_s,
        step_per_s,
        valid_per_s,
        time.perf_counter() - t0,
    )


def profile_frappe_dcn(train, threads: int, steps: int = 8) -> None:
    from torch.profiler import ProfilerActivity, profile

    from bars.models.registry import build
    from bars.train import TrainConfig, fit

    spec = frappe_like_spec()
    model = build("dcn", spec, FRAPPE_DCN_BEST)
    sub = type(train)({k: v[: steps * 4096] for k, v in train.features.items()}, train.label[: steps * 4096])
    cfg = TrainConfig(max_epochs=1, embedding_regularizer=0.05, device="cpu", num_threads=threads)
    ev = lambda *a: {"auc": 0.6, "logloss": 0.5}
    fit(model, sub, sub, cfg, seed=0, evaluate_fn=ev)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fit(model, sub, sub, cfg, seed=0, init=False, evaluate_fn=ev)
    print(f"\nprofile: DCN Frappe_x1 best, {steps} training steps of 4096 (self CPU time, top operators)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=22, max_name_column_width=44))


def _bf16_note(device: torch.device) -> str:
    """`` (bfloat16 native)`` or `` (bfloat16 emulated: slower than fp32)`` for the header of a bf16 bench."""
    from bars.precision import bf16_fast

    return " (bfloat16 native)" if bf16_fast(device) else " (bfloat16 emulated: slower than fp32 here)"


def main() -> int:
    ap = argparse.ArgumentParser(prog="bars bench train")
    ap.add_argument("--models", default="", help="comma-separated subset of the zoo (default: all)")
    ap.add_argument("--rows", type=int, default=12 * 4096, help="training rows per epoch (zoo)")
    ap.add_argument("--frappe-rows", type=int, default=24 * 4096, help="training rows per epoch (Frappe DCN)")
    ap.add_argument("--valid-rows", type=int, default=4 * 16384)
    ap.add_argument("--epochs", type=int, default=2, help="the last epoch is reported; the first warms up")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--skip-zoo", action="store_true", help="only the Frappe_x1 DCN (and the Criteo-shape case)")
    ap.add_argument("--criteo-models", default="dcn,deepfm,dnn",
                    help="models for the Criteo-shape case (2.5M embedding rows); empty to skip")
    ap.add_argument("--criteo-rows", type=int, default=12 * 4096, help="training rows per epoch (Criteo shape)")
    ap.add_argument("--frappe-models", default="dcn",
                    help="models at Frappe_x1 shape (dcn: its best BARS configuration; others: conf defaults)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<index> (every case)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                    help="train.precision of every case (bf16: autocast to bfloat16)")
    ap.add_argument("--cuda-graph", action="store_true",
                    help="train.cuda_graph in every case (CUDA: full batches replay a captured graph of the step)")
    ap.add_argument("--profile", action="store_true", help="torch.profiler table for the Frappe DCN step")
    ap.add_argument("--breakdown", action="store_true",
                    help="instead: a whole run's wall time by phase (bars.run.train_one), tracking off and on")
    ap.add_argument("--breakdown-data", default="movielens_small,frappe_size",
                    help="--breakdown datasets: movielens_small (the demo), frappe_size (Frappe_x1 layout and size)")
    ap.add_argument("--breakdown-epochs", type=int, default=1, help="--breakdown: epochs per run")
    ap.add_argument("--repeat", type=int, default=3, help="--breakdown: runs per dataset and mode (medians)")
    args = ap.parse_args(sys.argv[1:])
    if args.breakdown:
        from bars.benchmarks import fixed_cost

        return fixed_cost.main(args.breakdown_data, args.breakdown_epochs, args.repeat, args.threads)

    from bars.models.registry import list_models
    from bars.train import resolve_device

    try:
        device = str(resolve_device(args.device))
    except ValueError as e:
        print(f"bars bench train: --device: {e}", file=sys.stderr)
        return 2
    asked = f"{args.models},{args.criteo_models},{args.frappe_models}".split(",")
    unknown = sorted({m for m in asked if m} - set(list_models()))
    if unknown:
        print(f"bars bench train: unknown model(s) {unknown}; registered: {', '.join(list_models())}",
              file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    from bars.train_config import TrainConfig

    print(
        f"bars bench train: torch {torch.__version__}, {device}, {threads} CPU threads, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at start, batch 4096, eval batch {TrainConfig().eval_batch_size}, "
        f"precision {args.precision}{_bf16_note(device) if args.precision == 'bf16' else ''}, "
        f"cuda_graph {args.cuda_graph}"
    )
    rows: list[Row] = []
    if not args.skip_zoo:
        spec = criteo_like_spec()
        train = synthetic_split(spec, args.rows, 0)
        valid = synthetic_split(spec, args.valid_rows, 1)
        names = [m for m in args.models.split(",") if m] or list_models()
        for name in names:
            rows.append(bench_model(name, spec, _params(name, 10), train, valid, args.epochs, 1e-5, threads, device,
                                    args.precision, args.cuda_graph))
            print(f"  {rows[-1].name}: {rows[-1].train_per_s:,.0f} samples/s", file=sys.stderr, flush=True)
    cnames = [m for m in args.criteo_models.split(",") if m]
    if cnames:
        cspec = criteo_shape_spec()
        ctrain = synthetic_split(cspec, args.criteo_rows, 0)
        cvalid = synthetic_split(cspec, args.valid_rows, 1)
        for name in cnames:
            r = bench_model(name, cspec, _params(name, 10), ctrain, cvalid, args.epochs, 1e-5, threads, device,
                            args.precision, args.cuda_graph)
            r.name = f"{name} @ Criteo shape"
            rows.append(r)
            print(f"  {r.name}: {r.train_per_s:,.0f} samples/s", file=sys.stderr, flush=True)
    fspec = frappe_like_spec()
    ftrain = synthetic_split(fspec, args.frappe_rows, 0)
    fvalid = synthetic_split(fspec, args.valid_rows, 1)
    dcn = None
    for name in [m for m in args.frappe_models.split(",") if m]:
        params = FRAPPE_DCN_BEST if name == "dcn" else _params(name, 10)
        r = bench_model(name, fspec, params, ftrain, fvalid, args.epochs, 0.05, threads, device, args.precision,
                        args.cuda_graph)
        r.name = "dcn @ Frappe_x1 best" if name == "dcn" else f"{name} @ Frappe_x1"
        dcn = r if name == "dcn" else dcn
        rows.append(r)

    print()
    if not args.skip_zoo:
        print(
            f"zoo: synthetic Criteo-format (13 numeric + 26 categorical, {args.rows:,} rows/epoch), embedding 10"
        )
    if cnames:
        print(f"Criteo shape: 39 categorical fields, {embedding_rows(criteo_shape_spec()):,} embedding rows "
              f"(largest table 1,000,000), {args.criteo_rows:,} rows/epoch, embedding 10")
    print(
        f"{'model':<22} {'params':>11} {'train/s':>10} {'train/cpu-s':>12} {'step/s':>10} {'valid/s':>11} {'secs':>6}"
    )
    for r in rows:
        print(
            f"{r.name:<22} {r.params:>11,} {r.train_per_s:>10,.0f} {r.train_per_cpu_s:>12,.0f} {r.step_per_s:>10,.0f} "
            f"{r.valid_per_s:>11,.0f} {r.seconds:>6.1f}"
        )
    if dcn is not None:
        ok = dcn.train_per_s >= GOAL_SAMPLES_PER_S
        print(
            f"\nDCN Frappe_x1 best: {dcn.train_per_s:,.0f} training samples/s (goal {GOAL_SAMPLES_PER_S:,}: "
            f"{'met' if ok else 'NOT met'}), validation {dcn.valid_per_s:,.0f} rows/s "
            f"({'faster' if dcn.valid_per_s >= dcn.train_per_s else 'slower'} than training per row); "
            f"load average now {os.getloadavg()[0]:.1f}"
        )
    if args.profile:
        profile_frappe_dcn(ftrain, threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
