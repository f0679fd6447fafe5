"""``train.*``: the BARS protocol's knobs as a typed, strict config (``conf/train/default.yaml`` has the same keys).

:class:`TrainConfig` is what :mod:`bars.train` runs; ``TrainConfig.from_cfg(cfg.train)`` rejects unknown keys and
wrong types, naming the key and what was expected. Re-exported by :mod:`bars.train`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bars import metrics
from bars.objective import LOSSES, TrainConfigError
from bars.precision import PRECISIONS


@dataclass(frozen=True)
class TrainConfig:
    """The BARS protocol's knobs; fields == keys of ``conf/train/default.yaml``."""

    optimizer: str = "adam"
    learning_rate: float = 1e-3
    batch_size: int = 4096
    eval_batch_size: int = 8192
    max_epochs: int = 100
    embedding_regularizer: float = 0.0
    net_regularizer: float = 0.0
    clip_grad_norm: float = 10.0
    embedding_init_std: float = 1e-4
    loss: str = "bce"
    monitor: str | Mapping[str, float] = "val_auc"  # a metric key, or metric key -> weight (sum maximised)
    monitor_task: str | None = None  # multi-task runs: the task a task-less monitor key reads (None: the first)
    min_delta: float = 1e-6
    lr_decay_factor: float = 0.1
    min_lr: float = 1e-6
    max_strikes: int = 2
    reset_strikes_on_improvement: bool = True
    device: str = "auto"
    num_threads: int = 0
    deterministic: bool = True
    processes: int = 1  # processes training the run together (bars.distributed: DistributedDataParallel)
    precision: str = "fp32"  # fp32 | bf16 (autocast of the forward passes; the loss in float32)
    tf32: bool = False  # CUDA: TF32 for float32 matmuls and cuDNN convolutions
    reuse_freed_memory: bool = True  # freed host buffers stay in the process for the next step (bars.heap)
    cuda_graph: bool = False  # CUDA, one process: full batches replay one captured CUDA graph of the step

    def __post_init__(self) -> None:
        problems = []
        if self.optimizer.lower() != "adam":
            problems.append(f"optimizer {self.optimizer!r}: only 'adam' (the BARS protocol) is supported")
        if self.loss not in LOSSES:
            problems.append(f"loss {self.loss!r} is not one of {sorted(LOSSES)}")
        try:
            metrics.Monitor.parse(self.monitor, task=self.monitor_task)
        except metrics.MetricError as e:
            problems.append(str(e))
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        for name in ("learning_rate", "batch_size", "eval_batch_size", "max_epochs", "max_strikes", "processes"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("embedding_regularizer", "net_regularizer", "min_delta", "min_lr", "num_threads"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("deterministic", "tf32", "reuse_freed_memory", "cuda_graph"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.cuda_graph is True and isinstance(self.processes, int) and self.processes > 1:
            problems.append(f"cuda_graph needs processes = 1 (one process per run), got processes={self.processes}")
        if not 0 < self.lr_decay_factor <= 1:
            problems.append(f"lr_decay_factor must be in (0, 1], got {self.lr_decay_factor!r}")
        if not self.clip_grad_norm > 0 and not math.isinf(self.clip_grad_norm):
            problems.append(
                f"clip_grad_norm must be > 0 (inf disables clipping), got {self.clip_grad_norm!r}"
            )
        if problems:
            raise TrainConfigError("invalid train config: " + "; ".join(problems))

    @property
    def monitor_spec(self) -> metrics.Monitor:
        """``monitor`` parsed against the metric registry."""
        return metrics.Monitor.parse(self.monitor, task=self.monitor_task)

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_cfg(cls, node: Any) -> TrainConfig:
        """From ``cfg.train`` (DictConfig or mapping). Strict: unknown keys raise, listing the valid ones."""
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(node, DictConfig):
                node = OmegaConf.to_container(node, resolve=True)
        except ImportError:  # pragma: no cover
            pass
        if not isinstance(node, Mapping):
            raise TrainConfigError(f"train config must be a mapping, got {type(node).__name__}")
        valid = cls.fields()
        unknown = sorted(set(node) - set(valid))
        if unknown:
            raise TrainConfigError(f"unknown train config key(s) {unknown}; valid keys are {valid}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in node:
                continue
            v = node[f.name]
            if f.name == "monitor":  # a metric key or a mapping: checked against the registry by __post_init__
                if not isinstance(v, (str, Mapping)):
                    raise TrainConfigError(f"train.monitor must be a metric key or a mapping of metric keys to "
                                           f"weights, got {v!r} ({type(v).__name__})")
                kwargs[f.name] = v if isinstance(v, str) else dict(v)
                continue
            if f.name == "monitor_task":  # a label column name, or null
                if v is not None and not isinstance(v, str):
                    raise TrainConfigError(f"train.monitor_task must be a label column name or null, got {v!r}")
                kwargs[f.name] = v
                continue
            want = (
                f.type
                if isinstance(f.type, type)
                else {"float": float, "int": int, "bool": bool, "str": str}[f.type]
            )
            if want is float and isinstance(v, (int, float)) and not isinstance(v, bool):
                v = float(v)
            elif want is float and isinstance(v, str):  # YAML 1.1 reads "1e-3" as a string
                try:
                    v = float(v)
                except ValueError:
                    pass
            if not isinstance(v, want) or (want is int and isinstance(v, bool)):
                raise TrainConfigError(
                    f"train.{f.name} must be {want.__name__}, got {v!r} ({type(v).__name__})"
                )
            kwargs[f.name] = v
        return cls(**kwargs)


__all__ = ["TrainConfig"]
