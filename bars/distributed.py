"""Several processes training one run (issue 14 item 3): ``make train ... GPUS=n`` / ``bars train
train.processes=n``.

``bars train`` with ``train.processes=n > 1`` starts ``n`` copies of itself with torchrun
(``python -m torch.distributed.run --standalone --nproc_per_node n -m bars.cli train <the same overrides>``:
:func:`launch`); each copy finds its rank in the environment torchrun sets (:func:`context`) and joins one
process group (NCCL on GPUs, one GPU per process; gloo on the CPU). Started by torchrun directly (any number of
nodes), a process is used the same way when ``train.processes`` equals torchrun's world size.

The BARS protocol is kept, decided once and shared:

- **global batch**: ``train.batch_size`` rows per step in all, as one process. Every process draws the same
  seeded shuffle and takes its share of each global batch (:func:`shares`: contiguous, sizes differing by at
  most one row); its loss is weighted by its share of the rows (:func:`share_weight`), so that the gradients
  averaged by ``DistributedDataParallel`` are those of the mean loss over the global batch, however the last,
  smaller batch divides. The regularizers' gradient is added after the averaging, once, as one process adds it;
  clipping and Adam then see the same gradients everywhere and the weights stay equal in every process;
- **validation and test**: each process scores its share of the split's rows, the probabilities are gathered
  and process 0 computes the metrics, which it sends to every process: the early-stopping and LR-decay
  decisions are therefore taken once and are the same everywhere;
- **batch norm**: every BatchNorm layer normalises by the statistics of the global batch, gathered from every
  process (:func:`global_batch_norm`), and updates its running statistics from them: what one process computes;
- **recording**: only process 0 prepares the data (the others wait, then reuse it), opens the MLflow run, prints,
  writes the checkpoint and the artifacts; the others train and evaluate silently.

What differs from one process (docs/performance.md "Multi-process training and precision switches"): dropout draws other masks (each
process has its own random stream) and floating-point sums are taken in another order.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """Several processes were asked for in a way that cannot run; the message says what to change."""


@dataclass(frozen=True)
class Context:
    """This process's place among the processes that train one run."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world() -> int | None:
    """``WORLD_SIZE`` when this process was started by torchrun (or another launcher that sets ``RANK``), else
    None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return int(os.environ["WORLD_SIZE"])


def context(processes: int) -> Context | None:
    """The context of a run asking for ``processes`` (``train.processes``): None for one process; else the rank
    torchrun gave this process. A mismatch with the launcher's world size, or no launcher, is an error."""
    if processes <= 1:  # one process, whatever the environment says (a cluster may set RANK / WORLD_SIZE for its
        return None     # own reasons: a sweep worker there trains its trials alone)
    world = launched_world()
    if world is None:
        raise DistributedError(f"train.processes={processes} needs {processes} processes: `bars train` starts them "
                               f"itself (make train ... GPUS={processes}); a caller of bars.run.train_one must be "
                               f"one of them (started by torchrun)")
    if world != processes:
        raise DistributedError(f"train.processes={processes} but the launcher started {world} processes "
                               f"(WORLD_SIZE={world})")
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return Context(rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world)


def device_for(ctx: Context, requested: str) -> torch.device:
    """The device of this process: ``auto`` -> ``cuda:<local rank>`` when GPUs are visible (one per process;
    more processes than GPUs on a node is an error), else ``cpu``; ``cuda`` -> ``cuda:<local rank>``; ``cpu``;
    an explicit ``cuda:<k>`` names one GPU, which several processes cannot share."""
    name = str(requested).strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        n = torch.cuda.device_count()
        if ctx.local_world_size > n:
            raise DistributedError(f"{ctx.local_world_size} processes on this node but {n} GPU(s) visible: one GPU "
                                   f"per process (lower train.processes / GPUS, or train.device=cpu)")
        return torch.device("cuda", ctx.local_rank)
    raise DistributedError(f"train.device={requested!r} with train.processes={ctx.world_size}: use auto, cuda "
                           f"(one GPU per process) or cpu")


