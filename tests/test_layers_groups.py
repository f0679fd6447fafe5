"""FeatureGroups (per-group views of a field embedding) against explicit loops over fields, and require_groups'
errors for a spec without the groups a model needs."""

from __future__ import annotations

import pytest
import torch

from bars.data.spec import Feature, FeatureSpec
from bars.models import ModelConfigError
from bars.models.layers import FeatureGroups, require_groups


def spec(grouped: bool = True) -> FeatureSpec:
    g = (lambda name: name) if grouped else (lambda name: "")
    return FeatureSpec("t", "y", (
        Feature("u", "categorical", vocab_size=4, group=g("user")),
        Feature("i1", "categorical", vocab_size=4, group=g("item")),
        Feature("c", "numeric", group=g("context")),
        Feature("i2", "categorical", vocab_size=4, group=g("item")),
        Feature("free", "categorical", vocab_size=4),
        Feature("i3", "categorical", vocab_size=4, group=g("item")),
    ))


def test_views_against_loops():
    s = spec()
    names = s.names
    fg = FeatureGroups(s, names)
    emb = torch.randn(3, len(names), 2, dtype=torch.float64)
    assert fg.fields_of("item") == ["i1", "i2", "i3"] and fg.fields_of("user") == ["u"]
    torch.testing.assert_close(fg.select(emb, "item"), emb[:, [1, 3, 5]])
    sums, bi = fg.sums(emb), fg.bi_interaction(emb)
    assert sums.shape == bi.shape == (3, 3, 2)
    for gi, g in enumerate(("user", "item", "context")):
        idx = [k for k, n in enumerate(names) if s[n].group == g]
        torch.testing.assert_close(sums[:, gi], sum(emb[:, k] for k in idx))
        pair = torch.zeros(3, 2, dtype=torch.float64)
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                pair += emb[:, idx[a]] * emb[:, idx[b]]
        torch.testing.assert_close(bi[:, gi], pair)  # zero for one-field groups


def test_subset_order_and_empty_group():
    s = spec()
    fg = FeatureGroups(s, ["i2", "u", "free"], ("user", "item", "context"))  # an embedding of a field subset
    emb = torch.randn(2, 3, 4)
    torch.testing.assert_close(fg.select(emb, "item"), emb[:, [0]])
    torch.testing.assert_close(fg.sums(emb)[:, 2], torch.zeros(2, 4))  # no context field here: zeros
    assert fg.select(emb, "context").shape == (2, 0, 4)
    with pytest.raises(KeyError, match="'nope' is not one of"):
        fg.select(emb, "nope")
    with pytest.raises(ValueError, match="unknown groups"):
        FeatureGroups(s, s.names, ("user", "session"))


def test_require_groups_errors_name_the_data_config_key():
    assert require_groups(spec(), "m", ("user", "item"), nonempty=("user",)) == spec().groups
    with pytest.raises(ModelConfigError) as e:
        require_groups(spec(grouped=False), "dssm", ("user", "item"), nonempty=("user", "item"))
    msg = str(e.value)
    assert "dssm needs feature groups (user, item)" in msg and "data.groups" in msg and "'free'" in msg
    only_user = FeatureSpec("t", "y", (Feature("u", "categorical", vocab_size=3, group="user"),
                                       Feature("x", "categorical", vocab_size=3)))
    with pytest.raises(ModelConfigError, match=r"group\(s\) \['item'\].*add data.groups.item"):
        require_groups(only_user, "dssm", ("user", "item"), nonempty=("user", "item"))
