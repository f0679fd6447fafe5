"""`make bench-reference`: training samples/s of every bars model and of its FuxiCTR 2.3.10 composition
(tests/reference/fuxictr_zoo/<m>.py), on the same batches, the same weights and the same threads.

One training step = each library's own step: ours ``bars.train.TrainStep`` (forward, sigmoid + BCE, regularizers,
backward, clip 10, fused Adam), FuxiCTR's ``BaseModel.train_step`` (the same, with torch's default Adam). Models
use their conf/model/<id>.yaml defaults (dropout included); by default every config of a model with a composition
(the registry names' configs and the others, e.g. cin beside xdeepfm, crossnet beside dcn; ``--models`` takes any
of them). Three shapes, synthetic batches of 4096 rows:
- frappe: the 10 Frappe_x1 categorical fields with BARS's vocabulary sizes, embedding 10;
- criteo: 13 numeric + 26 categorical fields, ~1M embedding rows, embedding 16. Criteo's fields are anonymous,
  so the models that read feature groups (DSSM, FLEN, PPNet) get a fixed, arbitrary split of them
  (:func:`criteo_groups`: C1-C13 user, C14-C26 item, I1-I13 context, or on the user side where the model's Frappe
  grouping has no context group, as BARS's Frappe_x1 grouping puts context on the user side). DLRM runs with
  I1-I13 as categorical fields (vocabularies 65-125, as BARS's Criteo_x1 discretises them): FuxiCTR 2.3.10's DLRM
  fails on numeric fields;
- the multi-task models (ESMM, MMoE, PLE, ShareBottom) run at the frappe and criteo shapes with a second label
  (``conversion``: 1 on a seeded third of the clicked rows), each side's step taking both labels;
- seq: the frappe fields plus two behaviour histories (``item_history`` sharing ``item``'s table, ``cost_history``
  sharing ``cost``'s, max_len 20, lengths uniform in 0..20, 0-padded after the values as FuxiCTR's default), for the
  sequence models (DIN, BST, DIEN, DMIN, DMR, QIN), embedding 10; only they run at this shape.
Repeats alternate between the two sides (bars, FuxiCTR, bars, ...) so that machine noise hits both alike; the
figure is the median over repeats. ``--clock cpu`` (only with ``--threads 1``) times each side by the CPU time of
the thread that runs it (``time.thread_time``) instead of the wall clock: on a shared, loaded machine the time the
process waits for a core then counts for neither side, so the figure is what a quiet core would give.

    PYTHONPATH=. .venv-ref/bin/python tests/reference/bench_reference.py [--threads 2] [--repeats 5]
        [--models dcn,dnn] [--shapes frappe,criteo] [--precision bf16] [--processes separate]

``--processes separate`` runs each repeat of each side in a fresh process of its own (still alternating), as each
library's users run it: bars's process under its run settings (``train.reuse_freed_memory``: freed buffers kept
for the next step), FuxiCTR's with the C library's allocator defaults (each step's large buffers fresh pages, one
page fault per 4 KiB; the figure printed beside). By default both sides share one process, so FuxiCTR's steps get
bars's allocator setting too: the conservative figure. That process is a child for each config and shape
(:func:`measure_forked`, forked by multiprocessing's fork server), so one config's memory is gone before the next. A config that exhausts the host's memory
(FuxiCTR's AOANet at the criteo shape needs more than 23 GiB) is killed by the kernel and printed as not measured,
naming the side that was running; the bench goes on (in both modes). Both modes keep MKL in the strict mode bars
sets.

``--precision bf16`` runs bars's steps under ``train.precision=bf16`` (FuxiCTR's stay in float32): what the switch
buys on a CPU with bfloat16 instructions, not a like-for-like figure.

``--whole-run`` measures whole runs instead (4 epochs, tracking on, data to test metrics): bench_whole_run.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuxictr_reference import SECOND_LABEL, feature_map, poison_, unwritten, with_groups
from fuxictr_zoo import REFERENCES, model_configs

from bars.data.spec import Feature, FeatureSpec
from bars.models import build
from bars.models.layers import init_bars_
from bars.train import PRECISIONS, TrainConfig, TrainStep

FRAPPE_VOCAB = {"user": 956, "item": 4084, "daytime": 9, "weekday": 9, "isweekend": 4, "homework": 5, "cost": 4,
                "weather": 11, "country": 82, "city": 235}
# 26 categorical fields, 1,000,000 rows in all (six large fields as in Criteo, the rest small to medium)
CRITEO_VOCAB = [300_000, 250_000, 200_000, 120_000, 60_000, 40_000, 9_000, 6_000, 4_000, 3_000, 2_000, 1_500,
                1_000, 800, 600, 500, 400, 300, 200, 150, 100, 80, 50, 20, 10, 290]
BATCH = 4096
SEQ_LEN = 20


def spec_of(shape: str) -> tuple[FeatureSpec, int]:
    if shape in ("frappe", "seq"):
        feats = tuple(Feature(n, "categorical", vocab_size=v) for n, v in FRAPPE_VOCAB.items())
        if shape == "seq":
            feats += (Feature("item_history", "sequence", vocab_size=FRAPPE_VOCAB["item"], max_len=SEQ_LEN,
                              share_embedding="item"),
                      Feature("cost_history", "sequence", vocab_size=FRAPPE_VOCAB["cost"], max_len=SEQ_LEN,
                              share_embedding="cost"))
        return FeatureSpec(dataset=f"{shape}_shape", label="label", features=feats), 10
    assert sum(CRITEO_VOCAB) == 1_000_000 and len(CRITEO_VOCAB) == 26
    feats = tuple(Feature(f"I{i + 1}", "numeric") for i in range(13)) + tuple(
        Feature(f"C{i + 1}", "categorical", vocab_size=v) for i, v in enumerate(CRITEO_VOCAB))
    return FeatureSpec(dataset="criteo_shape", label="label", features=feats), 16


# models whose FuxiCTR 2.3.10 composition cannot take numeric fields: at the criteo shape I1-I13 are categorical
NUMERIC_AS_CATEGORICAL = frozenset({"dlrm"})


def numeric_as_categorical(spec: FeatureSpec) -> FeatureSpec:
    """``spec`` with every numeric field a categorical one of ``60 + 5 i`` values (i: its 1-based position among
    the numeric fields), as BARS's Criteo_x1 discretises I1-I13."""
    feats, i = [], 0
    for f in spec.features:
        if f.type == "numeric":
            i += 1
            f = dataclasses.replace(f, type="categorical", vocab_size=60 + 5 * i)
        feats.append(f)
    return dataclasses.replace(spec, features=tuple(feats))


