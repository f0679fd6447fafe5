"""BARS presets for the four sequential boards (TaobaoAd_x1, AmazonElectronics_x1, KuaiVideo_x1, MicroVideo1.7M_x1;
scripts/bars_presets_seq.py): each composes with its data config and builds and runs its model on a tiny spec of
that dataset's layout (pretrained tables, copies and shared tables included); `bars presets plan|show` and the
composed config of `PRESET=bars MODEL=din DATA=amazonelectronics_x1`; the leaderboard shows the published gAUC, AUC
and logloss; the transcription rules on a synthetic README (what they map, what stops them) and the pending models.
A real `bars train` of DIN on AmazonElectronics_x1's layout with the preset (where ../shared has the Amazon sample).
tests/test_presets.py covers the counts, the provenance and `--check` against a real BARS copy for both halves."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import SHARED_DATASETS
from omegaconf import OmegaConf

from bars import presets as P
from bars.config import PROJECT_ROOT, compose
from bars.data.spec import Feature, FeatureSpec, PretrainedRows
from bars.models import build
from bars.train import TrainConfig

SEQ_DATA = ("taobaoad_x1", "amazonelectronics_x1", "kuaivideo_x1", "microvideo_x1")
SEQ_PRESETS = [(d, m) for _, d, m in P.available("bars") if d in SEQ_DATA]
MODELS = ["aoanet", "apg_dcnv2", "autoint_plus", "bst", "dcn", "dcnv2", "deepfm", "dien", "din", "dmin", "dmr", "dnn",
          "fm", "fmfm", "ppnet", "xdeepfm"]


def test_every_sequential_board_has_the_sixteen_published_models():
    for data in SEQ_DATA:
        assert sorted(m for d, m in SEQ_PRESETS if d == data) == MODELS, data


# ------------------------------------------------------------------------------------- builds on the layout
def tiny_spec(data: dict, n_vocab: int = 12) -> FeatureSpec:
    """A spec with the data config's fields and their options (shared tables, padding, max_len, pretrained
    tables with a few rows), as bars.data.prepare would write it for that dataset, at a tiny vocabulary."""
    opts = data.get("field_options") or {}
    rng = np.random.default_rng(0)
    feats, tables = [], {}
    for kind in ("categorical", "numeric", "sequence"):
        for name in data.get(kind) or []:
            o = opts.get(name) or {}
            kw = {}
            if kind == "sequence":
                kw = {"max_len": int(o.get("max_len", data["max_len"])), "padding": o.get("padding", "post")}
            if kind != "numeric":
                kw["vocab_size"] = n_vocab
            if o.get("share_embedding"):
                kw["share_embedding"] = o["share_embedding"]
            if o.get("pretrained"):
                kw.update(pretrained=f"pretrained_{name}.parquet", pretrained_dim=64,
                          freeze_pretrained=bool(o.get("freeze_pretrained", True)))
                tables[name] = PretrainedRows(np.arange(1, n_vocab - 2, dtype=np.int64),
                                              rng.normal(size=(n_vocab - 3, 64)).astype(np.float32))
            feats.append(Feature(name, kind, **kw))
    return FeatureSpec(dataset=data["name"], label=data["label"], features=tuple(feats),
                       meta=tuple(data.get("meta") or []), tables=tables)


def tiny_batch(spec: FeatureSpec, n: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for f in spec.features:
        if f.type == "numeric":
            out[f.name] = torch.randn(n, generator=g)
        elif f.type == "categorical":
            out[f.name] = torch.randint(1, f.vocab_size, (n,), generator=g, dtype=torch.int32)
        else:
            seq = torch.randint(1, f.vocab_size, (n, f.max_len), generator=g, dtype=torch.int32)
            seq[0] = 0  # an empty history
            seq[1, : f.max_len // 2] = 0  # a half-empty one
            out[f.name] = seq
    return out


@pytest.mark.parametrize("data, model", SEQ_PRESETS)
def test_sequential_preset_builds_and_runs_on_its_dataset_layout(data, model):
    cfg = compose([f"model={model}", f"data={data}", "preset=bars"])
    p = P.load_preset("bars", data, model)
    assert cfg.data.protocol_name == "bars-seq" and cfg.data.validation == "test"  # BARS validated on test
    assert cfg.model.params.embedding_dim == cfg.protocol.embedding_dim  # 32 on TaobaoAd_x1, else 64
    monitor = OmegaConf.to_container(cfg.train.monitor) if OmegaConf.is_config(cfg.train.monitor) else cfg.train.monitor
    assert monitor in ("val_gauc", {"val_auc": 1, "val_gauc": 1}), monitor
    assert set(p.published) == {"test_gauc", "test_auc", "test_logloss"}
    TrainConfig.from_cfg(OmegaConf.to_container(cfg.train, resolve=True))
    spec = tiny_spec(OmegaConf.to_container(cfg.data, resolve=True))
    torch.manual_seed(0)
    net = build(str(cfg.model.name), spec, OmegaConf.to_container(cfg.model.params, resolve=True))
    net.eval()
    with torch.no_grad():
        out = net(tiny_batch(spec))
    logits = out if isinstance(out, torch.Tensor) else out["logit"]
    assert logits.shape == (6,) and torch.isfinite(logits).all()


def test_sequence_pairs_are_the_runs_pairs():
    """DIN / BST attend exactly BARS's (target, sequence) pairs: KuaiVideo's two pairs over the id and the
    pretrained twin, MicroVideo's clicked_items (its own pretrained table, no share_embedding) with item_id."""
    kuai = compose(["model=din", "data=kuaivideo_x1", "preset=bars"]).model.params
    assert OmegaConf.to_container(kuai.target_fields) == [["item_id", "item_emb"], ["item_id", "item_emb"]]
    assert OmegaConf.to_container(kuai.sequence_fields) == [["pos_items", "pos_items_emb"],
                                                            ["neg_items", "neg_items_emb"]]
    micro = compose(["model=bst", "data=microvideo_x1", "preset=bars"]).model.params
    assert OmegaConf.to_container(micro.target_fields) == [["item_id", "cate_id"]]
    assert OmegaConf.to_container(micro.sequence_fields) == [["clicked_items", "clicked_categories"]]
    assert micro.seq_pooling == "target" and micro.use_position_emb is False
    taobao = compose(["model=din", "data=taobaoad_x1", "preset=bars"]).model.params
    assert OmegaConf.to_container(taobao.sequence_fields) == [["cate_his", "brand_his", "btag_his"]]


