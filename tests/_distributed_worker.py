"""A process of tests/test_distributed.py's process groups: fits a model on the tiny CTR problem as one of
``world`` processes (gloo, on the CPU) and, in process 0, saves what the test compares with one process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tiny_ctr import SPEC, tiny_data

from bars import distributed as dist
from bars.models import build
from bars.train import TrainConfig, evaluate, fit, predict

MODEL = {"embedding_dim": 4, "hidden_units": [16, 8], "activation": "relu", "batch_norm": False, "dropout": 0.0}


def train_config(batch_size: int, **extra) -> TrainConfig:
    return TrainConfig(batch_size=batch_size, eval_batch_size=batch_size // 2 + 1, max_epochs=3, learning_rate=3e-3,
                       embedding_regularizer=1e-3, net_regularizer=1e-4, device="cpu", num_threads=1, **extra)


def model_params(batch_norm: bool) -> dict:
    return {**MODEL, "batch_norm": batch_norm}


def run(rank: int, world: int, port: int, out: str, n_train: int, batch_size: int, model: str,
        batch_norm: bool) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world)})
    ctx = dist.context(world)
    cfg = train_config(batch_size, processes=world)
    torch.manual_seed(0)
    net = build(model, SPEC, model_params(batch_norm))
    train, valid = tiny_data(n_train, seed=1), tiny_data(701, seed=2)
    result = fit(net, train, valid, cfg, seed=5, distributed=ctx)
    # the gathered scores of a split whose batches do not divide evenly, against one process's
    shard = dist.EvalShard(valid, ctx, 100)
    gathered = dist.gather_rows(predict(net, shard, 100), shard)
    again = evaluate(net, valid, 100, distributed=ctx)
    classes = sorted({type(m).__name__ for m in net.modules() if "BatchNorm" in type(m).__name__})
    if ctx.is_main:
        torch.save({"classes": classes, "state": net.state_dict(), "history": [(h.train_loss, h.val, h.lr) for h in result.history],
                    "best_epoch": result.best_epoch, "gathered": gathered, "plain": predict(net, valid, 100),
                    "again": again, "threads": torch.get_num_threads()}, out)
    dist.shutdown()


if __name__ == "__main__":
    rank, world, port, out, n_train, batch_size, model, batch_norm = sys.argv[1:9]
    run(int(rank), int(world), int(port), out, int(n_train), int(batch_size), model, batch_norm == "1")
