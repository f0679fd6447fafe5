"""Where sweep workers run: one per GPU by default, ``sweep.workers_per_gpu`` packed on each, an explicit device
list, or the CPU when no GPU is visible.

:func:`plan` is a pure function of the sweep settings and the list of visible GPUs, so every rule is tested on a
CPU machine by passing a made-up GPU list (``visible_gpus()`` asks torch on the real machine). The launcher turns
each :class:`Slot` into a worker process: ``CUDA_VISIBLE_DEVICES`` names the one GPU the worker may see (so
workers never touch each other's devices and ``cuda:0`` inside the worker is the slot's GPU), ``sweep.worker_device``
tells it what to train on, and its torch CPU threads are ``cores // workers`` unless ``sweep.threads`` says
otherwise. Each trial's MLflow run records the physical device (:func:`physical_label`, e.g. ``cuda:3``), the
worker index and how many workers shared that device.

Settings (``conf/sweep/default.yaml``):

- ``sweep.devices``: ``auto`` (the visible GPUs, else the CPU), ``cpu``, or GPUs: a list ``[0, 2]`` /
  ``[cuda:0, cuda:2]`` or a string ``"0,2"`` (indices into the visible GPUs, or the ids/UUIDs listed in
  ``CUDA_VISIBLE_DEVICES``). With ``auto``, an explicit ``train.device`` (``cpu``, ``cuda:1``) decides.
- ``sweep.workers_per_gpu``: workers placed on each GPU (default 1; 4-8 for Frappe-size models, which use a few
  percent of a modern GPU each).
- ``sweep.workers``: ``auto`` = GPUs x workers_per_gpu, or 1 on the CPU (in the launcher's own process); a
  number k places k workers round-robin over the GPUs (k <= GPUs x workers_per_gpu) or k CPU workers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Placement", "PlacementError", "Slot", "device_tags", "parse_devices", "physical_label", "plan", "visible_gpus",
           "worker_env"]


class PlacementError(ValueError):
    """Sweep device settings that cannot be satisfied (the message names the key and what is visible)."""


@dataclass(frozen=True)
class Slot:
    """One worker's place. ``device`` is what it trains on inside its own process (``cuda:0`` when it sees one
    GPU, ``cpu``); ``visible`` is its ``CUDA_VISIBLE_DEVICES`` (one GPU id, ``""`` to hide every GPU from a CPU
    worker on a GPU machine, None to leave the variable alone); ``label`` is the physical device for the
    records (``cuda:3``); ``sharing`` counts the workers on that device."""

    index: int
    device: str
    label: str
    visible: str | None
    sharing: int
    threads: int | None


@dataclass(frozen=True)
class Placement:
    kind: str  # "gpu" | "cpu"
    slots: tuple[Slot, ...]
    in_process: bool  # one worker, run by the launcher itself (no child process)

    @property
    def workers(self) -> int:
        return len(self.slots)

    def describe(self) -> str:
        if not self.slots:
            return "no local workers"
        counts: dict[str, int] = {}
        for s in self.slots:
            counts[s.label] = counts.get(s.label, 0) + 1
        where = ", ".join(f"{label} x{n}" for label, n in counts.items())
        threads = self.slots[0].threads
        tail = f", {threads} CPU thread{'s' if threads != 1 else ''} each" if threads else ""
        how = "in this process" if self.in_process else "worker processes"
        return f"{self.workers} worker{'s' if self.workers != 1 else ''} ({how}): {where}{tail}"


def visible_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs this process may use, as the ids a child's ``CUDA_VISIBLE_DEVICES`` should name: the entries of
    this process's ``CUDA_VISIBLE_DEVICES`` when it is set, else ``"0".."n-1"``; empty without CUDA."""
    env = os.environ if env is None else env
    try:
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken driver is "no GPU" for placement; training reports the error
        n = 0
    if n == 0:
        return []
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(n)]
    ids = [g.strip() for g in listed.split(",") if g.strip()]
    return ids[:n]


def physical_label(device: str, env: Mapping[str, str] | None = None) -> str:
    """``cuda:0`` inside a process started with ``CUDA_VISIBLE_DEVICES=3`` is ``cuda:3`` on the machine: the
    label recorded with a run. CPU and unrestricted devices are returned as they are."""
    env = os.environ if env is None else env
    device = str(device)
    if not device.startswith("cuda"):
        return device
    local = int(device.split(":", 1)[1]) if ":" in device else 0
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return f"cuda:{local}"
    ids = [g.strip() for g in listed.split(",") if g.strip()]
    return f"cuda:{ids[local]}" if local < len(ids) else f"cuda:{local}"


