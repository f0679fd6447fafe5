"""Config helpers: the project root, Hydra composition for tests and tools, flattening and fingerprints.

Entry points are thin ``@hydra.main`` shells; everything they do is a plain function taking the composed
``DictConfig``. Tests build the same config with :func:`compose`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
CONF_DIR = PROJECT_ROOT / "conf"


def project_root() -> Path:
    """The project folder (holds conf/, datasets/, data/, mlflow.db). ``BARS_HOME`` overrides it."""
    return Path(os.environ.get("BARS_HOME", PROJECT_ROOT)).resolve()


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("bars_root"):
        OmegaConf.register_new_resolver("bars_root", lambda: str(project_root()))
    if not OmegaConf.has_resolver("bars_suffix"):  # ${bars_suffix:${preset}} -> "" or "__<preset>"
        OmegaConf.register_new_resolver("bars_suffix", lambda v=None: f"__{v}" if v else "")


_register_resolvers()


def compose(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config") -> DictConfig:
    """Compose the config exactly as the CLI would (same defaults, same overrides, the preset named by
    ``preset=<name>`` applied under the overrides: see bars.presets), without running a job."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from bars.presets import apply_preset

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    return apply_preset(cfg, overrides) if config_name == "config" else cfg


def hydra_command(name: str, body: Callable[[DictConfig, list[str]], int | None],
                  errors: tuple[type[BaseException], ...] = (), error_code: int = 2) -> int:
    """The one ``@hydra.main`` shell of every ``bars <name>`` command: compose the project config from the
    command line (with the preset ``preset=<name>`` names applied under it: bars.presets), call
    ``body(cfg, overrides)`` (a plain function; its int return is the exit code) and turn an expected error
    (``errors``, or a preset that does not exist or does not fit) into ``bars <name>: error: ...`` on stderr and
    ``error_code``."""
    import sys

    import hydra
    from hydra.core.hydra_config import HydraConfig

    from bars.presets import PresetError, apply_preset

    rc = {"code": 0}

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        try:
            overrides = list(HydraConfig.get().overrides.task)
            rc["code"] = int(body(apply_preset(cfg, overrides), overrides) or 0)
        except (PresetError, *errors) as e:
            print(f"bars {name}: error: {e}", file=sys.stderr, flush=True)
            rc["code"] = error_code

    _main()
    return rc["code"]


def to_container(cfg: Any) -> Any:
    """Resolved plain Python containers (dicts/lists) from an OmegaConf node, or the value itself."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": 1, "c": [1, 2]}`` (lists stay values)."""
    d = to_container(d)
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[key] = v
    else:
        out[prefix] = d
    return out


_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/\s:@]*):(?P<secret>[^\s/]*)@")


def redact(text: Any) -> Any:
    """``text`` with the password of every URL in it removed (``postgresql://u:secret@h/db`` ->
    ``postgresql://u@h/db``); other values pass unchanged. What logs, MLflow params and tags, study attributes
    and tables show: a storage URL with a password never appears in them."""
    if not isinstance(text, str) or "://" not in text:
        return text
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}@", text)


def safe_url(url: str) -> str:
    """A storage/tracking URL without its password (:func:`redact` of one URL)."""
    return redact(str(url))


def canonical_json(obj: Any) -> str:
    return json.dumps(to_container(obj), sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(obj: Any, length: int = 12) -> str:
    """A short, stable hash of a config (key order does not matter)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]
