"""`bars bench methods`: the plain backbone and each method run for real, tracked in a temporary MLflow store, and
every stage's per-epoch figures are read back from it (bars.benchmarks.methods)."""

from __future__ import annotations

import pytest

from bars.benchmarks import methods as bench


def _table(out: str) -> dict[tuple[str, str], list[str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("run "))
    rows = {}
    for line in lines[start + 1:]:
        if line.startswith("("):
            break
        f = line.split()
        rows[(f[0], f[1])] = f[2:]
    return rows


def test_bench_methods_reads_every_stage_back(tmp_path, capsys):
    tiny = [f"paths.data={tmp_path / 'data'}", "model.params.hidden_units=[16]", "train.batch_size=4096",
            "train.max_epochs=2", "optfs:method.search_epochs=2", "optembed:method.iterations=1",
            "optembed:method.supernet_epochs=1"]
    assert bench.main(["--methods", "optfs,optembed", *tiny]) == 0
    rows = _table(capsys.readouterr().out)
    assert list(rows) == [("plain", "plain"), ("optfs", "search"), ("optfs", "retrain"), ("optembed", "supernet"),
                          ("optembed", "evolution"), ("optembed", "retrain")]
    assert rows[("optfs", "search")][0] == "2"  # its search_epochs: the scoped override reached OptFS only
    assert rows[("optembed", "supernet")][0] == "1"
    for key, f in rows.items():
        epochs, train, rate, valid, rest, fixed, other = f
        if key == ("optembed", "evolution"):  # trains nothing: its seconds in all, over its one generation
            assert (epochs, train, rate, valid, rest, fixed) == ("1", "-", "-", "-", "-", "-") and float(other) > 0
            continue
        assert 1 <= int(epochs) <= 2 and other == "-", key
        assert float(train) > 0 and float(rate.replace(",", "")) > 0 and float(valid) > 0, key
        assert 0 <= float(rest) < float(train) and float(fixed) > 0, key


def test_bench_methods_refuses_unknown_methods_and_counts():
    with pytest.raises(SystemExit):
        bench.main(["--methods", "optfs,nosuch"])
    with pytest.raises(SystemExit):
        bench.main(["--repeats", "0"])
    with pytest.raises(SystemExit):  # an override scoped to a method that does not run
        bench.main(["--methods", "optfs", "dnis:method.min_dims=4"])


def test_default_overrides_set_the_backbones_own_mlp_key():
    assert bench.default_overrides("dnn") == ["train.batch_size=1024", "model.params.hidden_units=[100,100,100]"]
    assert bench.default_overrides("dcn") == ["train.batch_size=1024",
                                              "model.params.dnn_hidden_units=[100,100,100]"]
    assert bench.default_overrides("fm") == ["train.batch_size=1024"]
