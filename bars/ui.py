"""`bars ui`: the MLflow UI (``mlflow server``) over the project's tracking store, on 127.0.0.1.

``make ui [PORT=5000]``. It listens on 127.0.0.1 unless told otherwise (``--host``); told otherwise it says so
loudly, because MLflow's server has no login: anyone who reaches the port can read and change every run. Reach
it from another machine with an ssh tunnel (``ssh -L 5000:127.0.0.1:5000 host``). The store's URI goes to the
server in its environment (``MLFLOW_BACKEND_STORE_URI``), not on its command line, where any user of the
machine could read a password in it (``ps``); what is printed has the password removed.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

from bars.config import project_root, safe_url

LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, what: str) -> str | None:
    """The warning a server bound to ``host`` prints, or None for a loopback address."""
    if is_loopback(host):
        return None
    return (f"{what}: WARNING: listening on {host}, not 127.0.0.1: anyone who can reach this machine on that port "
            f"can read and change everything it serves (it has no login). Prefer 127.0.0.1 with an ssh tunnel "
            f"(ssh -L <port>:127.0.0.1:<port> <host>).")


def ui_command(uri: str, host: str = LOOPBACK, port: int = 5000) -> tuple[list[str], dict[str, str], Path]:
    """The command, environment and working folder that serve the MLflow UI over ``uri``."""
    from bars.tracking import sqlite_path

    cmd = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", "1"]
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true",
               MLFLOW_BACKEND_STORE_URI=uri)
    db = sqlite_path(uri)
    cwd = db.resolve().parent if db is not None else project_root()
    return cmd, env, cwd


def main(argv: list[str] | None = None) -> int:
    """``bars ui [--port 5000] [--host 127.0.0.1] [hydra overrides...]``: the MLflow UI over the project's store."""
    parser = argparse.ArgumentParser(prog="bars ui", description=main.__doc__)
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--host", default=LOOPBACK, help="address to listen on (default 127.0.0.1: this machine)")
    parser.add_argument("--print-only", action="store_true", help="print the server command and exit")
    parser.add_argument("overrides", nargs="*", help="hydra overrides, e.g. tracking.uri=sqlite:///x.db")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    from bars.config import compose
    from bars.tracking import ensure_store, reconcile, resolve_uri, sqlite_path, sync_spools

    cfg = compose(args.overrides)
    uri = resolve_uri(cfg.tracking.uri)
    if uri.startswith(("http://", "https://")):
        print(f"bars ui: the tracking store is already a server: open {safe_url(uri)}")
        return 0
    cmd, env, cwd = ui_command(uri, args.host, args.port)
    warning = exposure_warning(args.host, "bars ui")
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"bars ui: MLflow over {safe_url(uri)}\n         open http://{args.host}:{args.port}  (Ctrl-C stops it)",
          flush=True)
    if args.print_only:
        print(" ".join(cmd))
        return 0
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    ensure_store(uri)  # created once under its lock, never by the server racing a training run
    with contextlib.suppress(Exception):  # housekeeping: kept records sent, runs of killed processes -> FAILED
        sync_spools(uri, cfg.tracking.get("spool_dir"))
        ended = reconcile(uri, None)
        if ended:
            print(f"bars ui: marked {len(ended)} run(s) of dead processes FAILED", flush=True)
    proc = subprocess.Popen(cmd, env=env, cwd=cwd)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 0


__all__ = ["LOOPBACK", "exposure_warning", "is_loopback", "main", "ui_command"]
