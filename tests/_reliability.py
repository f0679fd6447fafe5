"""Shared set-up of the reliability tests: a fresh project folder and the argv of fast real commands."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def tiny_csv(path: Path, n: int = 600) -> Path:
    """A small CTR table (label, user, item, price, hist) generated with a fixed seed."""
    rng = np.random.default_rng(0)
    lines = ["label,user,item,price,hist"]
    for _ in range(n):
        u, it = int(rng.integers(0, 30)), int(rng.integers(0, 20))
        y = int((u % 3 == 0) ^ bool(rng.random() < 0.2))
        hist = "|".join(str(x) for x in rng.integers(0, 10, int(rng.integers(1, 4))))
        lines.append(f"{y},u{u},i{it},{rng.random():.3f},{hist}")
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_args(root: Path, csv: Path, *extra: str) -> list[str]:
    """Overrides of a fast DCN run on ``csv`` in a fresh project ``root`` (its own mlflow.db, data, sweeps...)."""
    return ["model=dcn", "data=tabular", f"data.file={csv}", "data.categorical=[user,item]", "data.numeric=[price]",
            "data.sequence=[hist]", "model.params.dnn_hidden_units=[16]", "train.batch_size=128",
            "train.max_epochs=1", "train.num_threads=1", f"paths.root={root}", "tracking.experiment=tiny", *extra]


def command_env() -> dict[str, str]:
    """This process's environment for a ``bars`` command: one thread, the project store (no outside URI)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("BARS_SWEEP_STORAGE", None)
    return env
