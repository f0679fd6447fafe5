"""Populate a real MLflow store (SQLite in a temp folder) in the shape bars.run / bars.sweep / bars.final write.

Used by the leaderboard and reproduce tests: no mocks, MLflow's own client API writes every record.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

PROTOCOL_SEED = {"movielens_small": 2021, "frappe_x1": 2021}
FINGERPRINT = {"movielens_small": "ab12cd34ef56", "frappe_x1": "0f1e2d3c4b5a"}
# dataset -> model -> number of final seeds
LAYOUT = {
    "movielens_small": {"dcn": 3, "deepfm": 3, "dnn": 3, "fm": 1},
    "frappe_x1": {"dcn": 2, "dnn": 2},
}
BASE_AUC = {"dcn": 0.95, "deepfm": 0.949, "dnn": 0.94, "fm": 0.90}


def _common_tags(data: str, model: str, seed: int, stage: str) -> dict[str, str]:
    return {
        "model": model,
        "data": data,
        "data_fingerprint": FINGERPRINT[data],
        "seed": str(seed),
        "git_commit": "1234567890abcdef1234567890abcdef12345678",
        "bars_version": "0.1.0",
        "python": "3.11.2",
        "torch": "2.13.0",
        "cuda": "none",
        "device": "cpu",
        "hostname": "testhost",
        "stage": stage,
        **({"model_class": model} if SHAPE[data] == "now" else {}),
    }


# The shape of the records: "before" = as bars wrote them before the protocol block and model identity
# (data.protocol_seed, data.embedding_dim, no BARS names); "now" = as it writes them today (protocol.*,
# data.bars_split, model.id, model.bars_name, tag model_class). The leaderboard reads both (the committed
# results were made from "before" runs).
SHAPE = {"movielens_small": "before", "frappe_x1": "now"}
BARS_SPLIT = {"movielens_small": None, "frappe_x1": "Frappe_x1"}
BARS_NAME = {"dcn": "DCN", "deepfm": "DeepFM", "dnn": "DNN", "fm": "FM"}


def _params(data: str, model: str, seed: int) -> dict[str, str]:
    common = {"model.name": model, "data.name": data, "seed": str(seed), "train.batch_size": "4096"}
    if SHAPE[data] == "before":
        return {**common, "data.protocol_seed": str(PROTOCOL_SEED[data]), "data.embedding_dim": "10"}
    return {**common, "protocol.seed": str(PROTOCOL_SEED[data]), "protocol.embedding_dim": "10",
            "data.bars_split": str(BARS_SPLIT[data]), "model.id": model, "model.bars_name": BARS_NAME[model]}


def _config_yaml(data: str, model: str, seed: int) -> str:
    if SHAPE[data] == "before":
        return (
            f"seed: {seed}\ndata:\n  name: {data}\n  protocol_seed: {PROTOCOL_SEED[data]}\n"
            f"model:\n  name: {model}\n  params: {{}}\ntrain:\n  batch_size: 4096\n"
        )
    return (
        f"seed: {seed}\ndata:\n  name: {data}\nprotocol:\n  seed: {PROTOCOL_SEED[data]}\n  embedding_dim: 10\n"
        f"model:\n  name: {model}\n  params: {{}}\ntrain:\n  batch_size: 4096\n"
    )


def log_run(client: MlflowClient, exp_id: str, tmp: Path, data: str, model: str, seed: int, stage: str,
            rng: random.Random, *, parent: str | None = None, trial: int | None = None,
            status: str = "FINISHED", epochs: int = 4, extra_tags: dict | None = None,
            extra_params: dict | None = None) -> str:
    tags = _common_tags(data, model, seed, stage)
    if parent:
        tags["mlflow.parentRunId"] = parent
    if trial is not None:
        tags["trial_number"] = str(trial)
        tags["state"] = "complete"
    tags.update(extra_tags or {})
    run = client.create_run(exp_id, tags=tags, run_name=f"{model}-{stage}-{seed}")
    rid = run.info.run_id
    ts = int(time.time() * 1000)
    metrics = []
    auc = BASE_AUC[model] + rng.uniform(-0.003, 0.003)
    best_val = 0.0
    for ep in range(1, epochs + 1):
        val = auc - 0.01 / ep + rng.uniform(-1e-4, 1e-4)
        best_val = max(best_val, val)
        metrics += [Metric("train_loss", 0.5 / ep, ts, ep), Metric("val_auc", val, ts, ep),
                    Metric("val_logloss", 0.3 + 0.05 / ep, ts, ep), Metric("lr", 1e-3, ts, ep),
                    Metric("samples_per_s", 30000.0 + rng.uniform(-500, 500), ts, ep)]
    rates = [m.value for m in metrics if m.key == "samples_per_s"]
    final = {
        "val_auc": best_val,
        "val_logloss": 0.3 + rng.uniform(0, 0.01),
        "test_auc": auc + rng.uniform(-5e-4, 5e-4),
        "test_logloss": 0.31 + rng.uniform(0, 0.01),
        "n_params": 123456.0 + len(model),
        "epochs": float(epochs),
        "best_epoch": float(epochs - 1),
        "wall_seconds": 10.0 * epochs + rng.uniform(0, 1),
        "seconds_per_epoch": 10.0 + rng.uniform(0, 1),
        "samples_per_s_mean": sum(rates) / len(rates),
    }
    # bars.run logs the final values at step = last epoch, after that epoch's own values
    metrics += [Metric(k, v, ts + 1, epochs) for k, v in final.items()]
    params = [Param(k, v) for k, v in {**_params(data, model, seed), **(extra_params or {})}.items()]
    client.log_batch(rid, metrics=metrics, params=params)
    cfg_path = tmp / f"{rid}" / "config.yaml"
    cfg_path.parent.mkdir(parents=True)
    cfg_path.write_text(_config_yaml(data, model, seed))
    client.log_artifact(rid, str(cfg_path))
    (cfg_path.parent / "feature_spec.json").write_text(json.dumps({"version": 1}))
    client.log_artifact(rid, str(cfg_path.parent / "feature_spec.json"))
    client.set_terminated(rid, status=status)
    return rid


def populate(root: Path) -> str:
    """Write the fixture store under ``root``; returns its tracking URI."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    rng = random.Random(7)
    tmp = root / "artifacts_src"
    tmp.mkdir(parents=True, exist_ok=True)
    for data, models in LAYOUT.items():
        exp_id = client.create_experiment(data, artifact_location=str(root / "artifacts" / data))
        for model, n_seeds in models.items():
            # a sweep: parent run + trial child runs (one pruned, one failed)
            if model != "fm":
                parent = client.create_run(exp_id, tags={**_common_tags(data, model, PROTOCOL_SEED[data], "sweep")},
                                           run_name=f"{model}__{data}")
                pid = parent.info.run_id
                for t in range(5):
                    extra = {}
                    status = "FINISHED"
                    if t == 3:
                        extra = {"state": "pruned"}
                    if t == 4:
                        extra = {"state": "failed"}
                        status = "FAILED"
                    log_run(client, exp_id, tmp, data, model, PROTOCOL_SEED[data], "trial", rng, parent=pid,
                            trial=t, status=status, epochs=2 + t % 3, extra_tags=extra)
                client.set_terminated(pid, status="FINISHED")
            # an older final run of the protocol seed, superseded by the rerun below (the newest run of a seed wins)
            if model == "dcn":
                log_run(client, exp_id, tmp, data, model, PROTOCOL_SEED[data], "final", rng,
                        extra_tags={"fixture_superseded": "true"})
                time.sleep(0.01)
            # final seeds: protocol seed + i
            for i in range(n_seeds):
                seed = PROTOCOL_SEED[data] + i
                log_run(client, exp_id, tmp, data, model, seed, "final", rng)
            # noise that must not reach the leaderboard: a failed final run and a single run
            log_run(client, exp_id, tmp, data, model, PROTOCOL_SEED[data] + 50, "final", rng, status="FAILED")
            log_run(client, exp_id, tmp, data, model, PROTOCOL_SEED[data], "single", rng)
    return uri
