"""Chaos: ``bars prepare``, ``bars train``, ``bars final`` and ``bars leaderboard`` killed with SIGKILL (the
command and every process it started) at seeded random points, then rerun: the rerun succeeds, its outputs are
complete and identical to an uninterrupted run's, no temporary outlives it and no MLflow run stays RUNNING.

Real processes, forked from one command server (``bars.benchmarks.procs``) so that a kill point is a time after
the start of a command that has already imported its libraries, as a job runner sees it. ``BARS_CHAOS_POINTS``
kill points per command (default 2; ``make bench-reliability`` sets more). Kill times are drawn uniformly over
the uninterrupted run's duration with a fixed seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path

import pytest
from _reliability import command_env, tiny_args, tiny_csv
from mlflow.tracking import MlflowClient

from bars.benchmarks.procs import CommandServer

POINTS = int(os.environ.get("BARS_CHAOS_POINTS", "2"))
SEED = 17


class Project:
    def __init__(self, server: CommandServer, root: Path) -> None:
        self.server, self.root = server, root
        root.mkdir(parents=True, exist_ok=True)
        self.csv = tiny_csv(root.parent / "tiny.csv", n=3000)
        (root.parent / "best.overrides").write_text("model.params.dnn_hidden_units=[32]\n")
        self.n = 0

    def argv(self, command: str, *extra: str) -> list[str]:
        if command == "leaderboard":
            return [command, f"paths.root={self.root}", "leaderboard.data=tabular", *extra]
        args = tiny_args(self.root, self.csv, "train.max_epochs=2", "train.max_strikes=5", *extra)
        if command == "final":
            args += [f"final.overrides={self.root.parent / 'best.overrides'}", "final.seeds=2"]
        return [command, *args]

    def start(self, argv: list[str]) -> tuple[int, Path]:
        self.n += 1
        log = self.root.parent / f"cmd{self.n}.log"
        return self.server.start(argv, env=command_env(), cwd=self.root, log=log), log

    def run(self, argv: list[str]) -> float:
        t0 = time.monotonic()
        pid, log = self.start(argv)
        rc = self.server.wait(pid, timeout=600)
        assert rc == 0, log.read_text()[-3000:]
        return time.monotonic() - t0

    def kill_at(self, argv: list[str], after: float, reset=lambda: None) -> int | None:
        """Start, SIGKILL its process group ``after`` seconds later. A command that ended before the kill
        landed (the machine got faster than during the reference run, or this process was not scheduled between
        its last poll and the kill, as on a loaded 2-core CI host) is tried again with half the delay, up to 6
        times (``reset()`` before each try); returns -9 when a kill landed, else the last exit status."""
        rc = None
        for _ in range(6):
            reset()
            pid, log = self.start(argv)
            deadline = time.monotonic() + after
            while time.monotonic() < deadline:
                if (rc := self.server.poll(pid)) is not None:
                    break
                time.sleep(0.02)
            else:
                rc = self.server.kill(pid)
                if rc == -9:
                    return rc
            assert rc == 0, log.read_text()[-3000:]  # ended by itself: it must have succeeded
            after /= 2
        return rc


def _content(p: Path) -> bytes:
    if p.name == "manifest.json":  # all but when it was made and how long it took
        m = json.loads(p.read_text())
        return json.dumps({k: v for k, v in m.items() if k not in ("created", "seconds")}, sort_keys=True).encode()
    return p.read_bytes()


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(_content(p)).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".locks" not in p.parts}


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


def _runs(uri: str, status: str | None = None) -> list:
    client = MlflowClient(tracking_uri=uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, max_results=10_000)
    return [r for r in runs if status is None or r.info.status == status]


def _points(duration: float) -> list[float]:
    rng = random.Random(SEED)
    return [rng.uniform(0.05, 1.0) * duration for _ in range(POINTS)]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    base = tmp_path_factory.mktemp("chaos")
    with CommandServer(stderr=base / "server.err") as srv:
        yield Project(srv, base / "project")


def _metrics(run) -> dict[str, float]:
    return {k: v for k, v in run.data.metrics.items() if k.startswith(("val_", "test_"))}


def _no_leftovers(project: Project, uri: str) -> None:
    assert not _temps(project.root), _temps(project.root)
    assert not _runs(uri, "RUNNING"), "a run was left RUNNING"


def test_prepare_killed_then_rerun(project):
    t = project.run(project.argv("prepare"))
    data = project.root / "data"
    want = _digests(data)
    killed = []
    for at in _points(t):
        killed.append(project.kill_at(project.argv("prepare"), at, reset=lambda: shutil.rmtree(data, ignore_errors=True)))
        project.run(project.argv("prepare"))
        assert _digests(data) == want and not _temps(data)
    assert -9 in killed, killed  # at least one kill landed while it ran


def test_train_killed_then_rerun(project):
    uri = f"sqlite:///{project.root / 'mlflow.db'}"
    argv = project.argv("train", "tracking.experiment=chaos-train")
    t = project.run(argv)
    (ref,) = _runs(uri, "FINISHED")
    killed = []
    for at in _points(t):
        killed.append(project.kill_at(argv, at))
        project.run(argv)
        latest = max(_runs(uri, "FINISHED"), key=lambda r: r.info.start_time)
        assert _metrics(latest) == _metrics(ref)
        _no_leftovers(project, uri)
    assert -9 in killed, killed


def _final_runs(uri: str) -> dict[int, list]:
    out: dict[int, list] = {}
    for r in _runs(uri, "FINISHED"):
        if r.data.tags.get("stage") == "final":
            out.setdefault(int(r.data.params.get("seed", r.data.tags.get("seed", -1))), []).append(r)
    return out


@pytest.mark.slow  # two seeds per kill point: ~2 min
def test_final_killed_then_rerun(project):
    ref_uri = f"sqlite:///{project.root / 'mlflow.db'}"
    t = project.run(project.argv("final"))
    ref = {s: _metrics(rs[0]) for s, rs in _final_runs(ref_uri).items()}
    assert len(ref) == 2
    for i, at in enumerate(_points(t)):
        uri = f"sqlite:///{project.root / f'final{i}.db'}"
        argv = project.argv("final", f"tracking.uri={uri}")
        project.kill_at(argv, at)
        project.run(argv)
        got = _final_runs(uri)
        assert {s: [_metrics(r) for r in rs] for s, rs in got.items()} == {s: [m] for s, m in ref.items()}
        _no_leftovers(project, uri)


def test_leaderboard_killed_then_rerun(project):
    if not _final_runs(f"sqlite:///{project.root / 'mlflow.db'}"):
        project.run(project.argv("final"))
    results = project.root / "results"
    t = project.run(project.argv("leaderboard"))
    want = _digests(results)
    assert any(name.endswith(".md") for name in want)
    for at in _points(t):
        project.kill_at(project.argv("leaderboard"), at, reset=lambda: shutil.rmtree(results, ignore_errors=True))
        project.run(project.argv("leaderboard"))
        assert _digests(results) == want and not _temps(results)
