"""Pieces of the trainer that stand on their own (re-exported by :mod:`bars.train`): seeds and deterministic
algorithms, the device a name means, checkpoint files (written atomically, read with ``weights_only``), and a
model's parameter split and initialisation (its own, else the layers' defaults)."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bars.fileio import atomic_write


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices). With ``deterministic``, also ask torch for deterministic
    algorithms (on CUDA this sets ``CUBLAS_WORKSPACE_CONFIG`` and warns instead of failing on ops that have no
    deterministic implementation), without torch's filling of every new uninitialised tensor with NaN that the
    same switch turns on: a debugging aid, not a source of determinism (every kernel writes its output before
    anything reads it), which took ~8 % of a DCN training step on the CPU (125 fills per step, issue 16)."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        _deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        fill = getattr(torch._C, "_set_deterministic_fill_uninitialized_memory", None)
        if fill is not None:
            fill(False)
    else:
        _deterministic_algorithms(False)


def _deterministic_algorithms(mode: bool, warn_only: bool = False) -> None:
    """``torch.use_deterministic_algorithms(mode, warn_only=...)`` without importing ``torch._inductor`` (which
    imports ``torch._dynamo``: 2-3 s of CPU per process, issue 16) when it is not loaded yet: the flag is set
    where the public call sets it (``torch._C``) and inductor's own ``deterministic`` setting, which only
    ``torch.compile`` reads, gets the same value from ``TORCHINDUCTOR_DETERMINISTIC`` when inductor is imported
    later (its config reads that variable at import). Once inductor is loaded, the public call."""
    import sys

    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if "torch._inductor.config" in sys.modules or setter is None:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
        return
    os.environ["TORCHINDUCTOR_DETERMINISTIC"] = "1" if mode else "0"
    setter(mode, warn_only=warn_only)


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cpu``, ``cuda``, ``cuda:1``... are checked."""
    if isinstance(name, torch.device):
        name = str(name)
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:<index>") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available (use device=auto or cpu)")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"device {name!r} requested but only {n} CUDA device(s) exist")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' requested but MPS is not available")
    return dev


# ------------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(model_or_state: nn.Module | Mapping[str, Tensor], path: str | Path) -> Path:
    """Save a state dict atomically (temporary file in the same folder, then ``os.replace``)."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else dict(model_or_state)
    path = Path(path)
    cpu = {k: v.detach().cpu() for k, v in state.items()}

    def write(tmp: Path) -> None:  # through a Python file: a full disk is an OSError (ENOSPC), not torch's
        with open(tmp, "wb") as f:  # RuntimeError("unexpected pos ...") from its own C++ writer
            torch.save(cpu, f)

    atomic_write(path, write)
    return path


def load_checkpoint(model: nn.Module, path: str | Path, map_location: Any = "cpu") -> nn.Module:
    """Load weights saved by :func:`save_checkpoint` / ``fit`` into ``model`` (``weights_only=True``, strict)."""
    state = torch.load(Path(path), map_location=map_location, weights_only=True)
    model.load_state_dict(state, strict=True)
    return model


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    own = getattr(model, "split_parameters", None)
    if callable(own):
        emb, net = own()
    else:
        from bars.models.layers import split_parameters

        emb, net = split_parameters(model)
    return [p for p in emb if p.requires_grad], [p for p in net if p.requires_grad]


def _init(model: nn.Module, std: float) -> None:
    own = getattr(model, "init_bars_", None)
    if callable(own):
        own(std)
    else:
        from bars.models.layers import init_bars_

        init_bars_(model, std)
