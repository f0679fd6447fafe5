"""Sweep worker placement (bars.placement, issue 14): one worker per GPU by default, sweep.workers_per_gpu packed,
explicit device lists, CPU fallback, each trial's device recorded. No GPU is needed: the placement is a pure
function of the visible GPU list, which these tests make up; the worker side runs for real with a stand-in
training function that records what it was asked to train on."""

from __future__ import annotations

import sys

import optuna
import pytest
from test_sweep import fake_train, overrides

from bars import placement as PL
from bars import study as ST
from bars import sweep as S
from bars.config import compose

optuna.logging.set_verbosity(optuna.logging.WARNING)


def labels(p: PL.Placement) -> list[str]:
    return [s.label for s in p.slots]


def test_cpu_fallback_without_gpus():
    p = PL.plan("auto", gpus=[], cores=16)
    assert (p.kind, p.workers, p.in_process) == ("cpu", 1, True)
    assert p.slots[0] == PL.Slot(0, "cpu", "cpu", None, 1, None)  # one worker: all cores, nothing hidden
    p = PL.plan(4, gpus=[], cores=16)
    assert (p.kind, p.workers, p.in_process) == ("cpu", 4, False)
    assert {(s.device, s.threads, s.sharing, s.visible) for s in p.slots} == {("cpu", 4, 4, None)}
    assert PL.plan(3, gpus=[], cores=2).slots[0].threads == 1  # never 0 threads
    assert PL.plan(0, gpus=[]).workers == 0  # external workers only


def test_one_worker_per_gpu_by_default():
    p = PL.plan("auto", gpus=["0", "1", "2"], cores=16)
    assert (p.kind, p.workers, p.in_process) == ("gpu", 3, False)
    assert labels(p) == ["cuda:0", "cuda:1", "cuda:2"]
    assert [s.visible for s in p.slots] == ["0", "1", "2"]  # each worker sees its one GPU ...
    assert {s.device for s in p.slots} == {"cuda:0"}  # ... as cuda:0
    assert {(s.sharing, s.threads) for s in p.slots} == {(1, 5)}  # 16 cores // 3 workers
    assert p.describe() == "3 workers (worker processes): cuda:0 x1, cuda:1 x1, cuda:2 x1, 5 CPU threads each"


def test_workers_per_gpu_packs_round_robin():
    p = PL.plan("auto", "auto", 4, gpus=["0", "1"], cores=16)
    assert p.workers == 8 and labels(p) == ["cuda:0", "cuda:1"] * 4  # spread first, then packed
    assert {(s.sharing, s.threads) for s in p.slots} == {(4, 2)}
    p = PL.plan(3, "auto", 4, gpus=["0", "1"], cores=16)  # fewer workers than slots: still spread
    assert labels(p) == ["cuda:0", "cuda:1", "cuda:0"] and [s.sharing for s in p.slots] == [2, 1, 2]
    p = PL.plan(8, "auto", 8, gpus=["0"], cores=16, threads=1)
    assert labels(p) == ["cuda:0"] * 8 and {(s.sharing, s.threads) for s in p.slots} == {(8, 1)}


def test_explicit_device_lists():
    gpus = ["0", "1", "2", "3"]
    assert labels(PL.plan("auto", [1, 3], gpus=gpus)) == ["cuda:1", "cuda:3"]
    assert labels(PL.plan("auto", "cuda:2,cuda:0", gpus=gpus)) == ["cuda:2", "cuda:0"]
    assert labels(PL.plan("auto", "3", 2, gpus=gpus)) == ["cuda:3", "cuda:3"]
    # CUDA_VISIBLE_DEVICES=4,6 in the launcher: visible ids are "4", "6"; indices and ids both work
    assert [s.visible for s in PL.plan("auto", [1], 2, gpus=["4", "6"]).slots] == ["6", "6"]
    assert [s.visible for s in PL.plan("auto", ["6"], 2, gpus=["4", "6"]).slots] == ["6", "6"]
    uuids = ["GPU-aa11", "GPU-bb22"]
    assert [s.visible for s in PL.plan("auto", "GPU-bb22", 2, gpus=uuids).slots] == ["GPU-bb22"] * 2


def test_one_gpu_worker_runs_in_the_launcher_on_the_right_index():
    p = PL.plan("auto", [2], gpus=["0", "1", "2"])
    assert p.in_process and p.slots[0] == PL.Slot(0, "cuda:2", "cuda:2", None, 1, None)
    p = PL.plan(1, "auto", gpus=["5", "7"])  # launcher started with CUDA_VISIBLE_DEVICES=5,7
    assert p.in_process and (p.slots[0].device, p.slots[0].label) == ("cuda:0", "cuda:5")


