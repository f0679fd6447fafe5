"""The config groups hold what they say: conf/data/<d>.yaml has the data keys (what decides the prepared bytes
and where files are), the dataset's protocol (seed, embedding size) and optional per-dataset training defaults
that the command line still overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bars.config import compose
from bars.data.prepare import NOT_FINGERPRINTED, dataset_aliases
from bars.train import TrainConfig

CONF = Path(__file__).resolve().parents[1] / "conf"
# the dataset configs; the aliases (conf/data/criteo.yaml -> criteo_x1, ...) are checked in tests/test_aliases.py
DATA = sorted(p.stem for p in (CONF / "data").glob("*.yaml") if p.stem not in dataset_aliases())


@pytest.mark.parametrize("name", DATA)
def test_data_config_blocks(name):
    raw = OmegaConf.load(CONF / "data" / f"{name}.yaml")
    assert set(raw) <= {"data", "protocol", "train"} and {"data", "protocol"} <= set(raw)
    assert raw.data.name == name
    assert set(raw.protocol) == {"seed", "embedding_dim"}
    assert set(raw.get("train", {})) <= set(TrainConfig.fields())
    cfg = compose([f"data={name}"])
    assert cfg.seed == raw.protocol.seed and cfg.model.params.embedding_dim == raw.protocol.embedding_dim
    TrainConfig.from_cfg(cfg.train)  # the dataset's training defaults are valid


def test_dataset_training_defaults_and_command_line_precedence():
    x4 = compose(["data=criteo_x4_001"])
    assert x4.train.batch_size == 10000 and dict(x4.train.monitor) == {"val_auc": 1, "val_logloss": -1}
    assert TrainConfig.from_cfg(x4.train).monitor_spec.name == "monitor"
    assert compose(["data=avazu_x4_001"]).train.batch_size == 10000
    cli = compose(["data=criteo_x4_001", "train.batch_size=512", "train.monitor=val_logloss"])
    assert cli.train.batch_size == 512 and cli.train.monitor == "val_logloss"
    x1 = compose(["data=frappe_x1"])
    assert x1.train.batch_size == 4096 and x1.train.monitor == "val_auc"  # conf/train/default.yaml
    assert (x1.seed, x1.model.params.embedding_dim) == (2021, 10) and (x4.seed, x4.protocol.embedding_dim) == (2019, 16)


def test_the_data_layer_names_no_training_or_model_key():
    model_keys = {k for p in (CONF / "model").glob("*.yaml") for k in OmegaConf.load(p).params}
    assert not NOT_FINGERPRINTED & (model_keys | set(TrainConfig.fields()) | {"seed", "embedding_dim"})
    assert "protocol_seed" not in compose([]).data and "embedding_dim" not in compose([]).data


MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


@pytest.mark.parametrize("name", MODELS)
def test_model_config_identity(name):
    """Each model config names its registry key (name), itself (id = file name) and its BARS display name."""
    from bars.models import list_models
    from bars.published import load_published, load_published_seq

    raw = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    assert list(raw)[:3] == ["name", "id", "bars_name"] and set(raw) == {"name", "id", "bars_name", "params"}
    assert raw.id == name and raw.name in list_models()
    published = {m for _, m in load_published()} | {m for _, m in load_published_seq()}
    assert raw.bars_name is None or raw.bars_name in published


def test_a_variant_is_a_config_of_another_model():
    """A variant (e.g. conf/model/crossnet.yaml: name dcn, id crossnet) gets its own study, sweep folder and
    search-space file; the registry key still builds the model. Shown with an id that has no files yet."""
    from bars.search import SearchSpaceError, space_of

    cfg = compose(["model=dcn", "model.id=dcn_variant", "model.bars_name=CrossNet"])
    assert cfg.sweep.study == "dcn_variant__movielens_small"
    assert cfg.sweep.dir.endswith("/sweeps/dcn_variant__movielens_small")
    with pytest.raises(SearchSpaceError, match="conf/search/dcn_variant.yaml does not exist"):
        space_of(cfg)
    crossnet = compose(["model=crossnet"])
    assert crossnet.model.name == "dcn" and crossnet.sweep.study == "crossnet__movielens_small"


@pytest.mark.parametrize("name", DATA)
def test_the_recipe_is_named_by_the_data_config(name):
    from bars.config import to_container
    from bars.data.prepare import recipe_function

    data = to_container(compose([f"data={name}"]).data)
    assert callable(recipe_function(data))
    folder = CONF.parent / "datasets" / name
    assert (folder / "README.md").is_file()
    # datasets/<d>/ holds code only when the config names it: no forwarders
    assert (folder / "prepare.py").is_file() == (data["recipe"] == f"datasets/{name}/prepare.py")


def test_unknown_recipe_is_a_clear_error(data_cfg):
    from bars.data.errors import DataError
    from bars.data.prepare import prepare

    with pytest.raises(DataError, match=r"data.recipe='nope' \(data=movielens_small\): unknown recipe; recipes are "
                                        r"\['criteo'"):
        prepare(data_cfg("data=movielens_small", "data.recipe=nope"), quiet=True)
    with pytest.raises(DataError, match="no such script"):
        prepare(data_cfg("data=movielens_small", "data.recipe=datasets/nope/prepare.py"), quiet=True)
