"""bars.grids: grid files (axes, set, product or explicit points), BARS's committed grids, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bars.config import CONF_DIR, PROJECT_ROOT, compose, flatten
from bars.grids import GridError, available, load_grid, parse_grid


def test_product_grid_points_in_axis_order(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text(yaml.safe_dump({"axes": {"a.x": [1, 2], "a.y": [[4, 4], [8]]}, "set": {"a.z": 3}, "points": 4}))
    g = load_grid("dnn", path=p)
    assert g.product and g.size == 4 and g.keys == ["a.x", "a.y"] and g.set == {"a.z": 3}
    assert g.points == [{"a.x": 1, "a.y": [4, 4]}, {"a.x": 1, "a.y": [8]}, {"a.x": 2, "a.y": [4, 4]},
                        {"a.x": 2, "a.y": [8]}]
    assert g.describe()["digest"] == g.digest()


def test_explicit_points():
    g = parse_grid({"axes": {"a": [1, 2], "b": [3, 4]}, "product": False,
                    "point_list": [{"a": 1, "b": 3}, {"a": 2, "b": 4}]}, "x")
    assert not g.product and g.size == 2 and g.points[1] == {"a": 2, "b": 4}


@pytest.mark.parametrize(("doc", "words"), [
    ({"axes": {}}, "axes"),
    ({"axes": {"a": [1, 1]}}, "axes.a lists a value twice"),
    ({"axes": {"a": [1, 2]}, "points": 3}, "points: 3, but the grid has 2"),
    ({"axes": {"a": [1]}, "set": {"a": 2}}, "set.a is also an axis"),
    ({"axes": {"a": [1]}, "bogus": 1}, "unknown top-level keys ['bogus']"),
    ({"axes": {"a": [1, 2]}, "product": False, "point_list": [{"a": 3}]}, "point_list[0].a = 3"),
    ({"axes": {"a": [1, 2]}, "product": False, "point_list": [{"b": 1}]}, "point_list[0] must give a value"),
    ({"axes": {"a": [1, 2]}, "point_list": [{"a": 1}]}, "only for product: false"),
])
def test_bad_grids_name_the_key(doc, words):
    with pytest.raises(GridError, match=None) as e:
        parse_grid(doc, "f.yaml")
    assert words in str(e.value) and "f.yaml" in str(e.value)


def test_missing_grid_is_a_clear_error(tmp_path):
    with pytest.raises(GridError, match="does not exist"):
        load_grid("dnn", path=tmp_path / "nope.yaml")
    with pytest.raises(GridError, match="no BARS grid for model 'no_such_model' on split 'Frappe_x1'"):
        load_grid("no_such_model", split="Frappe_x1")
    with pytest.raises(GridError, match="sweep.grid_split"):
        load_grid("dnn", split=None)


def test_committed_bars_grids_parse_and_map_to_config_keys():
    """Every committed BARS grid parses, states its point count, and walks and sets only keys that exist for its
    model (model.params.* of conf/model/<id>.yaml) and dataset (every other key, in the composed config)."""
    grids = available()
    assert len(grids) >= 150 and {s for s, _ in grids} >= {"frappe_x1", "criteo_x1", "avazu_x1"}
    composed = {}
    for split, model in grids:
        g = load_grid(model, split=split)
        doc = yaml.safe_load(g.path.read_text())
        assert doc["points"] == g.size and doc["bars_expids"] >= g.size and g.size >= 2
        assert g.meta["model"] == model and g.meta["data"] == split
        assert g.product == ("point_list" not in doc)
        params = set(yaml.safe_load((CONF_DIR / "model" / f"{model}.yaml").read_text())["params"])
        if split not in composed:
            composed[split] = flatten(compose(["model=dcn", f"data={split}"]))
        for key in [*g.axes, *g.set]:
            if key.startswith("model.params."):
                assert key.split(".", 2)[2] in params, (g.path, key)
            else:
                flat = composed[split]
                assert key in flat or any(k.startswith(key + ".") for k in flat), (g.path, key)


@pytest.mark.parametrize("model", ["dcn", "finalmlp", "autoint_plus", "widedeep"])
def test_frappe_grids_of_study_models_give_valid_configs_at_every_point(model):
    """The grids the sweep study replays: every point (with the grid's set:) is a valid config (bars.validate)."""
    from bars.grids import apply_grid
    from bars.validate import check_space

    o = [f"model={model}", "data=frappe_x1", "sweep.sampler.name=grid", "sweep.grid=bars"]
    applied = apply_grid(compose(o), o)
    assert applied.grid is not None and applied.cfg.sweep.trials == applied.grid.size
    assert check_space(applied.cfg) == []


def _bars_copy() -> Path | None:
    for cand in (os.environ.get("BARS_REPO"), PROJECT_ROOT.parent / ".mirror" / "reczoo+BARS" / "repo",
                 PROJECT_ROOT.parent.parent / ".mirror" / "reczoo+BARS" / "repo", "/work/.mirror/reczoo+BARS/repo"):
        if cand and Path(cand).exists():
            return Path(cand)
    return None


def test_committed_grids_are_what_the_bars_tuner_configs_give():
    """scripts/bars_grids.py --check against a BARS copy (skipped where there is none: the files are committed)."""
    bars = _bars_copy()
    if bars is None:
        pytest.skip("no copy of the BARS repository here (set BARS_REPO)")
    r = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "bars_grids.py"), "--bars", str(bars),
                        "--check"], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert f"{len(available())} grids checked" in r.stdout and ", 0 problems" in r.stdout
