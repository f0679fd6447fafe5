"""bars.grids: grid files (axes, set, product or explicit points), BARS's committed grids, clear errors."""

from __future__ import annotations

import pytest
import yaml

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


def test_committed_bars_grids_parse():
    """Every committed BARS grid parses and its point count is the one the file states."""
    for split, model in available():
        g = load_grid(model, split=split)
        assert g.size == g.meta.get("points", g.size) or g.size >= 1