def test_cpu_on_a_gpu_machine_and_train_device_decides_under_auto():
    p = PL.plan(2, "cpu", gpus=["0", "1"], cores=8)
    assert p.kind == "cpu" and [s.visible for s in p.slots] == ["", ""]  # CPU workers cannot touch the GPUs
    assert PL.plan("auto", gpus=["0", "1"], train_device="cpu").kind == "cpu"
    assert labels(PL.plan("auto", gpus=["0", "1"], train_device="cuda:1")) == ["cuda:1"]
    assert labels(PL.plan("auto", gpus=["0", "1"], train_device="cuda")) == ["cuda:0", "cuda:1"]
    assert labels(PL.plan("auto", [0], gpus=["0", "1"], train_device="cuda:1")) == ["cuda:0"]  # devices win


@pytest.mark.parametrize("kwargs, message", [
    ({"workers": "auto", "devices": [5], "gpus": ["0", "1"]}, r"GPU '5' is not visible; visible GPUs: 0, 1"),
    ({"workers": "auto", "devices": [0], "gpus": []}, r"GPU '0' is not visible; visible GPUs: none"),
    ({"workers": "auto", "devices": [0, 0], "gpus": ["0"]}, r"lists GPU '0' twice; use sweep.workers_per_gpu"),
    ({"workers": 9, "devices": "auto", "workers_per_gpu": 4, "gpus": ["0", "1"]},
     r"sweep.workers=9 does not fit 2 GPU\(s\) x sweep.workers_per_gpu=4 = 8 worker slots"),
    ({"workers": "auto", "workers_per_gpu": 0, "gpus": ["0"]}, r"sweep.workers_per_gpu must be a whole number >= 1"),
    ({"workers": "auto", "workers_per_gpu": 1.5, "gpus": ["0"]}, r"sweep.workers_per_gpu must be a whole number >= 1"),
    ({"workers": "many", "gpus": []}, r"sweep.workers must be auto or a number >= 0, got 'many'"),
    ({"workers": -1, "gpus": []}, r"sweep.workers must be auto or a number >= 0"),
    ({"workers": "auto", "devices": "", "gpus": ["0"]}, r"sweep.devices is empty"),
    ({"workers": "auto", "gpus": [], "train_device": "cuda:0"}, r"train.device=cuda:0 but no CUDA device is visible"),
])
def test_impossible_settings_are_clear_errors(kwargs, message):
    with pytest.raises(PL.PlacementError, match=message):
        PL.plan(**kwargs)


