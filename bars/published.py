"""BARS's published numbers and names: the test AUC/logloss (and gAUC) BARS published per (split, model), shipped
inside the package (bars/reference/bars_published.csv, bars_published_seq.csv), and the rules that name a run's
BARS split and BARS model, so that ``bars.leaderboard`` can put the published value beside a row."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources

PUBLISHED_RESOURCE = ("reference", "bars_published.csv")


# --------------------------------------------------------------------------------------------- published facts
@dataclass(frozen=True)
class Published:
    split: str
    model: str
    auc: float
    logloss: float
    source: str
    gauc: float | None = None  # the sequential boards publish test gAUC too


def load_published() -> dict[tuple[str, str], Published]:
    """(BARS split, BARS model) -> published test AUC/logloss (and gAUC on the sequential boards), from the CSVs
    shipped inside the package: the flat boards' and :func:`load_published_seq`'s."""
    text = resources.files("bars").joinpath(*PUBLISHED_RESOURCE).read_text(encoding="utf-8")
    out: dict[tuple[str, str], Published] = {}
    for row in csv.DictReader(io.StringIO(text)):
        p = Published(row["dataset"], row["model"], float(row["auc"]), float(row["logloss"]), row["source"])
        out[(p.split, p.model)] = p
    out.update(load_published_seq())
    return out


SEQ_PUBLISHED_RESOURCE = ("reference", "bars_published_seq.csv")


SEQ_SPLITS = {"taobaoad_x1": "TaobaoAd_x1", "amazonelectronics_x1": "AmazonElectronics_x1",
              "kuaivideo_x1": "KuaiVideo_x1", "microvideo1.7m_x1": "MicroVideo1.7M_x1"}


# a model config's bars_name -> the name BARS's sequential boards give that model (its DNN on pooled histories is
# "YoutubeDNN" there; DCNv2 is spelled "DCN-V2"), for runs made without a preset
SEQ_BOARD_NAMES = {"DNN": "YoutubeDNN", "DCNv2": "DCN-V2"}


def load_published_seq() -> dict[tuple[str, str], Published]:
    """(BARS split, BARS model) -> published test gAUC/AUC/logloss of BARS's four sequential boards (64 rows,
    validated on the test set: protocol bars-seq), from the shipped copy of ../shared/reference/
    bars_published_seq.csv (its dataset column is the split in lower case: SEQ_SPLITS). Part of
    :func:`load_published`."""
    text = resources.files("bars").joinpath(*SEQ_PUBLISHED_RESOURCE).read_text(encoding="utf-8")
    out: dict[tuple[str, str], Published] = {}
    for row in csv.DictReader(io.StringIO(text)):
        p = Published(SEQ_SPLITS[row["dataset"]], row["model"], float(row["auc"]), float(row["logloss"]),
                      row["source"], float(row["gauc"]))
        out[(p.split, p.model)] = p
    return out


def recorded_value(params: Mapping[str, str], key: str) -> str | None:
    """A config value as MLflow recorded it; null (logged as "None") is None."""
    value = params.get(key)
    return None if value in (None, "", "None", "null") else value


def bars_split_of(params: Mapping[str, str]) -> str | None:
    """The BARS split a run's dataset is (its ``data.bars_split`` param), or None. Runs recorded before the
    data configs named their split have none, so they are not compared with published numbers."""
    return recorded_value(params, "data.bars_split")


def bars_model_of(model: str, params: Mapping[str, str], published_models: Iterable[str]) -> str | None:
    """The BARS model name of a run: its ``model.bars_name`` param (set in conf/model/<id>.yaml, null for none);
    for runs recorded before model configs named it, :func:`bars_model_name`."""
    if "model.bars_name" in params:
        return recorded_value(params, "model.bars_name")
    return bars_model_name(model, published_models, params)


def bars_model_name(model: str, published_models: Iterable[str], params: Mapping[str, str] | None = None
                    ) -> str | None:
    """The rule for runs recorded before model configs carried ``bars_name``: autoint is AutoInt+ unless the
    run had ``model.params.use_dnn=False``; dcnv2 with ``model_structure=crossnet_only`` is CrossNetv2; else the
    published name equal to the registry key up to letter case (widedeep -> WideDeep, xdeepfm -> xDeepFM)."""
    key = model.lower()
    params = params or {}
    if key == "autoint":
        return "AutoInt" if str(params.get("model.params.use_dnn", "True")).lower() == "false" else "AutoInt+"
    if key == "dcnv2" and params.get("model.params.model_structure") == "crossnet_only":
        return "CrossNetv2"
    for name in published_models:
        if name.lower() == key:
            return name
    return None