def parse_devices(value: Any, gpus: Sequence[str]) -> list[str] | None:
    """``sweep.devices`` -> the GPU ids to use (a subset of ``gpus``, in the order given), or None for the CPU.
    ``auto`` -> every visible GPU (None when there is none)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return list(gpus) or None
    if isinstance(value, str) and value.strip().lower() == "cpu":
        return None
    items = [p.strip() for p in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    items = [i for i in items if i]
    if not items:
        raise PlacementError("sweep.devices is empty: use auto, cpu, or a list of GPUs such as [0, 1]")
    out: list[str] = []
    for item in items:
        key = item[len("cuda:"):] if item.lower().startswith("cuda:") else item
        if key in gpus:  # an id as CUDA_VISIBLE_DEVICES lists it (index or UUID)
            gid = key
        elif key.isdigit() and int(key) < len(gpus):  # an index into the visible GPUs
            gid = gpus[int(key)]
        else:
            seen = ", ".join(gpus) if gpus else "none (no CUDA device is visible to this process)"
            raise PlacementError(f"sweep.devices: GPU {item!r} is not visible; visible GPUs: {seen}. Use "
                                 f"sweep.devices=auto, sweep.devices=cpu, or a list of visible GPUs")
        if gid in out:
            raise PlacementError(f"sweep.devices lists GPU {item!r} twice; use sweep.workers_per_gpu to place "
                                 f"several workers on one GPU")
        out.append(gid)
    return out


def _positive_int(value: Any, key: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise PlacementError(f"{key} must be a whole number, got {value!r}") from None
    if n < 1 or str(value).strip() not in (str(n), f"{n}.0"):
        raise PlacementError(f"{key} must be a whole number >= 1, got {value!r}")
    return n


def plan(workers: Any, devices: Any = "auto", workers_per_gpu: Any = 1, *, gpus: Sequence[str],
         train_device: str = "auto", threads: int | None = None, cores: int | None = None) -> Placement:
    """Place the sweep's local workers (see the module doc). ``workers`` is ``auto``, 0 (none: external workers)
    or k >= 1; ``gpus`` the visible GPU ids (:func:`visible_gpus`); ``train_device`` the config's
    ``train.device`` (an explicit ``cpu``/``cuda:N`` decides when ``devices`` is ``auto``); ``threads`` the
    explicit ``sweep.threads`` (else ``cores // workers`` for several workers)."""
    per_gpu = _positive_int(workers_per_gpu, "sweep.workers_per_gpu")
    auto_devices = devices is None or (isinstance(devices, str) and devices.strip().lower() == "auto")
    td = str(train_device or "auto").strip().lower()
    if auto_devices and td == "cpu":
        devices = "cpu"
    elif auto_devices and td.startswith("cuda"):
        devices = [td.split(":", 1)[1]] if ":" in td else "auto"
        if not gpus:
            raise PlacementError(f"train.device={train_device} but no CUDA device is visible to this process; "
                                 f"use train.device=auto or cpu")
    chosen = parse_devices(devices, gpus)
    auto_workers = isinstance(workers, str) and workers.strip().lower() == "auto"
    if auto_workers:
        k = per_gpu * len(chosen) if chosen else 1
    else:
        try:
            k = int(workers)
        except (TypeError, ValueError):
            raise PlacementError(f"sweep.workers must be auto or a number >= 0, got {workers!r}") from None
        if k < 0:
            raise PlacementError(f"sweep.workers must be auto or a number >= 0, got {workers!r}")
    if k == 0:
        return Placement("gpu" if chosen else "cpu", (), in_process=False)
    cores = cores or os.cpu_count() or 1
    each = int(threads) if threads is not None else (max(1, cores // k) if k > 1 else None)
    if not chosen:
        slots = tuple(Slot(i, "cpu", "cpu", "" if gpus else None, k, each) for i in range(k))
        return Placement("cpu", slots, in_process=k == 1)
    capacity = per_gpu * len(chosen)
    if k > capacity:
        raise PlacementError(f"sweep.workers={k} does not fit {len(chosen)} GPU(s) x sweep.workers_per_gpu="
                             f"{per_gpu} = {capacity} worker slots; raise sweep.workers_per_gpu, add devices "
                             f"(sweep.devices) or lower sweep.workers")
    on = [chosen[i % len(chosen)] for i in range(k)]  # round-robin: spread over the GPUs before packing
    share = {g: on.count(g) for g in chosen}
    if k == 1:  # the launcher trains itself: it sees every visible GPU, so name the local index
        gid = on[0]
        return Placement("gpu", (Slot(0, f"cuda:{gpus.index(gid)}", _label(gid), None, 1, each),), in_process=True)
    slots = tuple(Slot(i, "cuda:0", _label(g), g, share[g], each) for i, g in enumerate(on))
    return Placement("gpu", slots, in_process=False)


def _label(gid: str) -> str:
    return f"cuda:{gid}"


def worker_env(slot: Slot, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of a worker process for ``slot``: its one visible GPU (or none) and its CPU threads."""
    env = dict(base)
    if slot.visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot.visible
    if slot.device.startswith("cuda"):  # deterministic cuBLAS (train.deterministic) needs it before CUDA starts
        env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if slot.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(slot.threads)
    return env


def device_tags(index: int, device: str | None, train_device: str = "auto", sharing: int | None = None
                ) -> dict[str, str]:
    """What a sweep worker records with each trial run: ``sweep_worker`` (its index), ``sweep_device`` (the
    physical device, e.g. ``cuda:3``) and ``sweep_device_workers`` (workers placed on that device, when the
    launcher placed it). ``device`` None (an external worker) means ``train.device`` as configured."""
    dev = str(device) if device is not None else _resolve(str(train_device or "auto"))
    tags = {"sweep_worker": str(index), "sweep_device": physical_label(dev)}
    if sharing:
        tags["sweep_device_workers"] = str(int(sharing))
    return tags


def _resolve(train_device: str) -> str:
    name = train_device.strip().lower()
    if name in ("auto", "cuda"):
        try:
            import torch

            has_cuda = torch.cuda.is_available()
        except Exception:  # noqa: BLE001
            has_cuda = False
        return "cuda:0" if has_cuda or name == "cuda" else "cpu"
    return name
