"""bars.validate knows the scale keys: ``loader.*`` (bars.data.stream), ``sweep.workers`` (auto or >= 0),
``sweep.devices``, ``sweep.workers_per_gpu``, the launcher-set ``sweep.worker_device``/``sweep.device_workers``
(bars.placement) and ``data.alias`` (DATA=criteo -> criteo_x1): their defaults and good values pass, a bad value
is a problem naming its key, before anything is created."""

from __future__ import annotations

import pytest

from bars.config import compose
from bars.placement import visible_gpus
from bars.validate import ConfigError, problems, validate

BASE = ["model=dcn", "data=movielens_small", "tracking.enabled=false"]


@pytest.mark.parametrize("extra", [
    [], ["sweep.workers=auto"], ["sweep.workers=0"], ["sweep.workers=3", "sweep.devices=cpu"],
    ["sweep.devices=auto", "sweep.workers_per_gpu=4"], ["loader.mode=stream", "loader.memory_fraction=1",
                                                        "loader.buffer_rows=1", "loader.prefetch=1"],
    ["loader.mode=memory"], ["sweep.worker_device=cuda:0", "sweep.device_workers=2"],
    ["sweep.role=worker", "sweep.devices=[0]"],  # a worker does not place: its launcher did
])
def test_good_scale_values_pass(extra):
    validate(compose([*BASE, *extra]), "sweep")
    validate(compose([*BASE, *extra]), "train")


def test_an_alias_passes_on_its_target():
    cfg = compose(["model=lr", "data=frappe", "tracking.enabled=false"])
    assert cfg.data.alias == "frappe" and cfg.data.name == "frappe_x1"
    assert not [p for p in problems(cfg, "train") if "alias" in p]


@pytest.mark.parametrize(("extra", "key"), [
    (["loader.mode=fast"], "loader.mode"),
    (["loader.memory_fraction=0"], "loader.memory_fraction"),
    (["loader.memory_fraction=1.5"], "loader.memory_fraction"),
    (["loader.buffer_rows=0"], "loader.buffer_rows"),
    (["loader.prefetch=true"], "loader.prefetch"),
    (["+loader.rows=5"], "loader: unknown keys ['rows']"),
    (["+data.alias=criteo"], "data.alias='criteo'"),  # criteo is an alias of criteo_x1, not movielens_small
    (["sweep.workers=many"], "sweep.workers"),
    (["sweep.workers=-1"], "sweep.workers"),
    (["sweep.workers_per_gpu=0"], "sweep.workers_per_gpu"),
    (["sweep.devices=[]"], "sweep.devices"),
    (["sweep.devices=[-1]"], "sweep.devices"),
    (["sweep.devices=1.5"], "sweep.devices"),
    (["sweep.worker_device=gpu7"], "sweep.worker_device"),
    (["sweep.device_workers=0"], "sweep.device_workers"),
])
def test_bad_scale_values_are_named(extra, key):
    cfg = compose([*BASE, *extra])
    command = "sweep" if key.startswith("sweep") else "train"
    with pytest.raises(ConfigError) as e:
        validate(cfg, command)
    assert any(key in p for p in e.value.problems), e.value.problems


def test_a_launcher_placement_that_cannot_be_met_is_a_problem():
    n = len(visible_gpus())
    cfg = compose([*BASE, f"sweep.devices=[{n}]"])  # one past the visible GPUs (0 on a machine without)
    with pytest.raises(ConfigError, match="sweep.devices: GPU .* is not visible"):
        validate(cfg, "sweep")
    if n:
        cfg = compose([*BASE, f"sweep.workers={2 * n + 1}", "sweep.workers_per_gpu=2"])
        with pytest.raises(ConfigError, match="does not fit"):
            validate(cfg, "sweep")
