"""`bars compress` (atomic feature mimicking): the rank-k pair reproduces the projection of a Linear's outputs onto
their top-k principal directions (exact when the outputs span k dimensions), ranks and ratios give the parameter
counts they promise, layers a model reads directly are kept, a compressed checkpoint loads back, and a real
recorded movielens_small run compresses end to end into an MLflow child run that the leaderboard shows beside its
source row."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from bars import leaderboard
from bars.compress import (
    CompressError,
    allocate_ranks,
    compress_model,
    compress_run,
    dense_parameters,
    factorized_params,
    layer_rank,
    load_compressed,
    mimic,
    output_statistics,
    parse_rank,
)
from bars.config import PROJECT_ROOT, compose, to_container
from bars.recorded import RecordedRunError
from bars.records import load_runs

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class Tower(nn.Module):
    """A batch dict -> logit model: Linear 12 -> 40 (its outputs span 3 dimensions), ReLU, Linear 40 -> 30, 30 -> 1."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(12, 40)
        self.b = nn.Linear(40, 30)
        self.out = nn.Linear(30, 1)
        with torch.no_grad():
            self.a.weight.copy_(torch.randn(40, 3) @ torch.randn(3, 12))

    def forward(self, batch):
        return self.out(torch.relu(self.b(torch.relu(self.a(batch["x"]))))).squeeze(-1)


def _batches(n=4, rows=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"x": torch.randn(rows, 12, generator=g)} for _ in range(n)]


def test_outputs_spanning_k_dimensions_are_reproduced_exactly_at_rank_k():
    torch.manual_seed(0)
    model = Tower().eval()
    xs = _batches()
    want = torch.cat([model.a(b["x"]) for b in xs])
    mu, cov = output_statistics(model, model.a, xs)
    pair = mimic(model.a, mu, cov, 3)
    torch.testing.assert_close(torch.cat([pair(b["x"]) for b in xs]), want, rtol=1e-4, atol=1e-4)
    assert pair[0].weight.shape == (3, 12) and pair[1].weight.shape == (40, 3)
    worse = mimic(model.a, mu, cov, 2)  # one direction fewer: no longer exact
    assert float((torch.cat([worse(b["x"]) for b in xs]) - want).detach().abs().max()) > 1e-2


def test_the_pair_is_the_projection_of_the_outputs_on_their_principal_directions():
    torch.manual_seed(1)
    layer = nn.Linear(10, 8).double()
    xs = [{"x": torch.randn(500, 10, dtype=torch.float64)}]
    model = nn.Module()
    model.forward = lambda b: layer(b["x"])  # type: ignore[method-assign]
    mu, cov = output_statistics(model, layer, xs)
    y = layer(xs[0]["x"]).detach()
    torch.testing.assert_close(mu, y.mean(0))
    torch.testing.assert_close(cov, torch.cov(y.T, correction=0))
    u = torch.linalg.eigh(cov).eigenvectors[:, -4:]
    pair = mimic(layer, mu, cov, 4)
    torch.testing.assert_close(pair(xs[0]["x"]), (y - mu) @ u @ u.T + mu)


def test_ranks_and_ratios_give_the_parameter_counts_they_promise():
    big, head = nn.Linear(400, 400), nn.Linear(400, 1)
    assert layer_rank(big, 64, None) == 64 and layer_rank(big, 1000, None) is None  # no saving at full rank
    assert layer_rank(head, 8, None) is None and layer_rank(head, None, 3.0) is None  # one output: nothing to gain
    for ratio in (1.5, 3.0, 10.0):
        k = layer_rank(big, None, ratio)
        assert factorized_params(400, 400, k) <= (400 * 400 + 400) / ratio < factorized_params(400, 400, k + 1)