def init(ctx: Context, device: torch.device) -> None:
    """Join the process group (NCCL for CUDA devices, gloo otherwise), once per process (``bars.train.fit`` then
    gives a CPU process left at torch's default thread count its share of the cores: :func:`cpu_threads`)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size, **kwargs)


def cpu_threads(ctx: Context) -> int:
    """Torch CPU threads for one of ``ctx.local_world_size`` processes of a node: its share of the cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(ctx.local_world_size, 1))


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def shutdown(wait: bool = True) -> None:
    """Leave the process group. ``wait``: after every process got here (a barrier: a process that tears its
    side of gloo down while another still uses it can abort, "terminate called without an active exception");
    a process leaving on an error does not wait (the others may never come: torchrun stops them)."""
    import gc

    import torch.distributed as dist

    if dist.is_initialized():
        gc.collect()  # DistributedDataParallel's reducer (in reference cycles) freed now, not while Python exits
        if wait:
            dist.barrier()
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------- batches
def shares(rows: int, world_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: each process's contiguous rows of a batch of ``rows`` (sizes differ by at most
    one; the first ``rows % world_size`` processes take one more). A process may get no row (a last batch with
    fewer rows than processes)."""
    base, extra = divmod(int(rows), int(world_size))
    out, start = [], 0
    for r in range(world_size):
        n = base + (1 if r < extra else 0)
        out.append((start, start + n))
        start += n
    return out


def share_weight(local_rows: int, rows: int) -> float:
    """The weight of a process's mean loss over its ``local_rows`` of a global batch of ``rows``: the weighted
    losses sum to the global batch's mean loss."""
    return local_rows / rows


def _take(batch: Any, lo: int, hi: int) -> Any:
    if isinstance(batch, Tensor):
        return batch[lo:hi]
    if isinstance(batch, dict):
        return {k: _take(v, lo, hi) for k, v in batch.items()}
    raise TypeError(f"cannot take rows of a {type(batch).__name__}")


def _rows(y: Tensor) -> int:
    return int(y.shape[0])


def shard_batches(batches: Iterator[tuple[Any, Tensor]], ctx: Context
                  ) -> Iterator[tuple[Any, Tensor, float]]:
    """This process's share of each global batch ``(features, label)``, with its loss weight:
    ``(features, label, weight)``. A process whose share of a (last) batch is empty gets the whole batch at
    weight 0: it must still run the step (the gradients are averaged over every process), and what it computes
    then counts for nothing."""
    for xb, yb in batches:
        rows = _rows(yb)
        lo, hi = shares(rows, ctx.world_size)[ctx.rank]
        if hi == lo:
            yield xb, yb, 0.0
        else:
            yield _take(xb, lo, hi), yb[lo:hi], share_weight(hi - lo, rows)


class EvalShard:
    """This process's rows of a split for scoring: the same contiguous share of each unshuffled batch of
    ``batch_size`` rows (:func:`shares`); what :func:`gather_rows` puts back in the split's order. Has what
    ``bars.train.predict`` needs of a split (``len`` and ``batches``)."""

    def __init__(self, split: Any, ctx: Context, batch_size: int) -> None:
        self.split, self.ctx, self.batch_size = split, ctx, int(batch_size)
        n = len(split)
        self.batch_rows = [min(self.batch_size, n - s) for s in range(0, n, self.batch_size)]
        self.counts = [[hi - lo for lo, hi in shares(b, ctx.world_size)] for b in self.batch_rows]
        self._len = sum(c[ctx.rank] for c in self.counts)

    def __len__(self) -> int:
        return self._len

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0, device: Any = None
                ) -> Iterator[tuple[Any, Tensor]]:
        if shuffle or batch_size != self.batch_size:
            raise ValueError("an EvalShard yields its own unshuffled batches of the size it was made with")
        for xb, yb in self.split.batches(self.batch_size, shuffle=False, seed=0, device=device):
            lo, hi = shares(_rows(yb), self.ctx.world_size)[self.ctx.rank]
            if hi > lo:
                yield _take(xb, lo, hi), yb[lo:hi]


