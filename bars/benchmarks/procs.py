"""Real ``bars <command>`` processes started fast: a command server that imports bars once and forks each command.

A chaos test kills commands with SIGKILL at random points and reruns them; a first-use test starts eight at once.
Started as ``python -m bars.cli ...`` each would spend ~4 s of CPU importing torch, MLflow, polars and Optuna
before doing anything. :class:`CommandServer` starts one process (``python -m bars.benchmarks.procs``) that
imports them once, single-threaded, then forks a child per request; the child sets its environment, working
folder and log, and runs ``bars.cli.main(argv)`` exactly as the console script does, in a new session (so a kill
of its process group also stops the processes it starts, such as sweep workers). The children are real,
independent processes: killed with SIGKILL they run no cleanup, like any ``bars`` command killed by a job runner,
the OOM killer or a power cut.

Protocol (JSON lines over the server's stdin/stdout): ``{"op": "start", "argv", "env", "cwd", "log"}`` ->
``{"pid"}``; ``{"op": "poll", "pid"}`` -> ``{"rc"}`` (null while running; ``-signal`` when killed);
``{"op": "wait", "pid"}`` -> ``{"rc"}``; ``{"op": "quit"}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

PRELOAD = ("bars.cli", "bars.run", "bars.train", "bars.models", "bars.tracking", "bars.records", "bars.sweep",
           "bars.study", "bars.final", "bars.leaderboard", "bars.leaderboard_render", "bars.data.prepare",
           "bars.data.engine", "bars.data.loader", "bars.validate", "bars.reproduce",
           "mlflow.store.tracking.sqlalchemy_store", "optuna.storages.journal", "matplotlib.figure")


class CommandServer:
    """``with CommandServer() as srv: pid = srv.start(["train", "model=dcn", ...], env=..., log=...)``."""

    def __init__(self, python: str = sys.executable, stderr: Path | None = None) -> None:
        self._err = open(stderr, "w") if stderr is not None else subprocess.DEVNULL  # noqa: SIM115
        env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([python, "-m", "bars.benchmarks.procs"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._err, text=True, bufsize=1, env=env)
        ready = self._read()
        if ready.get("ready") is not True:
            raise RuntimeError(f"command server did not start: {ready}")
        self.threads_at_fork = int(ready.get("threads", 0))

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"command server exited (status {self.proc.poll()})")
        return json.loads(line)

    def _ask(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def start(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] = ".",
              log: str | os.PathLike[str] = os.devnull) -> int:
        """Fork ``bars <argv...>``; returns its pid. ``env`` is its whole environment (default: this process's)."""
        return int(self._ask(op="start", argv=list(argv), env=dict(os.environ if env is None else env),
                             cwd=str(cwd), log=str(log))["pid"])

    def poll(self, pid: int) -> int | None:
        return self._ask(op="poll", pid=pid)["rc"]

    def wait(self, pid: int, timeout: float | None = None) -> int:
        """The exit status (``-9`` when killed by SIGKILL); with ``timeout``, the process group is killed when it
        runs longer and ``TimeoutError`` raised."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            rc = self.poll(pid)
            if rc is not None:
                return rc
            if deadline is not None and time.monotonic() > deadline:
                self.kill(pid)
                raise TimeoutError(f"bars command (pid {pid}) still running after {timeout} s: killed")
            time.sleep(0.05)

    def kill(self, pid: int) -> int:
        """SIGKILL the command and every process it started (its process group); returns its exit status."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        return int(self._ask(op="wait", pid=pid)["rc"])

    def run(self, argv: Sequence[str], *, timeout: float | None = None, **kw: Any) -> int:
        return self.wait(self.start(argv, **kw), timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self._ask(op="quit")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._err is not subprocess.DEVNULL:
            self._err.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------- the server
def _child(req: dict[str, Any]) -> None:
    """In the forked child: become the command, run it, exit with its status (never returns)."""
    rc = 1
    try:
        os.setsid()
        log = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        os.environ.clear()
        os.environ.update(req["env"])
        os.chdir(req["cwd"])
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if os.environ.get("OMP_NUM_THREADS", "").isdigit():
            import torch

            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        from bars import cli

        sys.argv = ["bars", *req["argv"]]
        try:
            rc = int(cli.main(list(req["argv"])) or 0)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child reports and exits, whatever happened
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(rc)


def _status(code: int) -> int:
    return -os.WTERMSIG(code) if os.WIFSIGNALED(code) else os.WEXITSTATUS(code)


def serve() -> None:
    import importlib

    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in PRELOAD:
        importlib.import_module(name)
    out = sys.stdout
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
    out.write(json.dumps({"ready": True, "threads": threads}) + "\n")
    out.flush()
    done: dict[int, int] = {}
    for line in sys.stdin:
        req = json.loads(line)
        op = req.get("op")
        if op == "quit":
            break
        if op == "start":
            out.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(req)
            reply: dict[str, Any] = {"pid": pid}
        elif op in ("poll", "wait"):
            pid = int(req["pid"])
            if pid not in done:
                try:
                    got, code = os.waitpid(pid, os.WNOHANG if op == "poll" else 0)
                    if got:
                        done[pid] = _status(code)
                except ChildProcessError:
                    done[pid] = -999  # not a child of this server
            reply = {"rc": done.get(pid)}
        else:
            reply = {"error": f"unknown op {op!r}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    serve()
