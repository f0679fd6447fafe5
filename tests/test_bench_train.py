"""`bars bench train`: the Criteo-shape case's tables and the arguments refused before anything runs."""

from __future__ import annotations

import sys

import pytest
import torch

from bars.benchmarks import train as bench


def test_criteo_shape_has_criteo_sized_tables():
    spec = bench.criteo_shape_spec()
    sizes = [f.vocab_size for f in spec.features]
    assert len(sizes) == 39 and all(f.type == "categorical" for f in spec.features)
    assert max(sizes) == 1_000_000
    assert bench.embedding_rows(spec) > 2_000_000  # published Criteo_x1 DCN: ~2.1M embedding rows


@pytest.mark.parametrize("argv, message", [
    (["--criteo-models", "dcn,no_such_model"], "unknown model(s) ['no_such_model']"),
    (["--models", "nope", "--criteo-models", ""], "unknown model(s) ['nope']"),
    (["--frappe-models", "dcn,nada"], "unknown model(s) ['nada']"),
    (["--device", "tpu"], "--device: unknown device 'tpu'"),
])
def test_bad_arguments_are_refused(monkeypatch, capsys, argv, message):
    monkeypatch.setattr(sys, "argv", ["bench-train", *argv])
    assert bench.main() == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_gpu_device_is_refused_without_one(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench-train", "--device", "cuda"])
    assert bench.main() == 2
    assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (scripts/gpu-check runs this)")
def test_step_only_runs_on_cuda():
    spec = bench.criteo_shape_spec()
    from bars.models.registry import build

    model = build("dnn", spec, bench._params("dnn", 10)).cuda()
    split = bench.synthetic_split(spec, 8192, 0)
    assert bench.step_only_per_s(model, split, 4096, 1e-5, iters=2, device=torch.device("cuda")) > 0


def test_breakdown_times_whole_runs_by_phase(capsys):
    """`bars bench train --breakdown` on a small Frappe-shaped set (real recipe, real train_one): a table per
    dataset, tracking off records nothing (no tracking or artifact time), tracking on does; phases are medians
    (their sum need not be the median total), each no larger than it."""
    from bars.benchmarks import fixed_cost

    res = fixed_cost.run(["frappe_size"], epochs=1, repeat=1, threads=1,
                         frappe_rows={"train": 600, "valid": 200, "test": 200})
    off, on = res["frappe_size"]["tracking off"], res["frappe_size"]["tracking on"]
    for b in (off, on):
        assert b["train"] > 0 and b["valid"] > 0 and b["test"] > 0 and b["load"] > 0
        assert all(0 <= v <= b["total"] for v in b.values())
        assert b["fixed"] == pytest.approx(b["total"] - b["train"] - b["valid"])
    assert off.get("tracking", 0.0) == 0 and off.get("artifacts", 0.0) == 0
    assert on["tracking"] > 0 and on["artifacts"] > 0
    out = capsys.readouterr().out
    assert "frappe_size: DCN, 1 epoch(s), median of 1 runs" in out and "tracking off   tracking on" in out
