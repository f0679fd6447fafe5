"""Several processes training one run (bars.distributed, issue 14 item 3): the shares of a global batch, the
protocol of one process kept with 2 gloo processes on the CPU (real process groups), `bars train
train.processes=2` end to end with MLflow, the config checks, and the bf16 / TF32 switches."""

from __future__ import annotations

import inspect
import itertools
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from bars import distributed as dist
from bars.precision import bf16_fast
from bars.train import TrainConfig, TrainConfigError, fit, predict

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _distributed_worker import MODEL, model_params, train_config
from _tiny_ctr import SPEC, tiny_data


# ------------------------------------------------------------------------------------------------- shares
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shares_partition_every_batch(world):
    for rows in [1, 2, 3, 5, 7, 64, 100, 4096, 4097]:
        parts = dist.shares(rows, world)
        assert len(parts) == world
        assert parts[0][0] == 0 and parts[-1][1] == rows
        assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))  # contiguous, in order
        sizes = [hi - lo for lo, hi in parts]
        assert max(sizes) - min(sizes) <= 1
        assert sum(dist.share_weight(s, rows) for s in sizes) == pytest.approx(1.0)


def test_shard_batches_take_each_process_share():
    batches = [({"a": torch.arange(5)}, torch.arange(5).float()), ({"a": torch.arange(1)}, torch.ones(1))]
    for rank in (0, 1):
        ctx = dist.Context(rank=rank, world_size=2, local_rank=rank, local_world_size=2)
        got = list(dist.shard_batches(iter(batches), ctx))
        assert len(got) == 2  # every process runs every step
        first = got[0]
        assert first[0]["a"].tolist() == ([0, 1, 2] if rank == 0 else [3, 4])
        assert first[2] == pytest.approx(3 / 5 if rank == 0 else 2 / 5)
        # the last batch has one row: process 1 gets the whole batch at weight 0 (it must still take the step)
        assert got[1][0]["a"].tolist() == [0] and got[1][2] == (1.0 if rank == 0 else 0.0)


def test_context_from_the_environment(monkeypatch):
    for k in dist.ENV_KEYS:
        monkeypatch.delenv(k, raising=False)
    assert dist.context(1) is None
    with pytest.raises(dist.DistributedError, match="starts them itself"):
        dist.context(2)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(dist.DistributedError, match="launcher started 3"):
        dist.context(2)
    assert dist.context(1) is None  # one process, whatever the environment says (a cluster may set RANK)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    ctx = dist.context(3)
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.is_main) == (1, 3, 1, False)
    assert dist.device_for(ctx, "cpu").type == "cpu"
    with pytest.raises(dist.DistributedError, match="one GPU per process"):
        dist.device_for(ctx, "cuda:0")


def test_launch_command_runs_bars_train_under_torchrun():
    cmd = dist.launch_command(3, ["model=dcn", "train.processes=3"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=3" in cmd and cmd[-4:] == ["bars.cli", "train", "model=dcn", "train.processes=3"]


# ------------------------------------------------------------------------------------------------- 2 processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group(tmp_path: Path, world: int, n_train: int, batch_size: int, model: str = "dnn",
           batch_norm: bool = False) -> dict:
    out = tmp_path / f"rank0-{n_train}-{batch_size}-{int(batch_norm)}.pt"
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(HERE / "_distributed_worker.py"), str(r), str(world), str(port),
                               str(out), str(n_train), str(batch_size), model, str(int(batch_norm))],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(world)]
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    return torch.load(out, weights_only=False)


def _one_process(n_train: int, batch_size: int, model: str = "dnn", batch_norm: bool = False, **extra):
    from bars.models import build

    torch.manual_seed(0)
    net = build(model, SPEC, model_params(batch_norm))
    result = fit(net, tiny_data(n_train, seed=1), tiny_data(701, seed=2), train_config(batch_size, **extra), seed=5)
    return net, result


@pytest.mark.parametrize("n_train,batch_size,batch_norm", [(2000, 256, False), (2001, 500, False),
                                                          (2000, 256, True), (2002, 500, True)])
