"""`bars dashboard`: optuna-dashboard on 127.0.0.1 over a sweep's storage (journal file or postgresql://).

``make dashboard MODEL=<m> DATA=<d> [STORAGE=url]``; the port is ``sweep.dashboard_port`` (default 8080). Reach
it from another machine with an ssh tunnel (``ssh -L 8080:127.0.0.1:8080 host``): it never listens on a public
address.
"""

from __future__ import annotations

import contextlib

from omegaconf import DictConfig

from bars.config import hydra_command, safe_url


def dashboard(cfg: DictConfig, *, host: str = "127.0.0.1", serve: bool = True) -> str:
    from bars.study import is_journal, open_storage, storage_url
    from bars.validate import validate

    validate(cfg, "dashboard")
    url = storage_url(cfg)
    if is_journal(url):
        from pathlib import Path

        path = Path(url[len("journal://"):])
        if not path.exists():
            raise FileNotFoundError(f"no sweep storage at {path}: run `make sweep MODEL={cfg.model.id} "
                                    f"DATA={cfg.data.name}` first (or pass STORAGE=...)")
    storage = open_storage(url, cfg)
    port = int(cfg.sweep.get("dashboard_port", 8080))
    addr = f"http://{host}:{port}/dashboard/studies"
    print(f"bars dashboard: optuna-dashboard over {safe_url(url)}\n                open {addr}  (Ctrl-C stops it)",
          flush=True)
    if serve:
        from optuna_dashboard import run_server

        run_server(storage, host=host, port=port)
    return addr


def _serve(cfg: DictConfig, _: list[str]) -> int:
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops the server: a normal end
        dashboard(cfg)
    return 0


def main() -> int:
    """``bars dashboard model=<m> data=<d> [sweep.storage=...]``."""
    from bars.validate import ConfigError

    return hydra_command("dashboard", _serve, (FileNotFoundError, ConfigError))