def gather_rows(local: Tensor, shard: EvalShard) -> Tensor | None:
    """Every process's ``local`` rows (its :class:`EvalShard`'s scores, [n_local] or [n_local, T]) gathered on
    process 0 in the split's order; None on the other processes. Collective: every process calls it."""
    import torch.distributed as dist

    ctx = shard.ctx
    width = max(sum(c[r] for c in shard.counts) for r in range(ctx.world_size))
    backend_device = torch.device("cuda", torch.cuda.current_device()) \
        if dist.get_backend() == "nccl" else torch.device("cpu")
    padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=backend_device)
    padded[: local.shape[0]] = local.to(backend_device)
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded)  # (gather to one process is recent in NCCL; all_gather works everywhere)
    if not ctx.is_main:
        return None
    parts = [p.cpu() for p in parts]
    taken = [0] * ctx.world_size
    out = []
    for counts in shard.counts:
        for r, c in enumerate(counts):
            if c:
                out.append(parts[r][taken[r]: taken[r] + c])
                taken[r] += c
    return torch.cat(out) if out else torch.empty((0, *local.shape[1:]), dtype=local.dtype)


def broadcast_object(obj: Any, ctx: Context) -> Any:
    """Process 0's ``obj`` on every process (collective)."""
    import torch.distributed as dist

    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(t: Tensor) -> Tensor:
    """``t`` summed over the processes (in place; returned)."""
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def no_forward_buffer_sync(ddp: type) -> dict[str, bool]:
    """DistributedDataParallel's switch for "no buffer broadcast before each forward" (batch norm's running
    statistics are updated alike everywhere: global batch statistics): ``forward_sync_buffers=False`` since torch
    2.13, ``broadcast_buffers=False`` before (the torch 2.11 of a CUDA image took only that one)."""
    import inspect

    accepted = inspect.signature(ddp.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in accepted else {"broadcast_buffers": False}


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Process 0's buffers (BatchNorm running statistics) in every process, before scoring or copying the
    weights, so that every process holds the same model (collective)."""
    import torch.distributed as dist

    for b in module.buffers():
        dist.broadcast(b.data, src=0)


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Process 0's parameters and buffers in every process (collective)."""
    import torch.distributed as dist

    for t in (*module.parameters(), *module.buffers()):
        dist.broadcast(t.data, src=0)


def unused_parameters(model: torch.nn.Module, train: Any, cfg: Any, device: torch.device, all_labels: bool
                      ) -> list[str]:
    """The trainable parameters a training step of ``model`` leaves without a gradient (e.g. FinalNet's block
    heads when unused), found on a copy of the model with one small batch, the random streams restored after:
    ``DistributedDataParallel`` must be told of them (``find_unused_parameters``, which costs a walk of the
    autograd graph every step) and only then."""
    import copy

    from bars.objective import data_loss, loss_function
    from bars.precision import autocast, float_outputs

    probe = copy.deepcopy(model).train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        xb, yb = next(iter(train.batches(min(cfg.batch_size, 64, len(train)), shuffle=False, seed=0, device=device,
                                         **({"all_labels": True} if all_labels else {}))))
        with autocast(device, cfg.precision):
            outputs = probe(xb)
        data_loss(probe, float_outputs(outputs), yb, loss_function(cfg.loss)).backward()
    return [name for name, p in probe.named_parameters() if p.requires_grad and p.grad is None]


# ------------------------------------------------------------------------------------------------- batch norm
_GHOST: contextvars.ContextVar[bool] = contextvars.ContextVar("bars_distributed_ghost", default=False)


@contextlib.contextmanager
def ghost_rows(on: bool) -> Iterator[None]:
    """While ``on``: this process's rows are a stand-in (its share of the batch is empty, :func:`shard_batches`'s
    weight 0): they add nothing to the global batch statistics of :func:`global_batch_norm`."""
    token = _GHOST.set(bool(on))
    try:
        yield
    finally:
        _GHOST.reset(token)


class _GlobalBatchNorm:
    """Mixed into a torch BatchNorm class by :func:`global_batch_norm`: in training mode the batch statistics are
    those of the global batch (every process's share; two differentiable all-reduces: the sum and count, then the
    sum of squared deviations from the global mean), the running statistics are updated from them as one process
    would (momentum, unbiased variance over all the rows); in eval mode, or outside a process group, torch's own."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        import torch.distributed as dist

        if not self.training or not dist.is_initialized():  # type: ignore[attr-defined]
            return super().forward(x)  # type: ignore[misc]
        self._check_input_dim(x)  # type: ignore[attr-defined]
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        ghost = _GHOST.get()
        n_local = 0.0 if ghost else float(x.numel() // c)
        total = _SumOverProcesses.apply(torch.cat([xf.sum(dims) * (0.0 if ghost else 1.0),
                                      torch.full((1,), n_local, dtype=torch.float32, device=x.device)]))
        n = total[c]
        mean = total[:c] / n
        shape = [1, c] + [1] * (x.dim() - 2)
        centred = xf - mean.view(shape)
        sq = _SumOverProcesses.apply((centred * centred).sum(dims) * (0.0 if ghost else 1.0))
        var = sq / n  # biased: what normalises, as torch's
        if self.track_running_stats:  # type: ignore[attr-defined]
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[attr-defined]
                momentum = self.momentum  # type: ignore[attr-defined]
                factor = (1.0 / float(self.num_batches_tracked)) if momentum is None else momentum  # type: ignore
                self.running_mean.mul_(1 - factor).add_(mean.detach() * factor)  # type: ignore[attr-defined]
                unbiased = var.detach() * (n / (n - 1)) if float(n) > 1 else var.detach()
                self.running_var.mul_(1 - factor).add_(unbiased * factor)  # type: ignore[attr-defined]
        y = centred / torch.sqrt(var.view(shape) + self.eps)  # type: ignore[attr-defined]
        if self.affine:  # type: ignore[attr-defined]
            y = y * self.weight.view(shape) + self.bias.view(shape)  # type: ignore[attr-defined]
        return y.to(x.dtype)


class _SumOverProcesses(torch.autograd.Function):
    """``x`` summed over the processes, differentiable: the gradient of a sum that every process uses is the sum
    of every process's gradient (an all-reduce both ways)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        import torch.distributed as dist

        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        import torch.distributed as dist

        out = grad.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


_GLOBAL_CLASSES: dict[type, type] = {}


def global_batch_norm(model: torch.nn.Module) -> Callable[[], None]:
    """Make every BatchNorm layer of ``model`` (torch's BatchNorm1d/2d/3d) normalise by the global batch's
    statistics while it trains in a process group (the layers keep their parameters, buffers and names: their
    class is swapped for a subclass); returns the function that puts the classes back. Torch's SyncBatchNorm does
    the same on GPUs only; this works with gloo on the CPU too."""
    swapped = []
    for m in model.modules():
        cls = type(m)
        if cls in (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d):
            if cls not in _GLOBAL_CLASSES:
                _GLOBAL_CLASSES[cls] = type(f"Global{cls.__name__}", (_GlobalBatchNorm, cls), {})
            m.__class__ = _GLOBAL_CLASSES[cls]
            swapped.append((m, cls))

    def restore() -> None:
        for m, cls in swapped:
            m.__class__ = cls

    return restore


# ------------------------------------------------------------------------------------------------- launch
def launch_command(processes: int, overrides: Sequence[str]) -> list[str]:
    """The torchrun command that runs ``bars train <overrides>`` in ``processes`` processes on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
            f"--nproc_per_node={int(processes)}", "-m", "bars.cli", "train", *overrides]


def launch(processes: int, overrides: Sequence[str]) -> int:
    """Run ``bars train <overrides>`` in ``processes`` processes (torchrun) and return its exit code. SIGINT /
    SIGTERM reach torchrun, which stops its processes (process 0 then ends its MLflow run KILLED)."""
    import signal
    import subprocess

    cmd = launch_command(processes, overrides)
    print(f"bars train: starting {processes} processes: {' '.join(cmd[2:])}", flush=True)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun sets it for >1 process anyway; each process then sets its own
    proc = subprocess.Popen(cmd, env=env)

    def forward(signum: int, frame: Any) -> None:
        proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        rc = proc.wait()
        if rc != 0:
            print(f"bars train: the {processes} processes failed (torchrun exit {rc}); the first error is printed "
                  f"above torchrun's report", file=sys.stderr, flush=True)
        return rc
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


__all__ = [
    "Context",
    "DistributedError",
    "EvalShard",
    "all_reduce_sum",
    "barrier",
    "broadcast_buffers",
    "broadcast_object",
    "broadcast_parameters",
    "context",
    "cpu_threads",
    "device_for",
    "gather_rows",
    "ghost_rows",
    "global_batch_norm",
    "init",
    "launch",
    "launch_command",
    "launched_world",
    "shard_batches",
    "share_weight",
    "shares",
    "shutdown",
    "unused_parameters",
]
