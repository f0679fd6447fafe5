"""Security pass, checked: a password in a storage URL never reaches MLflow params, tags, the recorded config or
the command's output; checkpoints load with ``weights_only`` (a pickled object is refused, not executed)."""

from __future__ import annotations

import pytest
import torch
from _reliability import tiny_args, tiny_csv
from mlflow.tracking import MlflowClient

from bars.config import compose
from bars.run import train_one
from bars.train import load_checkpoint


def test_storage_password_never_recorded(tmp_path, capsys):
    root = tmp_path / "project"
    secret = "postgresql://bob:s3cret-pw@127.0.0.1:5432/optuna"
    cfg = compose(tiny_args(root, tiny_csv(tmp_path / "tiny.csv"), f"sweep.storage={secret}"))
    result = train_one(cfg)
    out = capsys.readouterr()
    assert "s3cret-pw" not in out.out + out.err
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    run = client.get_run(result.run_id)
    assert run.data.params and "s3cret-pw" not in repr(run.data.params) + repr(run.data.tags)
    assert "postgresql://bob@127.0.0.1:5432/optuna" in run.data.params.values()  # recorded, without the password
    for art in client.list_artifacts(result.run_id):
        if not art.is_dir:
            text = (tmp_path / "dl").joinpath(art.path)
            client.download_artifacts(result.run_id, art.path, str(tmp_path / "dl"))
            assert b"s3cret-pw" not in text.read_bytes(), art.path


class Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_checkpoints_load_weights_only(tmp_path, capsys):
    model = torch.nn.Linear(2, 1)
    bad = tmp_path / "best.pt"
    torch.save({"weight": model.weight, "bias": model.bias, "x": Payload()}, bad)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        load_checkpoint(torch.nn.Linear(2, 1), bad)
    assert "pickled code ran" not in capsys.readouterr().out