@pytest.mark.parametrize("ratio", [2.0, 3.0])
def test_a_ratio_is_one_budget_spent_where_the_variance_is(ratio):
    torch.manual_seed(2)
    model = Tower().eval()
    xs = _batches()
    a_before = torch.cat([model.a(b["x"]) for b in xs]).detach()
    dense = dense_parameters(model)
    result = compress_model(model, xs, ratio=ratio)
    assert set(result.ranks) == {"a", "b"} and isinstance(model.a, nn.Sequential) and isinstance(model.out, nn.Linear)
    assert dense_parameters(model) <= dense / ratio
    assert [r.note for r in result.layers if r.name == "out"] == ["no saving at this rank"]
    # a's outputs span 3 dimensions: it gets exactly 3 (a fourth direction holds no variance), and is still exact
    assert result.ranks["a"] == 3 and next(r for r in result.layers if r.name == "a").kept_variance > 0.999999
    torch.testing.assert_close(torch.cat([model.a(b["x"]) for b in xs]), a_before, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(torch.cat([model(b) for b in xs])).all()


def test_allocation_gives_the_next_rank_to_the_most_variance_per_parameter():
    layers = {"wide": nn.Linear(100, 100), "narrow": nn.Linear(10, 10)}
    ev = {"wide": torch.tensor([10.0] + [1.0] * 99), "narrow": torch.tensor([5.0, 4.0, 1.0] + [0.0] * 7)}
    ranks = allocate_ranks(layers, ev, budget=factorized_params(100, 100, 5) + factorized_params(10, 10, 3))
    # narrow's 2nd and 3rd directions hold 0.4 and 0.1 of its variance for 21 parameters each: they go first
    assert ranks == {"wide": 5, "narrow": 3}
    with pytest.raises(CompressError, match="does not fit even rank 1"):
        allocate_ranks(layers, ev, budget=100)


def test_an_unreachable_ratio_is_an_error():
    torch.manual_seed(2)
    with pytest.raises(CompressError, match="cannot become 50x fewer"):
        compress_model(Tower().eval(), _batches(), ratio=50.0)


def test_a_layer_the_model_reads_directly_is_kept():
    class ReadsWeight(Tower):
        def forward(self, batch):
            h = torch.relu(self.a(batch["x"]))
            return (h @ self.b.weight.T).sum(-1)

    torch.manual_seed(3)
    model = ReadsWeight().eval()
    result = compress_model(model, _batches(), rank=2)
    assert "b" not in result.ranks and isinstance(model.b, nn.Linear)
    assert next(r for r in result.layers if r.name == "b").note.startswith("kept: the model uses the layer directly")
    assert result.ranks == {"a": 2}


@pytest.mark.parametrize(("args", "message"), [
    ({"rank": "4", "ratio": "3"}, "not both"),
    ({"rank": "x"}, "rank must be a positive integer, got 'x'"),
    ({"rank": "0"}, "rank must be a positive integer"),
    ({"ratio": "1"}, "ratio must be a number > 1"),
    ({"ratio": "three"}, "ratio must be a number > 1"),
    ({"rows": "-5"}, "rows must be a positive integer"),
])
def test_bad_options_are_clear_errors(args, message):
    with pytest.raises(CompressError, match=message):
        parse_rank(**args)
    assert parse_rank() == (None, 3.0, 50_000) and parse_rank(rank="7") == (7, None, 50_000)


def test_a_recorded_run_compresses_into_a_child_run_beside_its_source_row(trained_run):
    cfg = compose(trained_run["overrides"])
    r = compress_run(trained_run["run_id"], cfg, rank=8, rows=20_000, say=lambda *_: None)
    # DCN [64, 64]: the two hidden Linears are factorised at rank 8, the output Linear (1 unit) is kept
    assert r.label == "rank=8" and sorted(x.rank for x in r.layers if x.rank) == [8, 8]
    assert r.after["dense_params"] < r.before["dense_params"] and r.after["model_bytes"] < r.before["model_bytes"]
    assert abs(r.after["test_auc"] - r.before["test_auc"]) < 0.02 and r.after["latency_ms"] > 0
    assert r.before["test_auc"] == pytest.approx(trained_run["result"].metrics["test_auc"], abs=1e-6)
    client = MlflowClient(tracking_uri=trained_run["uri"])
    child = client.get_run(r.child_run_id)
    assert child.data.tags["mlflow.parentRunId"] == trained_run["run_id"]
    assert child.data.tags["stage"] == "compress" and child.data.tags["compression"] == "rank=8"
    m = child.data.metrics
    for key in ("dense_params", "model_bytes", "latency_ms", "test_auc", "test_logloss", "valid_auc"):
        assert f"{key}_before" in m and f"{key}_after" in m, key
    assert m["test_auc"] == m["test_auc_after"] == pytest.approx(r.after["test_auc"])
    assert m["dense_params_ratio"] == pytest.approx(r.before["dense_params"] / r.after["dense_params"])
    assert "compress/layers.json" in {a.path for a in client.list_artifacts(r.child_run_id, "compress")}
    # the saved weights rebuild the compressed model from the run's config
    from bars.models import build
    from bars.recorded import load_recorded_run
    from bars.train import evaluate
    rec = load_recorded_run(trained_run["run_id"], cfg)
    model = load_compressed(build(str(rec.cfg.model.name), rec.spec, to_container(rec.cfg.model.params)), r.checkpoint)
    from bars.data.loader import load_dataset
    test = load_dataset(rec.folder, splits=("test",)).splits["test"]
    assert evaluate(model, test)["auc"] == pytest.approx(r.after["test_auc"], abs=1e-9)
    # the leaderboard: the source final run's row and the compressed row beside it
    boards = leaderboard.build(load_runs(trained_run["uri"]))
    rows = {row.model: row for row in boards["movielens_small"].rows}
    assert {"dcn", "dcn [compressed rank=8]"} <= set(rows)
    assert rows["dcn [compressed rank=8]"].test_auc_mean == pytest.approx(r.after["test_auc"])
    assert rows["dcn [compressed rank=8]"].bars_auc is None


def test_bad_run_and_rank_are_clear_errors(trained_run):
    cfg = compose(trained_run["overrides"])
    with pytest.raises(RecordedRunError):
        compress_run("0" * 32, cfg, rank=4, say=lambda *_: None)
    with pytest.raises(CompressError, match="no Linear of model dcn gets fewer parameters"):
        compress_run(trained_run["run_id"], cfg, rank=10_000, rows=2000, track=False, say=lambda *_: None)


def test_cli_usage_and_errors(trained_run):
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    usage = subprocess.run([sys.executable, "-m", "bars.cli", "compress"], check=False, capture_output=True,
                           text=True, env=env)
    assert usage.returncode == 2 and "make compress RUN=<id>" in usage.stderr
    bad = subprocess.run([sys.executable, "-m", "bars.cli", "compress", f"run_id={trained_run['run_id']}", "rank=x",
                          *trained_run["overrides"]], check=False, capture_output=True, text=True,
                         cwd=PROJECT_ROOT, env=env)
    assert bad.returncode == 1 and "rank must be a positive integer, got 'x'" in bad.stderr, bad.stderr
