"""bench_reference.py's criteo shape for the models that needed a shape of their own there: the feature-group
models (DSSM, FLEN, PPNet: Criteo's anonymous fields split into groups by ``criteo_groups``, numeric fields
included), DLRM (I1-I13 as categorical fields, ``numeric_as_categorical``) and the multi-task models (a second
label). The bench times them only; here the same specs (the embedding tables scaled down) and the same pairing
give equal logits, so the figures it prints compare the same function on both sides."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from bench_reference import (
    NUMERIC_AS_CATEGORICAL,
    batch_of,
    criteo_groups,
    numeric_as_categorical,
    pair,
    spec_of,
    yaml_params,
)
from fuxictr_reference import FRAPPE_THREE_GROUPS, FRAPPE_X1_GROUPS, SECOND_LABEL, with_groups
from fuxictr_zoo import REFERENCES

from bars.train import final_logits

GROUPED = sorted(n for n in REFERENCES if REFERENCES[n].groups is not None)
MULTI_TASK = sorted(n for n in REFERENCES if REFERENCES[n].multi_task)


def _small_criteo(name: str):
    """The bench's criteo spec for ``name`` with every table at most 2,000 rows (the layout, types and groups kept)."""
    spec, dim = spec_of("criteo")
    spec = dataclasses.replace(spec, features=tuple(
        dataclasses.replace(f, vocab_size=min(f.vocab_size, 2_000)) if f.vocab_size else f for f in spec.features))
    if REFERENCES[name].groups is not None:
        spec = with_groups(spec, criteo_groups(REFERENCES[name].groups))
    if name in NUMERIC_AS_CATEGORICAL:
        spec = numeric_as_categorical(spec)
    if REFERENCES[name].multi_task:
        spec = dataclasses.replace(spec, labels=(spec.label, SECOND_LABEL))
    return spec, dim


def test_the_criteo_shape_covers_the_grouped_models_and_dlrm():
    assert set(GROUPED) == {"dssm", "flen", "ppnet"}  # a new grouped model: check criteo_groups suits it
    assert MULTI_TASK  # the multi-task compositions exist (their criteo-shape logits are checked below)
    assert "dlrm" in NUMERIC_AS_CATEGORICAL


def test_criteo_groups():
    numeric = tuple(f"I{i}" for i in range(1, 14))
    three = criteo_groups(FRAPPE_THREE_GROUPS)
    assert three["context"] == numeric and three["user"] == tuple(f"C{i}" for i in range(1, 14))
    two = criteo_groups(FRAPPE_X1_GROUPS)
    assert set(two) == {"user", "item"} and two["user"][:13] == numeric and two["item"] == three["item"]
    spec, _ = spec_of("criteo")  # every field in exactly one group
    for groups in (two, three):
        names = [n for g in groups.values() for n in g]
        assert sorted(names) == sorted(spec.names)
    with pytest.raises(ValueError, match="no criteo-shape grouping"):
        criteo_groups({"user": ("a",), "query": ("b",)})


def test_numeric_as_categorical():
    spec = numeric_as_categorical(spec_of("criteo")[0])
    assert all(f.type == "categorical" for f in spec.features)
    assert [f.vocab_size for f in spec.features[:13]] == [60 + 5 * i for i in range(1, 14)]
    assert spec.features[13:] == spec_of("criteo")[0].features[13:]


@pytest.mark.parametrize("name", [*GROUPED, *sorted(NUMERIC_AS_CATEGORICAL), *MULTI_TASK])
def test_equal_logits_at_the_criteo_shape(name):
    spec, dim = _small_criteo(name)
    _, params = yaml_params(name, dim)
    ours, theirs = pair(name, spec, dim, params, 0.05)
    ours.eval()
    theirs.eval()
    xb, _ = batch_of(spec, 0)
    with torch.no_grad():
        a, b = final_logits(ours(xb)), theirs.logits(xb)
    assert a.shape == b.shape == ((len(xb["C1"]), 2) if name in MULTI_TASK else (len(xb["C1"]),))
    assert float((a - b).abs().max()) <= 1e-5, f"{name}: max |logit diff| {float((a - b).abs().max()):.3g}"


