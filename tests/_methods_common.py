"""What the method tests (tests/test_methods*.py) share: small backbones and the config of a fast method run on
6,000 movielens_small rows, one thread, with its own data, checkpoint, results and MLflow folders under ``root``."""

from __future__ import annotations

from pathlib import Path

from bars.config import compose

# the backbones every method is tested over, made small (FM has no hidden layers)
SMALL = {"deepfm": ["model.params.hidden_units=[16]"], "dcn": ["model.params.dnn_hidden_units=[16]"],
         "ipnn": ["model.params.hidden_units=[16]"], "dnn": ["model.params.hidden_units=[16]"], "fm": []}


def method_cfg(root: Path, model: str, method: list[str], *extra: str, tracked: bool = True):
    """``model`` (small) under ``method`` (``["method=<name>", "method.<key>=<value>", ...]``), then ``extra``."""
    return compose([f"model={model}", "data=movielens_small", "data.rows=6000", *method,
                    "train.max_epochs=1", "train.num_threads=1", "train.device=cpu", "train.batch_size=512",
                    f"paths.data={root / 'data'}", f"paths.checkpoints={root / 'ckpt'}",
                    f"paths.results={root / 'results'}", f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
                    f"tracking.enabled={str(tracked).lower()}", *SMALL[model], *extra])
