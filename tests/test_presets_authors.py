"""Authors' presets (conf/presets/authors/<data>/<model id>.yaml, `preset=authors`): a model's published
configuration from its authors' own logs where BARS has none (FCN / ECN: salmon1802/FCN's best Criteo_x4 and
Avazu_x4 runs). The preset mechanism is the BARS presets' (bars.presets: the family is the folder name): each
composes, builds its model and validates its train config; the command line still wins; a split without one is a
clear error; `make final PRESET=authors` and `bars presets plan --preset authors` list them."""

from __future__ import annotations

import subprocess

import pytest
from omegaconf import OmegaConf

from bars import presets as P
from bars.config import PROJECT_ROOT, compose
from bars.models import build, make_config
from bars.train import TrainConfig

AUTHORS = P.available("authors")
# the numbers the authors published (zoo.md section 2.4: their best logs), the runs their paper table reports
EXPECTED = {("criteo_x4_001", "fcn"): 0.816216, ("avazu_x4_001", "fcn"): 0.797029,
            ("criteo_x4_001", "ecn"): 0.815572, ("avazu_x4_001", "ecn"): 0.796564}


def test_the_authors_presets_that_exist():
    assert {(d, m) for _, d, m in AUTHORS} == set(EXPECTED)


@pytest.mark.parametrize(("data", "model"), sorted(EXPECTED))
def test_authors_preset_composes_builds_and_names_its_log(data, model):
    cfg = compose([f"model={model}", f"data={data}", "preset=authors"])
    p = P.load_preset("authors", data, model)
    assert p.source.startswith("salmon1802/FCN:checkpoints/") and p.source.endswith(".log")
    assert p.published["test_auc"] == EXPECTED[(data, model)]
    assert p.bars_split == cfg.data.bars_split  # their Criteo_x4_10_h5 / Avazu_x4_h5 are BARS's x4_001
    assert p.info["checked"]["min_categr_count"] == cfg.data.min_count
    for key, value in p.values.items():
        got = OmegaConf.select(cfg, key)
        assert got == value and type(got) is type(value), key
    assert cfg.seed == 2024 and cfg.model.params.embedding_dim == 16
    params = OmegaConf.to_container(cfg.model.params, resolve=True)
    make_config(str(cfg.model.name), params)
    TrainConfig.from_cfg(OmegaConf.to_container(cfg.train, resolve=True))
    assert P.preset_tags(cfg)["preset_file"] == f"conf/presets/authors/{data}/{model}.yaml"


def test_fcn_avazu_preset_builds_four_heads_with_batch_norm():
    from bars.data.spec import Feature, FeatureSpec
    cfg = compose(["model=fcn", "data=avazu_x4_001", "preset=authors"])
    spec = FeatureSpec(dataset="t", label="y", features=tuple(Feature(f"f{i}", "categorical", vocab_size=5)
                                                               for i in range(24)))
    model = build("fcn", spec, OmegaConf.to_container(cfg.model.params, resolve=True))
    assert model.embedding.weight.shape[1] == 64  # 4 heads x 16
    assert model.ecn.num_layers == 4 and model.lcn.num_layers == 5 and model.ecn.batch_norm is not None


def test_command_line_wins_and_missing_authors_preset_is_a_clear_error():
    cfg = compose(["model=fcn", "data=criteo_x4_001", "preset=authors", "seed=7", "model.params.num_heads=2"])
    assert cfg.seed == 7 and cfg.model.params.num_heads == 2 and cfg.train.batch_size == 4096
    with pytest.raises(P.PresetError, match="authors presets for model fcn: data=avazu_x4_001, criteo_x4_001"):
        compose(["model=fcn", "data=frappe_x1", "preset=authors"])
    with pytest.raises(P.PresetError, match="No authors preset names model dcn"):
        compose(["model=dcn", "data=criteo_x4_001", "preset=authors"])


def test_plan_and_make_select_the_authors_family():
    assert P.plan("authors", "criteo_x4_001") == [
        "make final MODEL=ecn DATA=criteo_x4_001 PRESET=authors SEEDS=1",
        "make final MODEL=fcn DATA=criteo_x4_001 PRESET=authors SEEDS=1"]
    r = subprocess.run(["make", "-s", "-n", "final", "MODEL=fcn", "DATA=avazu_x4_001", "PRESET=authors"],
                       check=False, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "preset=authors" in r.stdout, r.stdout + r.stderr
