"""`bars bench esmm`: a tiny real run scores both models over the entire space and on clicked rows, and the
oracle ceilings it prints are the generator's probabilities (not fitted)."""

from __future__ import annotations

import math

from bars.benchmarks import esmm as bench


def test_tiny_bench_runs_both_models_and_prints_the_ceilings():
    lines: list[str] = []
    r = bench.run(users=60, seeds=[0], epochs=1, tower=(8,), batch=256, lr=1e-3, say=lines.append, items=30,
                  impressions=20)
    assert set(r) == {"esmm_entire", "base_entire", "esmm_clicked", "base_clicked", "esmm_ctr", "esmm_ctcvr"}
    for k, v in r.items():
        assert len(v) == 1 and 0.0 <= v[0] <= 1.0 and not math.isnan(v[0]), (k, v)
    text = "\n".join(lines)
    assert "the generator's conversion probability (the ceiling)" in text and "-price alone" in text
    assert "best epoch ESMM 1 of 1, clicked-only 1 of 1" in text


def test_load_passes_the_funnel_size_on():
    spec, cols, lab = bench.load(users=20, items=15, impressions=10)
    assert int(cols["item"].max()) <= 15 and int(cols["user"].max()) == 20  # index = id + 1
    assert {"would_convert", "convert_probability", "click_probability", "price"} <= set(lab)
    assert spec.labels == ("click", "conversion")