# ----------------------------------------------------------------------------------------- plan and show
def test_din_on_amazonelectronics_composes_plans_and_shows():
    cfg = compose(["model=din", "data=amazonelectronics_x1", "preset=bars"])
    assert cfg.preset == "bars" and cfg.seed == 20222023 and cfg.train.monitor == "val_gauc"
    assert cfg.model.params.activation == "dice" and cfg.model.params.use_softmax is True
    assert list(cfg.model.params.dnn_hidden_units) == [1024, 512, 256] and cfg.train.batch_size == 1024
    assert cfg.train.embedding_regularizer == 0.005 and cfg.train.learning_rate == 0.0005
    lines = P.plan("bars", "amazonelectronics_x1")
    assert len(lines) == 16 and "make final MODEL=din DATA=amazonelectronics_x1 PRESET=bars SEEDS=1" in lines
    r = subprocess.run(["make", "-s", "bars-plan", "DATA=amazonelectronics_x1"], cwd=PROJECT_ROOT,
                       capture_output=True, text=True, check=True)
    assert r.stdout.splitlines() == lines
    r = subprocess.run([sys.executable, "-m", "bars.cli", "presets", "show", "--data", "amazonelectronics_x1",
                        "--model", "din"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert "source: reczoo/BARS:ranking/ctr/DIN/DIN_amazonelectronics_x1/README.md" in r.stdout
    assert "test_gauc 0.883526, test_auc 0.886028, test_logloss 0.43019" in r.stdout
    assert "model.params.target_fields = [['item_id', 'cate_id']]" in r.stdout


# ------------------------------------------------------------------------------------------ leaderboard
def test_leaderboard_shows_the_published_gauc_auc_and_logloss():
    from bars import leaderboard as lb
    from bars import leaderboard_render as render
    from bars.records import RunRecord

    params = {"protocol.seed": "20222023", "seed": "20222023", "data.bars_split": "AmazonElectronics_x1",
              "data.protocol_name": "bars-seq", "model.bars_name": "DNN"}

    def rec(i, model, **tags):
        return RunRecord(run_id=f"r{i}", experiment="amazonelectronics_x1", status="FINISHED", start_time=i,
                         end_time=i + 1, tags={"stage": "final", "model": model, "data": "amazonelectronics_x1",
                                               "seed": "20222023", **tags},
                         params={**params, "model.bars_name": "DIN" if model == "din" else "DNN"},
                         metrics={"test_auc": 0.88, "test_logloss": 0.44, "test_gauc": 0.87})

    din = {"preset": "bars", "preset_file": "conf/presets/bars/amazonelectronics_x1/din.yaml",
           "preset_source": "reczoo/BARS:ranking/ctr/DIN/DIN_amazonelectronics_x1/README.md"}
    boards = lb.build([rec(1, "din", **din), rec(2, "dnn")])
    board = boards["amazonelectronics_x1.bars-seq"]
    rows = {r.model: r for r in board.rows}
    assert set(rows) == {"din [bars]", "dnn"}
    d = rows["din [bars]"]
    assert (d.bars_model, d.bars_gauc, d.bars_auc, d.bars_logloss) == ("DIN", 0.883526, 0.886028, 0.43019)
    assert d.diff_gauc == pytest.approx(0.87 - 0.883526) and d.diff_auc == pytest.approx(0.88 - 0.886028)
    y = rows["dnn"]  # no preset: its bars_name DNN is the board's YoutubeDNN
    assert (y.bars_model, y.bars_gauc, y.bars_auc, y.bars_logloss) == ("YoutubeDNN", 0.878957, 0.881546, 0.44011)
    md = render.render_markdown(board, "test")
    assert "| BARS gAUC | Δ gAUC² | BARS AUC | Δ AUC² | BARS logloss | Δ logloss² |" in md
    assert "0.8835" in md and "-0.0135" in md  # DIN's published gAUC, and the run's minus it
    csv_row = next(r for r in render.render_csv(board).splitlines()[1:] if r.startswith("amazonelectronics_x1,din"))
    assert "0.883526" in csv_row and "0.886028" in csv_row
    # a flat board keeps its columns (no gAUC published there)
    flat = lb.build([RunRecord(run_id="f", experiment="frappe_x1", status="FINISHED", start_time=1, end_time=2,
                               tags={"stage": "final", "model": "dcn", "data": "frappe_x1", "seed": "2021"},
                               params={"protocol.seed": "2021", "seed": "2021", "data.bars_split": "Frappe_x1"},
                               metrics={"test_auc": 0.98, "test_logloss": 0.2})])["frappe_x1"]
    assert flat.rows[0].bars_gauc is None and "BARS gAUC" not in render.render_markdown(flat, "test")


# ------------------------------------------------------------------------------------- the script's rules
def _seq():
    spec = importlib.util.spec_from_file_location("bars_presets_script_seq",
                                                  PROJECT_ROOT / "scripts" / "bars_presets.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod.seq_module()


# the shape of BARS's DIN_amazonelectronics_x1 run config (FuxiCTR 2.0.1 logs every value as a string)
FEATURE_COLS = ("[{'active': True, 'dtype': 'int', 'name': 'user_id', 'remap': False, 'type': 'meta'}, "
                "{'active': True, 'dtype': 'str', 'name': 'item_id', 'type': 'categorical'}, "
                "{'active': True, 'dtype': 'str', 'name': 'cate_id', 'type': 'categorical'}, "
                "{'active': True, 'dtype': 'str', 'feature_encoder': 'layers.MaskedAveragePooling()', 'max_len': 100, "
                "'name': 'item_history', 'share_embedding': 'item_id', 'splitter': '^', 'type': 'sequence'}, "
                "{'active': True, 'dtype': 'str', 'feature_encoder': 'layers.MaskedAveragePooling()', 'max_len': 100, "
                "'name': 'cate_history', 'share_embedding': 'cate_id', 'splitter': '^', 'type': 'sequence'}]")
DIN_LOG = {
    "attention_dropout": "0.1", "attention_hidden_activations": "Dice", "attention_hidden_units": "[512, 256]",
    "attention_output_activation": "None", "batch_norm": "True", "batch_size": "1024", "data_format": "csv",
    "dataset_id": "amazonelectronics_x1_b7a43f49", "debug_mode": "False",
    "din_sequence_field": "('item_history', 'cate_history')", "din_target_field": "('item_id', 'cate_id')",
    "din_use_softmax": "True", "dnn_activations": "Dice", "dnn_hidden_units": "[1024, 512, 256]",
    "early_stop_patience": "2", "embedding_dim": "64", "embedding_regularizer": "0.005", "epochs": "100",
    "eval_interval": "1", "feature_cols": FEATURE_COLS,
    "feature_specs": "[{'feature_encoder': None, 'name': 'item_history'}, "
                     "{'feature_encoder': None, 'name': 'cate_history'}]",
    "gpu": "6", "group_id": "user_id", "label_col": "{'dtype': 'float', 'name': 'label'}",
    "learning_rate": "0.0005", "loss": "binary_crossentropy", "metrics": "['gAUC', 'AUC', 'logloss']",
    "min_categr_count": "1", "model": "DIN", "model_id": "DIN_amazonelectronics_x1_015_8539c013",
    "monitor": "gAUC", "monitor_mode": "max", "net_dropout": "0.1", "net_regularizer": "0", "optimizer": "adam",
    "ordered_features": "None", "save_best_only": "True", "seed": "20222023", "shuffle": "True",
    "task": "binary_classification", "test_data": "../data/Amazon/AmazonElectronics_x1/test.csv",
    "train_data": "../data/Amazon/AmazonElectronics_x1/train.csv",
    "valid_data": "../data/Amazon/AmazonElectronics_x1/test.csv", "verbose": "1",
}
ROW = {"dataset": "amazonelectronics_x1", "model": "DIN", "gauc": "0.883526", "auc": "0.886028",
       "logloss": "0.43019", "fuxictr_version": "2.0.1", "seed": "20222023", "embedding_dim": "64",
       "validation": "valid=test", "source": "reczoo/BARS:ranking/ctr/DIN/DIN_amazonelectronics_x1/README.md"}


def _bars(tmp_path: Path, params: dict[str, str], test: str = "gAUC: 0.883526 - AUC: 0.886028 - logloss: 0.430190"
          ) -> Path:
    d = tmp_path / "BARS" / "ranking" / "ctr" / "DIN" / "DIN_amazonelectronics_x1"
    d.mkdir(parents=True, exist_ok=True)
    body = "\n".join(f'    "{k}": "{v}",' for k, v in params.items()).rstrip(",")
    (d / "README.md").write_text(
        "## DIN_amazonelectronics_x1\n### Environments\n  fuxictr: 2.0.1\n### Results\n\n| gAUC | AUC | logloss  |\n"
        "|:---:|:---:|:---:|\n| 0.883526 | 0.886028 | 0.430190  |\n\n### Logs\n```python\n"
        f"2022-08-15 15:48:22,078 P1 INFO Params: {{\n{body}\n}}\n"
        "2022-08-15 16:05:15,165 P1 INFO [Metrics] gAUC: 0.839202\n"
        f"2022-08-15 18:41:08,640 P1 INFO [Metrics] {test}\n```\n")
    return tmp_path / "BARS"


def test_script_transcribes_a_sequential_readme(tmp_path):
    seq = _seq()
    base = seq.base
    path, text = seq.transcribe_row(ROW, base.BarsRepo(_bars(tmp_path, DIN_LOG)), base.model_configs(), None)
    assert path == base.OUT / "amazonelectronics_x1" / "din.yaml"
    doc = yaml.safe_load(text)
    assert doc["published"] == {"test_gauc": 0.883526, "test_auc": 0.886028, "test_logloss": 0.43019}
    s = doc["set"]
    assert s["model.params.target_fields"] == [["item_id", "cate_id"]]
    assert s["model.params.sequence_fields"] == [["item_history", "cate_history"]]
    assert s["model.params.activation"] == "dice" and s["model.params.attention_activation"] == "dice"
    assert s["model.params.use_softmax"] is True and s["model.params.attention_output_activation"] is None
    assert s["train.monitor"] == "val_gauc" and s["train.max_strikes"] == 2 and s["seed"] == 20222023
    assert doc["checked"]["group_id"] == "user_id" and doc["checked"]["valid_data"].endswith("/test.csv")
    assert doc["checked"]["feature_specs"] and "not_mapped" not in doc
    # the committed preset is what the script makes of the real README (same keys and values)
    committed = yaml.safe_load((base.OUT / "amazonelectronics_x1" / "din.yaml").read_text())
    assert committed["set"] == s


@pytest.mark.parametrize("bad, err", [
    ({"fancy_knob": "1"}, r"keys no rule maps.*\['fancy_knob'\]"),
    ({"monitor": "MRR"}, "monitor 'MRR' with monitor_mode 'max'"),
    ({"metrics": "['AUC', 'logloss']"}, "expected gAUC, AUC and logloss"),
    ({"group_id": "item_id"}, "group_id 'item_id'.* is not data.group_column 'user_id'"),
    ({"valid_data": "../data/valid.csv"}, "the bars-seq protocol is valid = test"),
    ({"feature_specs": "None"}, "item_history: feature encoder 'layers.MaskedAveragePooling\\(\\)'.*attended"),
    ({"feature_specs": "[{'feature_encoder': 'layers.Sum()', 'name': 'item_history'}]"}, "only layers.Masked"),
    ({"feature_cols": FEATURE_COLS.replace("'max_len': 100, 'name': 'cate_history'",
                                           "'max_len': 50, 'name': 'cate_history'")}, "cate_history: max_len 50"),
    ({"feature_cols": FEATURE_COLS.replace("'share_embedding': 'cate_id'", "'share_embedding': 'item_id'")},
     "cate_history: share_embedding 'item_id', ours 'cate_id'"),
    ({"din_target_field": "('item_id',)"}, "do not pair up"),
    ({"min_categr_count": "2"}, "min_categr_count = 2"),
])
def test_script_refuses_what_it_cannot_map(tmp_path, bad, err):
    seq = _seq()
    base = seq.base
    repo = base.BarsRepo(_bars(tmp_path, {**DIN_LOG, **bad}))
    with pytest.raises(base.TranscriptionError, match=err) as e:
        seq.transcribe_row(ROW, repo, base.model_configs(), None)
    assert "ranking/ctr/DIN/DIN_amazonelectronics_x1/README.md" in str(e.value)


def test_script_checks_the_published_values_and_maps_projections_to_not_mapped(tmp_path):
    seq = _seq()
    base = seq.base
    repo = base.BarsRepo(_bars(tmp_path, DIN_LOG, test="gAUC: 0.88 - AUC: 0.886028 - logloss: 0.430190"))
    with pytest.raises(base.TranscriptionError, match=r"differ from bars_published_seq.csv"):
        seq.transcribe_row(ROW, repo, base.model_configs(), None)
    # a linear projection (KuaiVideo / MicroVideo's pretrained tables) has no counterpart: not_mapped, recorded
    specs = ("[{'feature_encoder': None, 'name': 'item_history'}, {'feature_encoder': None, 'name': 'cate_history'}, "
             "{'feature_encoder': 'nn.Linear(64, 64, bias=False)', 'name': 'item_id'}]")
    repo = base.BarsRepo(_bars(tmp_path, {**DIN_LOG, "feature_specs": specs}))
    _, text = seq.transcribe_row(ROW, repo, base.model_configs(), None)
    doc = yaml.safe_load(text)
    assert doc["not_mapped"]["feature_specs"][2] == {"feature_encoder": "nn.Linear(64, 64, bias=False)",
                                                     "name": "item_id"}
    assert "feature_specs" not in doc["checked"]


def test_pending_models_have_rules_and_are_skipped(monkeypatch):
    seq = _seq()
    base = seq.base
    assert seq.PENDING_MODELS == {}  # DIEN, DMIN, DMR merged: every published sequential pair has its preset
    monkeypatch.setitem(seq.PENDING_MODELS, "dien", "a model not on main yet")
    assert set(seq.PENDING_MODELS) <= set(seq.RULES)
    models = {**base.model_configs(), "DIEN": {"id": "dien", "name": "dien", "params": [], "path": Path("x")}}
    row = {**ROW, "model": "DIEN", "source": "reczoo/BARS:ranking/ctr/DIEN/DIEN_amazonelectronics_x1/README.md"}
    assert seq.transcribe_row(row, None, models, None) is None  # no README read: the rule is off


def test_a_runs_own_padding_becomes_a_data_key_of_the_preset(tmp_path):
    """BARS's DIEN / DMIN / DMR runs post-padded histories the data configs pre-pad (as every other BARS model on
    those boards): the preset then sets data.field_options.<field>.padding (another prepared dataset); a field
    whose padding the data config does not name stays an error."""
    seq = _seq()
    base = seq.base
    datas = seq.seq_data_configs()
    name, data = datas["amazonelectronics_x1"]
    pre = {**data, "field_options": {**data["field_options"],
                                     "item_history": {**data["field_options"]["item_history"], "padding": "pre"}}}
    repo = base.BarsRepo(_bars(tmp_path, DIN_LOG))
    _, text = seq.transcribe_row(ROW, repo, base.model_configs(), None, {"amazonelectronics_x1": (name, pre)})
    assert yaml.safe_load(text)["set"]["data.field_options.item_history.padding"] == "post"
    cols = FEATURE_COLS.replace("'name': 'item_history',", "'name': 'item_history', 'padding': 'pre',")
    repo = base.BarsRepo(_bars(tmp_path, {**DIN_LOG, "feature_cols": cols}))
    with pytest.raises(base.TranscriptionError, match="item_history: padding 'pre', ours 'post'"):
        seq.transcribe_row(ROW, repo, base.model_configs(), None)
    cfg = compose(["model=din", "data=taobaoad_x1", "data.field_options.cate_his.padding=post"])
    assert cfg.data.field_options.cate_his.padding == "post"  # the key such a preset sets exists


AMAZON = SHARED_DATASETS / "torchrechub_samples" / "raw" / "amazon-electronics" / "amazon_electronics_sample.csv"


@pytest.mark.skipif(not AMAZON.is_file(), reason="needs ../shared/datasets (torch-rechub's Amazon sample)")
def test_bars_train_din_on_amazonelectronics_with_the_preset(tmp_path):
    """`bars train model=din data=amazonelectronics_x1 preset=bars` for one epoch on a small file in
    AmazonElectronics_x1's layout (torch-rechub's Amazon sample with histories; random labels: no real data):
    the preset's gAUC monitor runs on the test file (bars-seq), and MLflow records the preset and test gAUC."""
    import hashlib

    import polars as pl
    from mlflow.tracking import MlflowClient

    from bars.data.transforms import user_histories

    ev = pl.read_csv(AMAZON)
    h = user_histories(ev, "user_id", "time", {"item_history": "item_id", "cate_history": "cate_id"}, 100,
                       tiebreak="item_id")
    rng = np.random.default_rng(0)
    df = h.with_columns(pl.Series("label", rng.integers(0, 2, h.height)),
                        *[pl.col(c).cast(pl.List(pl.String)).list.join("^") for c in ("item_history", "cate_history")])
    df = df.select("label", "user_id", "item_id", "cate_id", "item_history", "cate_history")
    raw = tmp_path / "raw"
    raw.mkdir()
    df[:80].write_csv(raw / "train.csv")
    df[80:].write_csv(raw / "test.csv")
    md5 = {k: hashlib.md5((raw / f"{k}.csv").read_bytes()).hexdigest() for k in ("train", "test")}
    env = [f"data.raw_dir={raw}", f"data.md5.train={md5['train']}", f"data.md5.test={md5['test']}",
           "train.max_epochs=1", "train.num_threads=1", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
           f"paths.data={tmp_path / 'data'}", f"paths.checkpoints={tmp_path / 'ckpt'}"]
    r = subprocess.run([sys.executable, "-m", "bars.cli", "train", "model=din", "data=amazonelectronics_x1",
                        "preset=bars", *env], capture_output=True, text=True, check=False, cwd=tmp_path,
                       env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert r.returncode == 0, r.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("amazonelectronics_x1").experiment_id])
    t, p, m = run.data.tags, run.data.params, run.data.metrics
    assert t["preset"] == "bars" and t["preset_file"] == "conf/presets/bars/amazonelectronics_x1/din.yaml"
    assert t["preset_source"] == "reczoo/BARS:ranking/ctr/DIN/DIN_amazonelectronics_x1/README.md"
    assert p["train.monitor"] == "val_gauc" and p["model.params.use_softmax"] == "True"
    assert p["data.protocol_name"] == "bars-seq" and p["seed"] == "20222023"
    assert {"test_gauc", "test_auc", "test_logloss", "val_gauc"} <= set(m)
    assert 0.0 <= m["test_gauc"] <= 1.0
