"""`make sweep` for every shipped model config, for real: one trial of its own search space (conf/search/<id>.yaml),
one epoch, on a small slice of the shipped demo data that suits it (behaviour-sequence models: movielens_seq;
multi-task models: synthetic_funnel; every other model: movielens_small), recorded in MLflow. Slow (every model
config in turn, a few minutes in all): `make test-slow ARGS="-k every_model_config_sweeps"`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bars import sweep as S
from bars.config import CONF_DIR, compose
from bars.models import config_class, model_class

MODEL_CONFIGS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def _data(model_id: str) -> str:
    name = compose([f"model={model_id}"]).model.name
    fields = {f.name for f in dataclasses.fields(config_class(name))}
    if "sequence_fields" in fields:
        return "movielens_seq"
    if getattr(model_class(name), "multi_task", False):
        return "synthetic_funnel"
    return "movielens_small"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("every-model-data")


@pytest.mark.slow
@pytest.mark.parametrize("model_id", MODEL_CONFIGS)
def test_every_model_config_sweeps_one_trial(model_id, data_root, tmp_path):
    from bars.records import get_client

    data = _data(model_id)
    # the shipped funnel is 200k impressions: 300 users x 40 impressions generate the 3,000 rows in a second
    small = ["data.users=300", "data.impressions_per_user=40"] if data == "synthetic_funnel" else []
    ov = [f"model={model_id}", f"data={data}", "data.rows=3000", *small, f"paths.data={data_root}",
          f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"sweep.dir={tmp_path / 'sw'}", "sweep.trials=1",
          "sweep.progress=plain", "sweep.threads=1", "train.max_epochs=1", "train.batch_size=512"]
    summary = S.sweep(compose(ov), ov)
    assert summary["finished"] == 1, (model_id, data, summary)
    client = get_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=100)
    trials = [r for r in runs if r.data.tags.get("stage") == "trial"]
    assert len(trials) == 1 and trials[0].info.status == "FINISHED", (model_id, [r.info.status for r in runs])
    assert trials[0].data.tags.get("model") == model_id
    assert not [r for r in runs if r.info.status == "RUNNING"]