def test_physical_labels_and_worker_env():
    assert PL.physical_label("cuda:0", {"CUDA_VISIBLE_DEVICES": "3"}) == "cuda:3"
    assert PL.physical_label("cuda:1", {"CUDA_VISIBLE_DEVICES": "3,5"}) == "cuda:5"
    assert PL.physical_label("cuda", {"CUDA_VISIBLE_DEVICES": "3,5"}) == "cuda:3"
    assert PL.physical_label("cuda:1", {}) == "cuda:1" and PL.physical_label("cpu", {}) == "cpu"
    slot = PL.plan("auto", "auto", 2, gpus=["0", "1"], cores=8).slots[1]
    env = PL.worker_env(slot, {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1"})
    assert env == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "1", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2",
                   "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    assert "CUDA_VISIBLE_DEVICES" not in PL.worker_env(PL.plan(2, gpus=[]).slots[0], {})


def test_this_machine_sees_its_real_gpus():
    import torch

    gpus = PL.visible_gpus()
    assert len(gpus) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert PL.visible_gpus({"CUDA_VISIBLE_DEVICES": "0"}) == ([] if not gpus else ["0"])


def test_worker_commands_for_packed_gpus(tmp_path):
    """The launcher's worker command lines for 2 GPUs x 2 (what `spawn_workers` starts; the GPUs are made up)."""
    cfg = compose(overrides(tmp_path, "sweep.workers_per_gpu=2"))
    plan = S.placement_of(cfg, gpus=["0", "1"])
    assert plan.workers == 4
    cli = ["model=dcn", "sweep.workers_per_gpu=2", "sweep.worker_device=cpu", "sweep.storage=x"]
    cmds = [S.worker_command(cli, "journal:///a/b.journal", s.index, s.threads, s) for s in plan.slots]
    for i, cmd in enumerate(cmds):
        assert cmd[:4] == [sys.executable, "-m", "bars.cli", "sweep"]
        assert f"sweep.worker_index={i}" in cmd and "sweep.worker_device=cuda:0" in cmd
        assert "sweep.device_workers=2" in cmd and "sweep.worker_device=cpu" not in cmd
    cfg = compose([*overrides(tmp_path), "sweep.devices=[3]"])
    with pytest.raises(PL.PlacementError, match="GPU '3' is not visible"):
        S.placement_of(cfg, gpus=["0"])


def test_packed_workers_get_their_gpu_and_secrets_in_the_environment(tmp_path):
    """Placement and main's secret handling together: a worker's command line carries its slot but no URL with a
    password; the storage and tracking URLs reach it in BARS_SWEEP_STORAGE / MLFLOW_TRACKING_URI, its GPU in
    CUDA_VISIBLE_DEVICES."""
    cfg = compose(overrides(tmp_path, "sweep.workers_per_gpu=2"))
    plan = S.placement_of(cfg, gpus=["0", "1"])
    url = "postgresql://bars:s3cret@db/bars"
    cli = ["model=dcn", f"sweep.storage={url}", "tracking.uri=http://u:s3cret@mlflow:5000"]
    for slot in plan.slots:
        cmd = S.worker_command(cli, url, slot.index, slot.threads, slot)
        assert not [a for a in cmd if "s3cret" in a], cmd
        assert "sweep.worker_device=cuda:0" in cmd and "sweep.device_workers=2" in cmd
        env = {**PL.worker_env(slot, {}), **S.worker_secrets(cli, url)}
        assert env["CUDA_VISIBLE_DEVICES"] == ["0", "1"][slot.index % 2]
        assert env["BARS_SWEEP_STORAGE"] == url and env["MLFLOW_TRACKING_URI"] == "http://u:s3cret@mlflow:5000"


def test_a_launcher_with_impossible_devices_creates_nothing(tmp_path):
    ov = overrides(tmp_path, "sweep.trials=2", "sweep.devices=[0]")  # no GPU on this machine
    from bars.validate import ConfigError  # bars.validate runs the placement before anything is created

    with pytest.raises(ConfigError, match=r"sweep.devices: GPU '0' is not visible"):
        S.sweep(compose(ov), ov, train_fn=fake_train)
    assert not (tmp_path / "sw").exists()


def test_the_worker_trains_on_its_device_and_records_it(tmp_path, monkeypatch):
    """A worker started for slot cuda:0 with CUDA_VISIBLE_DEVICES=3 (two workers on that GPU): every trial's
    config says train.device=cuda:0, and its tags/attributes name cuda:3, the worker and the sharing."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    seen = []

    def recording_train(cfg, *, extra_tags=None, **kw):
        seen.append((str(cfg.train.device), dict(extra_tags)))
        return fake_train(cfg, extra_tags=extra_tags, **kw)

    ov = overrides(tmp_path, "sweep.trials=2", "sweep.role=worker", "sweep.worker_index=1",
                   "sweep.worker_device=cuda:0", "sweep.device_workers=2")
    launcher = overrides(tmp_path, "sweep.trials=2", "sweep.workers=0")
    S.sweep(compose(launcher), launcher, train_fn=fake_train)  # creates the study, no local workers
    S.sweep(compose(ov), ov, train_fn=recording_train)
    assert len(seen) == 2
    for device, tags in seen:
        assert device == "cuda:0"
        assert (tags["sweep_device"], tags["sweep_worker"], tags["sweep_device_workers"]) == ("cuda:3", "1", "2")
    cfg = compose(ov)
    study = ST.load_study(cfg, ST.open_storage(ST.storage_url(cfg), cfg), 0)
    assert {t.user_attrs.get("device") for t in study.get_trials()} == {"cuda:3"}


def test_the_cpu_launcher_records_cpu(tmp_path):
    seen = []

    def recording_train(cfg, *, extra_tags=None, **kw):
        seen.append((str(cfg.train.device), dict(extra_tags)))
        return fake_train(cfg, extra_tags=extra_tags, **kw)

    ov = overrides(tmp_path, "sweep.trials=1")
    summary = S.sweep(compose(ov), ov, train_fn=recording_train)
    assert summary["workers"] == 1 and summary["devices"] == ["cpu"]
    assert seen == [("cpu", {**seen[0][1], "sweep_worker": "0", "sweep_device": "cpu", "sweep_device_workers": "1"})]