def criteo_groups(frappe_groups) -> dict[str, tuple[str, ...]]:
    """The criteo shape's feature groups for a model whose cases use ``frappe_groups``: the same group names,
    C1-C13 user, C14-C26 item, I1-I13 context (or user, when ``frappe_groups`` has no context group)."""
    numeric = tuple(f"I{i}" for i in range(1, 14))
    user, item = tuple(f"C{i}" for i in range(1, 14)), tuple(f"C{i}" for i in range(14, 27))
    names = set(frappe_groups)
    if not {"user", "item"} <= names or not names <= {"user", "item", "context"}:
        raise ValueError(f"no criteo-shape grouping for the groups {sorted(names)} (expected user, item[, context])")
    if "context" in names:
        return {"user": user, "item": item, "context": numeric}
    return {"user": numeric + user, "item": item}


def batch_of(spec: FeatureSpec, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Skewed categorical indices (index ~ vocab * u^3, as real counts are skewed), log-scaled numeric values."""
    g = torch.Generator().manual_seed(seed)
    x = {}
    for f in spec.features:
        if f.type == "categorical":
            u = torch.rand(BATCH, generator=g)
            x[f.name] = (1 + (u**3 * (f.vocab_size - 1)).long()).clamp(max=f.vocab_size - 1).int()
        elif f.type == "sequence":  # skewed values, lengths uniform in 0..max_len, 0-padded after the values
            u = torch.rand(BATCH, f.max_len, generator=g)
            v = (1 + (u**3 * (f.vocab_size - 1)).long()).clamp(max=f.vocab_size - 1)
            g_len = torch.Generator().manual_seed(seed)  # the same lengths for every history of a row
            n = torch.randint(0, f.max_len + 1, (BATCH, 1), generator=g_len)
            x[f.name] = torch.where(torch.arange(f.max_len) < n, v, 0).int()
        else:
            x[f.name] = torch.log1p(torch.rand(BATCH, generator=g) * 100)
    return x, (torch.rand(BATCH, generator=g) < 0.25).float()


def yaml_params(cid: str, dim: int) -> tuple[str, dict]:
    """(registry name, params) of conf/model/<cid>.yaml at embedding size ``dim``."""
    name, params = model_configs()[cid]
    return name, {k: (dim if k == "embedding_dim" else tuple(v) if isinstance(v, list) else v)
                  for k, v in params.items()}


def pair(name: str, spec: FeatureSpec, dim: int, params: dict, reg_e: float):
    torch.manual_seed(2021)
    ours = init_bars_(build(name, spec, params))
    ref = REFERENCES[name]
    theirs = ref.composition(feature_map(spec, dim), params, 1e-3, reg_e, 0.0)
    poison_(theirs)
    ref.transplant(ours, theirs)
    assert not unwritten(theirs), unwritten(theirs)
    theirs._max_gradient_norm = 10.0
    return ours.train(), theirs.train()


def setup(cid: str, shape: str, precision: str = "fp32"):
    """``(make_ours, make_theirs)`` for config ``cid`` at ``shape``: each makes its side's step, a function of a batch
    index that runs one training step on the bench's seeded batches (FuxiCTR's batch dicts built beforehand); None
    where the config does not run at the shape."""
    spec, dim = spec_of(shape)
    name, params = yaml_params(cid, dim)
    seq_model = REFERENCES[name].data in ("frappe_seq", "frappe_seq_neg")
    if seq_model != (shape == "seq"):  # histories only at the seq shape
        return None
    multi_task = REFERENCES[name].multi_task
    if multi_task:  # two labels: the click and a second one (drawn below, after the batches)
        spec = dataclasses.replace(spec, labels=(spec.label, SECOND_LABEL))
    if REFERENCES[name].groups is not None:  # the models that read feature groups (DSSM, FLEN, PPNet)
        groups = REFERENCES[name].groups
        spec = with_groups(spec, groups if shape == "frappe" else criteo_groups(groups))
    if shape == "criteo" and name in NUMERIC_AS_CATEGORICAL:
        spec = numeric_as_categorical(spec)
    reg_e = 0.05
    ours, theirs = pair(name, spec, dim, params, reg_e)
    batches = [batch_of(spec, s) for s in range(3)]
    if multi_task:  # the second label: 1 on a seeded third of the clicked rows (a click -> conversion funnel)
        g = torch.Generator().manual_seed(7)
        batches = [(xb, torch.stack([yb, yb * (torch.rand(BATCH, generator=g) < 1 / 3).float()], dim=1))
                   for xb, yb in batches]
    labels = spec.labels

    def their_batch(xb, yb):  # FuxiCTR reads each label from the batch by its name
        return {**xb, **({n: yb[:, j] for j, n in enumerate(labels)} if multi_task else {"label": yb})}

    def make_ours():  # the TrainStep applies bars's run settings (bars.heap), so only the bars side makes one
        step = TrainStep(ours, TrainConfig(embedding_regularizer=reg_e, device="cpu", loss="bce",
                                           precision=precision))
        return lambda i: step(*batches[i % len(batches)])

    def make_theirs():
        theirs_batches = [their_batch(xb, yb) for xb, yb in batches]
        return lambda i: theirs.train_step(theirs_batches[i % len(theirs_batches)])

    return make_ours, make_theirs


def rate(step, n: int, clock=time.perf_counter) -> float:
    """Training samples/s of ``n`` calls of ``step``."""
    t = clock()
    for i in range(n):
        step(i)
    return n * BATCH / (clock() - t)


def measure(cid: str, shape: str, repeats: int, steps: int, clock=time.perf_counter,
            precision: str = "fp32", phase=lambda name: None) -> tuple[float, float] | None:
    """(bars, FuxiCTR) samples/s, medians of ``repeats`` alternating runs of ``steps`` steps, both in this process.
    ``phase(name)`` is told what runs next: ``build``, then ``bars`` and ``FuxiCTR`` by turns."""
    phase("build")
    made = setup(cid, shape, precision)
    if made is None:
        return None
    ours, theirs = made[0](), made[1]()
    phase("bars")
    rate(ours, 1)
    phase("FuxiCTR")
    rate(theirs, 1)  # warm-up (allocator, Adam state)
    a, b = [], []
    for _ in range(repeats):
        phase("bars")
        a.append(rate(ours, steps, clock))
        phase("FuxiCTR")
        b.append(rate(theirs, steps, clock))
    return statistics.median(a), statistics.median(b)


class Killed(Exception):
    """A measurement's process ended by a signal (the kernel's OOM killer sends SIGKILL)."""


def _memory_gib() -> str:
    try:
        kib = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                   if ln.startswith("MemTotal:"))
        return f"{kib / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):  # pragma: no cover - not Linux
        return "its memory"


def killed_message(sig: int, what: str) -> str:
    hint = f": out of memory? (this host has {_memory_gib()})" if sig == signal.SIGKILL else ""
    return f"{what} was killed by signal {sig} ({signal.Signals(sig).name}){hint}"


def _measure_child(conn, cid: str, shape: str, repeats: int, steps: int, clock, precision: str, threads: int) -> None:
    """In a child of the fork server: progress messages (``{"phase": ...}``), then one result message."""
    torch.set_num_threads(threads)
    try:
        conn.send({"result": measure(cid, shape, repeats, steps, clock, precision,
                                     phase=lambda name: conn.send({"phase": name}))})
    except NotImplementedError as exc:
        conn.send({"not_implemented": str(exc)})
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        import traceback

        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


_SERVER = None


def measure_forked(cid: str, shape: str, repeats: int, steps: int, clock=time.perf_counter,
                   precision: str = "fp32", threads: int | None = None) -> tuple[float, float] | None:
    """:func:`measure` in a child process (both sides still share one process: the child), so that one config's
    memory is returned before the next and a config that exhausts the host's memory (the kernel kills the child)
    is reported as :class:`Killed` instead of ending the bench. The children are forked by multiprocessing's fork
    server, which imports this module once and never computes, so a child starts with the imports done and with no
    thread pool to inherit (forking a process whose OpenMP pool ran hangs the child's first parallel region)."""
    global _SERVER
    import multiprocessing

    if _SERVER is None:
        _SERVER = multiprocessing.get_context("forkserver")
        _SERVER.set_forkserver_preload(["bench_reference"])
    threads = torch.get_num_threads() if threads is None else threads
    here, there = _SERVER.Pipe(duplex=False)
    proc = _SERVER.Process(target=_measure_child, args=(there, cid, shape, repeats, steps, clock, precision, threads))
    proc.start()
    there.close()
    msgs = []
    while True:
        try:
            msgs.append(here.recv())
        except EOFError:
            break
    here.close()
    proc.join()
    if proc.exitcode is not None and proc.exitcode < 0:
        phases = [m["phase"] for m in msgs if "phase" in m]
        where = {"build": "building the two models", "bars": "bars's step", "FuxiCTR": "FuxiCTR's step"}
        during = where.get(phases[-1], "its start") if phases else "its start"
        raise Killed(killed_message(-proc.exitcode, f"the process, during {during},"))
    last = next((m for m in reversed(msgs) if "phase" not in m),
                {"error": f"the measuring process exited with status {proc.exitcode} and no result"})
    if "not_implemented" in last:
        raise NotImplementedError(last["not_implemented"])
    if "error" in last:
        raise RuntimeError(f"bench reference: measuring {cid} at the {shape} shape failed:\n{last['error']}")
    return None if last["result"] is None else tuple(last["result"])


WARMUP_STEPS = 3  # per fresh process of --processes separate


def side_run(cid: str, shape: str, side: str, steps: int, clock=time.perf_counter,
             precision: str = "fp32") -> dict | None:
    """One side's figure in this process (``--processes separate``'s child): samples/s of ``steps`` steps after
    ``WARMUP_STEPS`` warm-up steps, and the minor page faults per step meanwhile. The other side's model is built (the same seeded
    weights, transplanted) and dropped before the first step."""
    made = setup(cid, shape, precision)
    if made is None:
        return None
    step = made[0]() if side == "bars" else made[1]()
    del made
    rate(step, WARMUP_STEPS)  # a fresh process: the heap, the allocator's thresholds and Adam's state settle
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    r = rate(step, steps, clock)
    return {"rate": r, "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps}


def measure_separate(cid: str, shape: str, repeats: int, steps: int, threads: int, clock: str,
                     precision: str) -> tuple[float, float, float, float] | None:
    """(bars, FuxiCTR) samples/s, medians of ``repeats`` alternating fresh processes per side, and each side's median
    minor page faults per step: each library in a process of its own, as its users run it (bars's process with
    its run settings, FuxiCTR's with the C library's defaults)."""
    got: dict[str, list[dict]] = {"bars": [], "fuxictr": []}
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    for _ in range(repeats):
        for side in ("bars", "fuxictr"):
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--side", side, "--models", cid,
                                   "--shapes", shape, "--steps", str(steps), "--threads", str(threads),
                                   "--clock", clock, "--precision", precision],
                                  check=False, capture_output=True, text=True, env=env)
            if proc.returncode < 0:
                raise Killed(killed_message(-proc.returncode, f"the {'bars' if side == 'bars' else 'FuxiCTR'} "
                                            "process"))
            if proc.returncode != 0:
                raise SystemExit(f"bench reference: the {side} process for {cid} at the {shape} shape failed "
                                 f"(exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            if out is None:
                return None
            if "not_implemented" in out:
                raise NotImplementedError(out["not_implemented"])
            got[side].append(out)
    med = {s: (statistics.median(o["rate"] for o in got[s]), statistics.median(o["faults"] for o in got[s]))
           for s in got}
    return med["bars"][0], med["fuxictr"][0], med["bars"][1], med["fuxictr"][1]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--whole-run" in argv:  # whole runs, bars vs FuxiCTR's run_expid flow (bench_whole_run.py)
        from bench_whole_run import main as whole_run

        return whole_run(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=0, help="steps per repeat (default: 3 frappe, 1 criteo; with --processes separate 10 "
                    "and 2, after 3 warm-up steps in each process)")
    configs = model_configs()
    known = sorted(c for c, (n, _) in configs.items() if n in REFERENCES)
    ap.add_argument("--models", default=",".join(known), help="config ids (default: every conf/model config of a "
                    "model with a FuxiCTR composition, e.g. cin and crossnet beside xdeepfm and dcn)")
    ap.add_argument("--shapes", default="frappe,criteo,seq")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: elapsed time; cpu: the running thread's CPU time (needs --threads 1)")
    ap.add_argument("--precision", choices=PRECISIONS, default="fp32",
                    help="bars side's train.precision (bf16: its forward under autocast to bfloat16); FuxiCTR's side "
                         "stays float32, as FuxiCTR trains")
    ap.add_argument("--processes", choices=("shared", "separate"), default="shared",
                    help="shared: both sides in one process (a child per config), under bars's run settings "
                         "(the conservative figure); "
                         "separate: each repeat of each side in a fresh process of its own, as each library's users "
                         "run it (FuxiCTR's with the C library's allocator defaults)")
    ap.add_argument("--side", choices=("bars", "fuxictr"), help=argparse.SUPPRESS)  # a --processes separate child
    args = ap.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        ap.error(f"--clock cpu times the calling thread only, so it needs --threads 1 (got --threads {args.threads})")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(known))
    if unknown:
        ap.error(f"no config with a FuxiCTR composition: {unknown}; known: {known}")
    if args.side:  # a child of --processes separate: one side, one config, one shape; its figure as JSON
        (shape,) = [s for s in args.shapes.split(",") if s]
        try:
            out = side_run(models[0], shape, args.side, args.steps or 1, clock, args.precision)
        except NotImplementedError as exc:  # told to the parent, which prints it as the shared mode does
            out = {"not_implemented": str(exc)}
        print(json.dumps(out))
        return 0
    separate = args.processes == "separate"
    print(f"bars vs FuxiCTR 2.3.10 training step, batch {BATCH}, {args.threads} threads, torch {torch.__version__}, "
          f"median of {args.repeats} interleaved repeats, {args.clock} clock, bars precision {args.precision}, "
          + ("each side in fresh processes of its own (FuxiCTR's with the C library's allocator defaults)" if separate
             else "both sides in one process, a child per config (under bars's run settings)"))
    print(f"{'config':<12} {'shape':<7} {'bars samples/s':>15} {'FuxiCTR samples/s':>18} {'ratio':>7}"
          + (f" {'faults/step bars / FuxiCTR':>27}" if separate else ""))
    ratios: dict[str, list[float]] = {}
    killed: list[str] = []
    for shape in [s for s in args.shapes.split(",") if s]:
        steps = args.steps or ((2 if shape == "criteo" else 10) if separate else (1 if shape == "criteo" else 3))
        for m in models:
            try:
                got = (measure_separate(m, shape, args.repeats, steps, args.threads, args.clock, args.precision)
                       if separate else measure_forked(m, shape, args.repeats, steps, clock, args.precision, args.threads))
            except NotImplementedError as exc:  # a composition FuxiCTR cannot build at this shape (e.g. DLRM)
                print(f"{m:<12} {shape:<7} (not measured: {exc})", flush=True)
                continue
            except Killed as exc:  # e.g. FuxiCTR's AOANet at the criteo shape needs more than 23 GiB
                print(f"{m:<12} {shape:<7} (not measured: {exc})", flush=True)
                killed.append(f"{m}@{shape}")
                continue
            if got is None:
                continue  # only the sequence models run at the seq shape, and they only there
            a, b = got[:2]
            ratios.setdefault(shape, []).append(a / b)
            faults = f" {f'{got[2]:,.0f} / {got[3]:,.0f}':>27}" if separate else ""
            print(f"{m:<12} {shape:<7} {a:>15,.0f} {b:>18,.0f} {a / b:>7.2f}{faults}", flush=True)
    allr = [r for rs in ratios.values() for r in rs]
    if not allr:  # e.g. only sequence models asked for at the frappe or criteo shape
        print("no model measured: the sequence models run at the seq shape only, the others not at it")
        return 0
    for shape, rs in ratios.items():
        print(f"median ratio bars/FuxiCTR at {shape} shape: {statistics.median(rs):.2f} ({len(rs)} models)")
    print(f"median ratio bars/FuxiCTR overall: {statistics.median(allr):.2f} ({len(allr)} measurements)"
          + (f"; not measured, killed: {', '.join(killed)}" if killed else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