def test_separate_processes_time_each_side_in_a_fresh_process(capsys):
    """``--processes separate``: every repeat of each side is a child process of its own, which reports its
    samples/s and page faults per step; the parent prints them as a ratio, as the shared mode does."""
    from bench_reference import main

    assert main(["--models", "dcn", "--shapes", "frappe", "--repeats", "1", "--steps", "1",
                 "--processes", "separate"]) == 0
    out = capsys.readouterr().out
    assert "each side in fresh processes of its own" in out
    (row,) = [ln.split() for ln in out.splitlines() if ln.startswith("dcn ")]
    bars, theirs, ratio = (float(v.replace(",", "")) for v in row[2:5])
    assert bars > 0 and theirs > 0 and abs(ratio - bars / theirs) < 0.01
    assert row[6] == "/" and float(row[5].replace(",", "")) >= 0 and float(row[7].replace(",", "")) >= 0


def test_a_separate_child_reports_one_side():
    """The child of ``--processes separate`` prints one JSON figure for its side, null where the config does not
    run at the shape (a sequence model at the frappe shape)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    cmd = [sys.executable, str(here / "bench_reference.py"), "--side", "fuxictr", "--shapes", "frappe", "--steps", "1"]
    out = subprocess.run([*cmd, "--models", "dcn"], check=True, capture_output=True, text=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert set(got) == {"rate", "faults"} and got["rate"] > 0
    out = subprocess.run([*cmd, "--models", "din"], check=True, capture_output=True, text=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) is None


def test_the_shared_mode_measures_each_config_in_a_forked_child():
    """Both sides still share one process (the child): the figures are samples/s of each side."""
    from bench_reference import measure_forked

    a, b = measure_forked("dcn", "frappe", 1, 1)
    assert a > 0 and b > 0
    assert measure_forked("din", "frappe", 1, 1) is None  # a sequence model runs at the seq shape only


_CLOCK_CALLS = [0]


def _clock_that_dies_on_its_third_call() -> float:
    """A clock for measure's timed steps that sends SIGKILL to its own process on its third call: bars's timed
    steps read it twice, so the third call is the start of FuxiCTR's."""
    import os
    import signal
    import time

    _CLOCK_CALLS[0] += 1
    if _CLOCK_CALLS[0] == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return time.perf_counter()


def test_a_measurement_killed_by_the_kernel_is_reported_not_fatal():
    """The kernel's OOM killer ends the measuring child with SIGKILL. Here the child's clock sends it when FuxiCTR's
    timed step begins (a real child and a real SIGKILL); the parent names the side that was running."""
    import bench_reference

    with pytest.raises(bench_reference.Killed, match=r"during FuxiCTR's step, was killed by signal 9 \(SIGKILL\): "
                                                        r"out of memory\?"):
        bench_reference.measure_forked("dcn", "frappe", 1, 1, clock=_clock_that_dies_on_its_third_call)
    assert bench_reference.measure_forked("dcn", "frappe", 1, 1)[0] > 0  # the next config runs as usual


def test_main_goes_on_after_a_killed_config(monkeypatch, capsys):
    import bench_reference

    real = bench_reference.measure_forked

    def killed_for_deepfm(cid, *args, **kw):
        if cid == "deepfm":
            raise bench_reference.Killed(bench_reference.killed_message(9, "the process, during bars's step,"))
        return real(cid, *args, **kw)

    monkeypatch.setattr(bench_reference, "measure_forked", killed_for_deepfm)
    assert bench_reference.main(["--models", "deepfm,dcn", "--shapes", "frappe", "--repeats", "1", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "deepfm       frappe  (not measured: the process, during bars's step, was killed by signal 9" in out
    assert any(ln.startswith("dcn ") for ln in out.splitlines())
    assert "(1 measurements); not measured, killed: deepfm@frappe" in out
