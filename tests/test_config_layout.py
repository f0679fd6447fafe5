"""The config groups hold what they say: conf/data/<d>.yaml has the data keys (what decides the prepared bytes
and where files are), the dataset's protocol (seed, embedding size) and optional per-dataset training defaults
that the command line still overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bars.config import compose
from bars.data.prepare import NOT_FINGERPRINTED
from bars.train import TrainConfig

CONF = Path(__file__).resolve().parents[1] / "conf"
DATA = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))


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
