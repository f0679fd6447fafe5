"""Dataset names users type (issue 14): `DATA=criteo` is BARS's Criteo_x1, `avazu` Avazu_x1, `frappe` Frappe_x1,
`movielens` MovielensLatest_x1. An alias composes its target unchanged (same prepared bytes, experiment, study,
presets), `make help` lists it, and a real run records it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from bars.config import CONF_DIR, PROJECT_ROOT, compose, to_container
from bars.data.prepare import NOT_FINGERPRINTED, dataset_aliases

EXPECTED = {"avazu": "avazu_x1", "criteo": "criteo_x1", "frappe": "frappe_x1", "movielens": "movielenslatest_x1"}


def test_the_documented_aliases_exist():
    assert dataset_aliases() == EXPECTED
    assert "alias" in NOT_FINGERPRINTED  # DATA=criteo prepares (and reuses) the criteo_x1 folder


@pytest.mark.parametrize("alias", sorted(EXPECTED))
def test_an_alias_composes_its_target_unchanged(alias):
    target = EXPECTED[alias]
    raw = OmegaConf.load(CONF_DIR / "data" / f"{alias}.yaml")
    assert list(raw.defaults) == [target, "_self_"] and set(raw) == {"defaults", "data"}
    assert to_container(raw.data) == {"alias": alias}  # an alias sets nothing else
    assert target not in dataset_aliases() and (CONF_DIR / "data" / f"{target}.yaml").is_file()
    header = (CONF_DIR / "data" / f"{alias}.yaml").read_text().splitlines()[1]
    assert header.startswith(f"# alias: {alias} -> {target}  (")  # what `make help` prints
    got = to_container(compose([f"data={alias}", "model=dcn"]))
    want = to_container(compose([f"data={target}", "model=dcn"]))
    assert got["data"].pop("alias") == alias and "alias" not in want["data"]
    assert got == want
    with_cli = compose([f"data={alias}", "data.min_count=3", "train.batch_size=512"])
    assert (with_cli.data.min_count, with_cli.train.batch_size) == (3, 512)  # the command line still wins


def test_the_sweep_of_the_issue_composes_with_the_preset():
    """`make sweep MODEL=dcn DATA=criteo` (issue 14) stopped with "Could not find 'data/criteo'"."""
    cfg = compose(["model=dcn", "data=criteo", "preset=bars"])
    assert cfg.sweep.study == "dcn__criteo_x1__bars" and cfg.tracking.experiment == "criteo_x1"
    assert cfg.train.embedding_regularizer == compose(["model=dcn", "data=criteo_x1", "preset=bars"]
                                                      ).train.embedding_regularizer


def test_make_help_lists_the_aliases():
    out = subprocess.run(["make", "-s", "help"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout
    for alias, target in EXPECTED.items():
        assert f"DATA={alias} = DATA={target}" in out
    datasets = next(line for line in out.splitlines() if line.startswith("Datasets (DATA="))
    assert "criteo_x1" in datasets and " criteo " not in f"{datasets} "


def test_a_run_records_the_alias_and_shares_the_target_folder(tmp_path, shared_datasets):
    """A real run with DATA=frappe on the real Frappe_x1 files (valid stands in for train; read through symlinks,
    never copied): tagged data=frappe_x1 + data_alias=frappe, in the frappe_x1 experiment, on the same prepared
    folder as DATA=frappe_x1."""
    from bars.data.prepare import prepare
    from bars.run import train_one

    src = shared_datasets / "frappe_x1" / "derived"
    if not (src / "valid.csv.gz").is_file():
        pytest.skip("Frappe_x1 CSVs not available")
    raw = tmp_path / "raw"
    raw.mkdir()
    for split, name in (("train", "valid"), ("valid", "valid"), ("test", "test")):
        (raw / f"{split}.csv.gz").symlink_to(src / f"{name}.csv.gz")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [f"data.raw_dir={raw}", "data.md5.train=88d51bf2173505436d3a8f78f2a59da8", f"paths.data={tmp_path / 'd'}",
              f"paths.checkpoints={tmp_path / 'ckpt'}", f"tracking.uri={uri}"]
    r = train_one(compose(["data=frappe", "model=lr", "train.max_epochs=1", "train.num_threads=1", *common]),
                  quiet=True)
    run = MlflowClient(tracking_uri=uri).get_run(r.run_id)
    assert run.data.tags["data"] == "frappe_x1" and run.data.tags["data_alias"] == "frappe"
    assert run.data.params["data.alias"] == "frappe"
    assert MlflowClient(tracking_uri=uri).get_experiment(run.info.experiment_id).name == "frappe_x1"
    folder = Path(run.data.tags["data_folder"])
    assert prepare(compose(["data=frappe_x1", *common]), quiet=True) == folder  # reused: same fingerprint
    assert len(list((tmp_path / "d" / "frappe_x1").iterdir())) == 1