def test_two_processes_train_as_one(tmp_path, n_train, batch_size, batch_norm):
    """Same global batches, gradients averaged, regularizers added once, batch norm over the global batch,
    decisions shared: the weights (and batch norm's running statistics) and every epoch's loss, validation
    metrics and learning rate of 2 gloo processes are one process's, up to the order of float sums. 2001 rows in
    batches of 500: the last batch has one row (process 1 takes it at weight 0); 2002: two rows, one each (batch
    norm's statistics of the 2-row batch are taken over both processes' rows)."""
    got = _group(tmp_path, 2, n_train, batch_size, batch_norm=batch_norm)
    net, result = _one_process(n_train, batch_size, batch_norm=batch_norm)
    assert got["classes"] == (["BatchNorm1d"] if batch_norm else [])  # fit put torch's classes back
    # With batch norm, the bias of a Linear layer that feeds a BatchNorm layer has a gradient that is exactly 0 in
    # exact arithmetic (the normalisation removes it): what it gets is rounding noise, which Adam scales up to
    # lr-sized steps, so that bias (and the running mean that follows it) drifts by noise, differently with any
    # other order of float sums (one process at another thread count too). The validation scores, which read the
    # running mean, move with it; the training losses (batch statistics) and every other weight do not.
    noise = {"mlp.net.0.bias", "mlp.net.3.bias", "mlp.net.1.running_mean", "mlp.net.4.running_mean"} \
        if batch_norm else set()
    assert len(got["history"]) == len(result.history) == 3
    for (loss, val, lr), h in zip(got["history"], result.history, strict=True):
        assert loss == pytest.approx(h.train_loss, abs=1e-5)  # with batch norm: normalised by the global batch
        if not batch_norm:
            assert lr == h.lr
            for k, v in h.val.items():
                assert val[k] == pytest.approx(v, abs=1e-5), k
    if not batch_norm:
        assert got["best_epoch"] == result.best_epoch
    for k, v in net.state_dict().items():
        if k not in noise:
            assert torch.allclose(got["state"][k].float(), v.float(), atol=1e-5), k
    # scores of each process's share gathered in the split's order (701 rows, batches of 100: 7 of 100 + 1); a
    # matmul over 50 rows may round differently from one over 100 (the kernel's blocking), hence not bit for bit
    assert got["gathered"].shape == got["plain"].shape == (701,)
    assert torch.allclose(got["gathered"], got["plain"], rtol=0, atol=1e-6)
    assert got["again"]["auc"] == pytest.approx(got["history"][got["best_epoch"] - 1][1]["auc"], abs=1e-7)
    assert got["threads"] == 1  # train.num_threads wins over the share of the cores


def test_two_processes_with_a_model_that_leaves_parameters_unused(tmp_path):
    """DistributedDataParallel must be told of parameters a step leaves without a gradient, and only then: the
    probe finds a parameter the forward never reads, and none in a model that reads all of its parameters."""
    _unused_parameters = dist.unused_parameters

    class Skips(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)

        def forward(self, batch):
            return self.used(batch["price"].unsqueeze(1)).squeeze(1)

    cfg = train_config(64)
    assert _unused_parameters(Skips(), tiny_data(100), cfg, torch.device("cpu"), False) == ["unused.weight",
                                                                                          "unused.bias"]
    from bars.models import build

    assert _unused_parameters(build("dnn", SPEC, MODEL), tiny_data(100), cfg, torch.device("cpu"), False) == []


