"""Where a run ran: versions, host, process, git state, command line and hardware; the environment report.

What ``bars.tracking`` records with every run (tags ``environment_tags()``, artifact ``env.txt``). Imports no
tracking library: the MLflow version is read from the installed distribution. ``bars.tracking`` re-exports these
names.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from bars import __version__
from bars.config import project_root, redact
from bars.process import process_start


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


def git_info(root: Path | None = None) -> dict[str, str]:
    """``git_commit`` and ``git_dirty`` ("true"/"false") of the project, or "unknown" outside a git checkout.

    Asked once per process and folder (two ``git`` processes, 30-70 ms a run on a loaded machine, were waited
    at every run's start: issue 16): the state when this process first asked, which is the code it runs (its
    modules were loaded then; a later edit of the checkout does not change the running code)."""
    return dict(_git_info(str(root or project_root())))


@functools.lru_cache(maxsize=8)
def _git_info(root: str) -> tuple[tuple[str, str], ...]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        # results/ and sweeps/ are outputs the pipeline itself writes: they do not make the code dirty
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results", ":(exclude)sweeps"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return (("git_commit", commit), ("git_dirty", "true" if dirty else "false"))
    except (OSError, subprocess.SubprocessError):
        return (("git_commit", "unknown"), ("git_dirty", "unknown"))


def environment_tags() -> dict[str, str]:
    """Tags that describe where a run ran: versions, host, process, git state, command line."""
    tags = {
        "bars_version": __version__,
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
        "pid": str(os.getpid()),
        "command": redact(" ".join([Path(sys.argv[0]).name, *sys.argv[1:]])) if sys.argv else "",
        "mlflow_version": _version("mlflow"),
        "mkl_cbwr": os.environ.get("MKL_CBWR", "unset"),  # oneMKL's reproducibility mode (bars/__init__.py)
    }
    start = process_start(os.getpid())
    if start is not None:
        tags["pid_start"] = start
    try:
        import torch

        tags["torch"] = torch.__version__
        tags["cuda"] = torch.version.cuda or "none"
    except ImportError:  # pragma: no cover - torch is a dependency
        tags["torch"] = tags["cuda"] = "none"
    tags["hardware"] = hardware_description()
    tags.update(git_info())
    return tags


@functools.lru_cache(maxsize=1)
def hardware_description() -> str:
    """CPU model and logical cores, plus the GPU name(s) when CUDA is available: the leaderboard's hardware (read
    once per process)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} logical cores"
    import torch

    if torch.cuda.is_available():
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        desc += f"; GPU {', '.join(names)} x{torch.cuda.device_count()}"
    return desc


def _name_version(dist: metadata.Distribution) -> tuple[str | None, str | None]:
    """``Name`` and ``Version`` from a distribution's metadata header, read as text: the same values as
    ``dist.metadata[...]`` (both fields are single-line headers before the first blank line) without parsing the
    whole file as e-mail, which costs ~5 ms per distribution (0.6 s for a full environment, every run)."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    name = version = None
    for line in text.splitlines():
        if not line.strip():
            break  # end of the header
        if name is None and line.startswith("Name:"):
            name = line[5:].strip()
        elif version is None and line.startswith("Version:"):
            version = line[8:].strip()
    return name, version


@functools.lru_cache(maxsize=1)
def environment_report() -> str:
    """Platform line + every installed distribution as ``name==version`` (what ``pip freeze`` lists). Computed
    once per process: the code a process runs is the code it imported, whatever is installed later."""
    lines = [
        f"# bars {__version__}",
        f"# python {sys.version.split()[0]} ({sys.executable})",
        f"# platform {platform.platform()} {platform.machine()}",
        f"# processor {platform.processor() or 'unknown'}; cpus {os.cpu_count()}",
    ]
    dists = sorted({f"{n}=={v}" for n, v in map(_name_version, metadata.distributions()) if n},
                   key=str.lower)
    return "\n".join(lines + dists) + "\n"


__all__ = ["environment_report", "environment_tags", "git_info", "hardware_description"]
