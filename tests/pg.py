"""A throwaway PostgreSQL server for tests: ``initdb`` into a temp folder, ``pg_ctl start`` on 127.0.0.1 with a
free port, yield a ``postgresql://`` URL, stop and remove everything afterwards.

Use it from a test module with ``from pg import postgres_url  # noqa: F401`` (pytest puts ``tests/`` on
``sys.path``). Needs the PostgreSQL server binaries (Debian: ``apt-get install postgresql``; `.ci/run` installs
them when absent); when they are missing the tests that use the fixture are skipped with that reason. When the
tests run as root, the server runs as the ``postgres`` system user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def find_pg_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: $PG_BIN, then PATH, then /usr/lib/postgresql/<newest>/bin."""
    cands = []
    if os.environ.get("PG_BIN"):
        cands.append(Path(os.environ["PG_BIN"]))
    which = shutil.which("initdb")
    if which:
        cands.append(Path(which).parent)
    cands += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)]
    for c in cands:
        if (c / "initdb").exists() and (c / "pg_ctl").exists():
            return c
    return None


def _version_key(p: str) -> float:
    try:
        return float(Path(p).parent.name)
    except ValueError:
        return 0.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """``with PostgresServer() as url: ...`` — a fresh cluster, trust auth, listening on 127.0.0.1 only."""

    def __init__(self, pg_bin: Path | None = None) -> None:
        self.pg_bin = pg_bin or find_pg_bin()
        if self.pg_bin is None:
            raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.tmp: Path | None = None
        self.port = 0
        self.user: str | None = None

    def _cmd(self, args: list[str]) -> list[str]:
        if self.user:
            return ["runuser", "-u", self.user, "--", *args]
        return args

    def start(self) -> str:
        self.tmp = Path(tempfile.mkdtemp(prefix="bars-pg-"))
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError as e:
                raise RuntimeError("running as root and no 'postgres' system user to run the server") from e
            self.user = "postgres"
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
            os.chmod(self.tmp, 0o700)
        data = self.tmp / "data"
        r = subprocess.run(
            self._cmd([str(self.pg_bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                       "-E", "UTF8", "--no-sync"]),
            capture_output=True, text=True, cwd=self.tmp, check=False,
        )
        if r.returncode:
            raise RuntimeError(f"initdb failed ({r.returncode}): {r.stderr[-2000:]}")
        last_err = ""
        for _ in range(5):  # a port taken between free_port() and listen(): pick another
            self.port = free_port()
            opts = f"-c listen_addresses=127.0.0.1 -c port={self.port} -k {self.tmp} -c fsync=off " \
                   f"-c max_connections=100"
            r = subprocess.run(
                self._cmd([str(self.pg_bin / "pg_ctl"), "-D", str(data), "-o", opts, "-l",
                           str(self.tmp / "server.log"), "-w", "-t", "30", "start"]),
                capture_output=True, text=True, cwd=self.tmp, check=False,
            )
            if r.returncode == 0:
                return self.url
            last_err = r.stderr + _tail(self.tmp / "server.log")
        raise RuntimeError(f"pg_ctl start failed: {last_err[-2000:]}")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        if self.tmp is None:
            return
        data = self.tmp / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run(self._cmd([str(self.pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                                      "stop"]), capture_output=True, text=True, cwd=self.tmp, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None

    def __enter__(self) -> str:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _tail(p: Path, n: int = 2000) -> str:
    try:
        return p.read_text()[-n:]
    except OSError:
        return ""


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A ``postgresql://`` URL of a throwaway server (one per test session/xdist worker), removed at the end."""
    pg_bin = find_pg_bin()
    if pg_bin is None:
        if os.environ.get("BARS_REQUIRE_POSTGRES"):
            pytest.fail("BARS_REQUIRE_POSTGRES is set but no PostgreSQL server binaries were found "
                        "(apt-get install postgresql)")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's `postgresql` "
                    "package (.ci/run does) or set PG_BIN")
    t0 = time.monotonic()
    with PostgresServer(pg_bin) as url:
        print(f"throwaway PostgreSQL at {url} ({time.monotonic() - t0:.1f} s)")
        yield url