# ------------------------------------------------------------------------------------------------- precision
def test_precision_and_tf32_switches():
    assert TrainConfig().precision == "fp32" and TrainConfig().tf32 is False and TrainConfig().processes == 1
    with pytest.raises(TrainConfigError, match=r"precision must be one of \['fp32', 'bf16'\], got 'fp16'"):
        TrainConfig(precision="fp16")
    with pytest.raises(TrainConfigError, match="processes must be > 0"):
        TrainConfig(processes=0)
    from bars.train import set_tf32

    try:
        set_tf32(True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        set_tf32(False)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        set_tf32(False)


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads /proc/cpuinfo (Linux)")
def test_bf16_fast_on_the_cpu_follows_its_instructions():
    """bfloat16 arithmetic of the CPU's own: AVX512-BF16 or AMX on x86, BF16 on Arm (AVX-512 alone emulates it);
    the probe agrees with this machine's flags, whichever machine runs the test."""
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.split(":")[0].strip() in ("flags", "Features"):
            flags |= set(line.split(":", 1)[1].split())
    want = bool({"avx512_bf16", "amx_bf16", "amx_tile"} & flags) if "sse2" in flags else "bf16" in flags
    assert bf16_fast(torch.device("cpu")) is want


def test_bf16_autocast_runs_the_forward_in_bfloat16():
    from bars.models import build

    torch.manual_seed(0)
    net = build("dnn", SPEC, MODEL)
    seen = []
    net.mlp.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    cfg = train_config(256, precision="bf16")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit(net, tiny_data(2000, seed=1), tiny_data(701, seed=2), cfg, seed=5)
    slow = [w for w in caught if "train.precision=bf16 on cpu without bfloat16 instructions" in str(w.message)]
    assert len(slow) == (0 if bf16_fast(torch.device("cpu")) else 1)  # said once, where the CPU emulates bfloat16
    assert set(seen) == {torch.bfloat16}  # training steps and validation passes alike
    probs = predict(net, tiny_data(701, seed=2), 100, precision="bf16")
    assert probs.dtype == torch.float32  # scores leave autocast in float32
    _, plain_result = _one_process(2000, 256)
    # the tiny problem is learnt either way; bf16 moves the metrics a little, not the protocol
    assert result.best_val["auc"] > 0.7 and abs(result.best_val["auc"] - plain_result.best_val["auc"]) < 0.02


# ------------------------------------------------------------------------------------------------- bars train
def test_bars_train_with_two_processes_records_one_run(tmp_path):
    """`bars train train.processes=2` (what `make train GPUS=2` runs): torchrun starts 2 CPU processes (gloo) on
    the shipped demo data; one MLflow run (tagged with the processes), one checkpoint written once by process 0,
    and the test AUC of one process's run of the same config (no dropout, no batch norm) up to float order."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["model=dnn", "data=movielens_small", "train.max_epochs=1", "model.params.hidden_units=[32,16]",
              "model.params.batch_norm=false", "model.params.dropout=0", f"paths.data={tmp_path / 'data'}",
              f"paths.checkpoints={tmp_path / 'ckpt'}", f"tracking.uri={uri}", "tracking.experiment=ddp",
              "train.device=cpu"]  # gloo (a GPU machine runs the NCCL case in scripts/gpu-check)
    runs = {}
    for n in (2, 1):
        out = subprocess.run([sys.executable, "-m", "bars.cli", "train", *common, f"train.processes={n}"],
                             capture_output=True, text=True, timeout=300, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        if n == 2:
            assert "starting 2 processes" in out.stdout and "; 2 processes;" in out.stdout
            assert out.stdout.count("== dnn on movielens_small") == 1  # process 1 prints nothing of its own
        client = MlflowClient(tracking_uri=uri)
        (run,) = [r for r in client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
                  if r.data.params["train.processes"] == str(n)]
        assert run.info.status == "FINISHED"
        runs[n] = run
    two, one = runs[2], runs[1]
    assert two.data.tags["processes"] == "2" and two.data.tags["distributed_backend"] == "gloo"
    assert "processes" not in one.data.tags
    ckpts = list((tmp_path / "ckpt" / two.info.run_id).iterdir())
    assert [p.name for p in ckpts] == ["best.pt"]
    assert not list((tmp_path / "ckpt").glob("untracked-*"))  # process 1 writes no checkpoint of its own
    for key in ("val_auc", "test_auc", "test_logloss"):
        assert two.data.metrics[key] == pytest.approx(one.data.metrics[key], abs=2e-5), key


def test_processes_are_refused_where_they_cannot_run():
    from bars.config import compose
    from bars.validate import ConfigError, validate

    for command in ("sweep", "final"):
        with pytest.raises(ConfigError, match=r"train.processes=2: several processes train one run of `bars train`"):
            validate(compose(["model=dnn", "train.processes=2"]), command)
    with pytest.raises(ConfigError, match="with method=optfs"):
        validate(compose(["model=dnn", "method=optfs", "train.processes=2"]), "train")
    with pytest.raises(ConfigError, match="train.cuda_graph=true with method=optfs: a method changes settings"):
        validate(compose(["model=dnn", "method=optfs", "train.cuda_graph=true"]), "train")
    with pytest.raises(ConfigError, match="cuda_graph needs processes = 1"):
        validate(compose(["model=dnn", "train.cuda_graph=true", "train.processes=2", "train.device=cpu"]), "train")
    validate(compose(["model=dnn", "train.cuda_graph=true"]), "train")
    with pytest.raises(ConfigError, match=r"train.precision must be one of \['fp32', 'bf16'\], got 'half'"):
        validate(compose(["model=dnn", "train.precision=half"]), "train")
    with pytest.raises(ConfigError, match="train.device=cuda:1 with train.processes=2"):
        validate(compose(["model=dnn", "train.processes=2", "train.device=cuda:1"]), "train")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="needs 2 GPUs, one per process; 0 visible"):
            validate(compose(["model=dnn", "train.processes=2", "train.device=cuda"]), "train")
    validate(compose(["model=dnn", "train.processes=2", "train.device=cpu"]), "train")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_and_tf32_switches_on_cuda():
    """On a GPU: train.tf32 sets both CUDA flags for the run, bf16 autocast runs the forward in bfloat16, and the
    tiny problem is learnt."""
    from bars.models import build

    torch.manual_seed(0)
    net = build("dnn", SPEC, MODEL)
    seen = []
    net.mlp.register_forward_hook(lambda m, i, o: seen.append((o.dtype, o.device.type)))
    cfg = TrainConfig(batch_size=256, eval_batch_size=129, max_epochs=3, learning_rate=3e-3, device="cuda",
                      precision="bf16", tf32=True)
    try:
        result = fit(net, tiny_data(2000, seed=1), tiny_data(701, seed=2), cfg, seed=5)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        from bars.train import set_tf32

        set_tf32(False)
    assert set(seen) == {(torch.bfloat16, "cuda")}
    assert result.best_val["auc"] > 0.7


def test_ddp_buffer_switch_follows_the_installed_torch():
    """torch 2.13 names it forward_sync_buffers; the torch 2.11 of the H200's CUDA image took only
    broadcast_buffers (the first GPU run's DDP row failed on the new name)."""
    from torch.nn.parallel import DistributedDataParallel

    from bars.distributed import no_forward_buffer_sync

    class Older:
        def __init__(self, module, device_ids=None, broadcast_buffers=True, find_unused_parameters=False):
            pass

    assert no_forward_buffer_sync(Older) == {"broadcast_buffers": False}
    expected = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                else "broadcast_buffers")
    assert no_forward_buffer_sync(DistributedDataParallel) == {expected: False}
