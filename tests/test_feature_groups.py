"""Feature groups in the data layer: data.groups is checked against the dataset's fields before anything is written
(errors name the key), written into feature_spec.json and fingerprinted; a config without groups keeps the bytes
and fingerprint it had before groups existed; the shipped configs declare BARS's groupings; models that need
groups stop with a clear error on a spec without them."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from bars.config import CONF_DIR, compose
from bars.data.errors import DataError
from bars.data.prepare import dataset_fingerprint, load_recipe, prepare
from bars.data.spec import Feature, FeatureSpec, SpecError, assign_groups
from bars.models import ModelConfigError, build

FIELDS = ["user", "movie", "genres", "year", "hour", "weekday"]


def test_assign_groups_checks_names_and_membership():
    assert assign_groups(FIELDS, None) == {} and assign_groups(FIELDS, {}) == {}
    got = assign_groups(FIELDS, {"user": ["user"], "item": ["movie", "year"]})
    assert got == {"user": "user", "movie": "item", "year": "item"}
    for groups, msg in [
        ({"session": ["user"]}, r"data.groups.session: unknown group 'session'; groups are \['user', 'item', 'context'\]"),
        ({"user": ["userId"]}, r"data.groups.user: unknown fields \['userId'\]; the dataset's fields are"),
        ({"user": ["user"], "item": ["user"]}, r"data.groups.item: field 'user' is already in group 'user'"),
        ({"user": "user"}, r"data.groups.user: expected a non-empty list of field names"),
        ({"user": []}, r"data.groups.user: expected a non-empty list"),
        (["user"], r"data.groups: expected a mapping"),
    ]:
        with pytest.raises(SpecError, match=msg):
            assign_groups(FIELDS, groups)


def test_spec_json_round_trip_and_no_group_key_without_groups():
    grouped = FeatureSpec("d", "y", (Feature("a", "categorical", vocab_size=3, group="user"),
                                     Feature("b", "numeric")))
    d = grouped.to_dict()
    assert d["features"][0]["group"] == "user" and "group" not in d["features"][1]
    assert FeatureSpec.from_dict(d) == grouped and grouped.groups == {"user": ["a"]}
    with pytest.raises(SpecError, match="group 'session' is not one of"):
        Feature("a", "categorical", vocab_size=3, group="session")
    bad = json.loads(json.dumps(d))
    bad["features"][0]["group"] = "nope"
    with pytest.raises(SpecError, match="group 'nope'"):
        FeatureSpec.from_dict(bad)


def test_prepared_spec_carries_the_groups(movielens_folder):
    spec = FeatureSpec.load(movielens_folder / "feature_spec.json")
    assert spec.groups == {"user": ["user"], "item": ["movie", "genres", "year"], "context": ["hour", "weekday"]}
    assert movielens_folder.name == "055ce217bb70"  # data.groups (and data.missing: oov) are fingerprinted


def test_without_groups_the_bytes_and_fingerprint_are_those_before_groups(data_cfg):
    # the committed leaderboard's data: no groups, missing values as padding (before data.missing existed)
    cfg = data_cfg("data=movielens_small", "~data.groups", "data.missing=padding")
    assert dataset_fingerprint(load_recipe(cfg)) == "2753b6e75517"
    assert dataset_fingerprint(load_recipe(data_cfg("data=movielens_small", "data.groups=null",
                                                    "data.missing=padding"))) == "2753b6e75517"
    folder = prepare(cfg, quiet=True)
    text = (folder / "feature_spec.json").read_text()
    assert '"group"' not in text and FeatureSpec.load(folder / "feature_spec.json").groups == {}


def test_bad_groups_stop_prepare_before_anything_is_written(data_cfg, tmp_path):
    cfg = data_cfg("data=movielens_small", "data.groups.item=[movie,title]")
    with pytest.raises(DataError, match=r"data=movielens_small: data.groups.item: unknown fields \['title'\]"):
        prepare(cfg, quiet=True)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("data, groups", [
    ("movielens_small", {"user": ["user"], "item": ["movie", "genres", "year"], "context": ["hour", "weekday"]}),
    # BARS's own groupings: DSSM Frappe_x1 / MovielensLatest_x1, FLEN Avazu_x4_001 dataset_config.yaml
    ("frappe_x1", {"user": ["user", "daytime", "weekday", "isweekend", "homework", "weather", "country", "city"],
                   "item": ["item", "cost"]}),
    ("movielenslatest_x1", {"user": ["user_id"], "item": ["item_id", "tag_id"]}),
    ("avazu_x4_001", {"user": ["C1", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21", "device_id",
                               "device_ip", "device_model", "device_type"],
                      "item": ["app_id", "app_domain", "app_category"],
                      "context": ["hour", "banner_pos", "site_id", "site_domain", "site_category",
                                  "device_conn_type", "weekday", "weekend"]}),
])
def test_shipped_configs_declare_their_groups(data, groups):
    raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / f"{data}.yaml"))
    assert raw["data"]["groups"] == groups
    fields = raw["data"].get("fields")
    if fields:  # every field in exactly one group, as BARS's configs did
        assert sorted(n for names in groups.values() for n in names) == sorted(fields)
    assert compose([f"data={data}"]).data.groups is not None


def test_avazu_groups_fit_the_recipe_fields(shared_datasets):
    cfg = compose(["data=avazu_x4_001", f"data.raw_dir={shared_datasets / 'avazu_head10k' / 'raw'}"])
    recipe = load_recipe(cfg)
    assert all(f.group for f in recipe.fields) and len(recipe.fields) == 24


@pytest.mark.parametrize("model", ["dssm", "flen"])
def test_models_that_need_groups_stop_clearly_without_them(model):
    plain = FeatureSpec("criteo_like", "y", (Feature("a", "categorical", vocab_size=4),
                                             Feature("b", "categorical", vocab_size=4)))
    params = OmegaConf.to_container(compose([f"model={model}"]).model.params, resolve=True)
    with pytest.raises(ModelConfigError, match=f"{model} needs feature groups.*data.groups"):
        build(model, plain, params)


def test_ppnet_needs_groups_only_for_gate_prior_groups():
    plain = FeatureSpec("criteo_like", "y", (Feature("a", "categorical", vocab_size=4),
                                             Feature("b", "categorical", vocab_size=4)))
    params = OmegaConf.to_container(compose(["model=ppnet"]).model.params, resolve=True)
    with pytest.raises(ModelConfigError, match=r"ppnet \(gate_prior_groups\) needs feature groups"):
        build("ppnet", plain, params)
    model = build("ppnet", plain, {**params, "gate_prior_groups": [], "gate_priors": ["b"]})
    assert model.gate_embedding is not None and model.gate_embedding.field_names == ("b",)
