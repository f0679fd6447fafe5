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
