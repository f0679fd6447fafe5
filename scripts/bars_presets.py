#!/usr/bin/env python3
"""Transcribe BARS's published best configurations into presets: conf/presets/bars/<data>/<model id>.yaml.

For every row of bars/reference/bars_published.csv whose split is one of this project's datasets (the split id
in lower case names conf/data/<data>.yaml) and whose model is the ``bars_name`` of a model config
(conf/model/<id>.yaml), read the README named in the row's ``source`` column from a copy of the BARS repository,
take the run configuration its Logs section prints (the first ``{...}`` block: FuxiCTR's logged params), and map
every key to this project's config keys with the rules below. Where BARS published a result without a README (the
``source`` is the folder's results.csv), the log of the run that results.csv names stands in for the README's
Logs section, and the folder's environments.txt for its FuxiCTR version. A rule may accept several FuxiCTR
classes that compute the same function (FFM, FFMv2); the preset then records ``fuxictr_model`` when the run used
another than the first. Nothing is dropped silently: each BARS key is

- mapped (``set:``) to a dotted key of the composed config (model.params.*, train.*, seed),
- ``inert``: it has no effect in that run's structure (e.g. net_dropout of a DCN without MLP), in FuxiCTR too,
- ``not_mapped``: a knob with no counterpart key here (listed in docs/fidelity.md),
- ``checked``: it must equal what this project's protocol does (e.g. shuffle True, evaluation every epoch,
  min_categr_count == the data config's min_count), else the script stops,
- or infrastructure (paths, GPU, logging, data files: the data config is the truth for those).

The four sequential boards (bars/reference/bars_published_seq.csv) are transcribed by the rules of
scripts/bars_presets_seq.py, called from here (one ``--check`` for both; see that module's docstring).

An unknown key, a value that cannot be mapped or a README whose test metrics differ from the CSV stops the
script with the README path and the key. The published numbers come from the CSV (checked against the README's
final test line). Output files are written atomically (temporary file, then rename); ``--check`` writes nothing
and exits 1 when a committed preset differs from what the READMEs give (or is missing, or is extra).

Usage (from the project root, where a BARS mirror exists; CI has none, so the presets are committed):

    .venv/bin/python scripts/bars_presets.py --bars /path/to/BARS            # a work tree or a git dir
    .venv/bin/python scripts/bars_presets.py --bars /path/to/BARS --check    # verify the committed files

``--bars`` defaults to $BARS_REPO. Git dirs are read with ``git --git-dir <dir> show <rev>:<path>``.
"""

from __future__ import annotations

import argparse
import ast
import csv
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
PUBLISHED = ROOT / "bars" / "reference" / "bars_published.csv"
OUT = CONF / "presets" / "bars"

# Keys that describe paths, hardware, logging or the data files (the data config is the truth for those).
INFRA = {"data_format", "data_root", "dataset_id", "debug", "debug_mode", "gpu", "label_col", "feature_cols",
         "model_root", "num_workers", "workers", "pickle_feature_encoder", "test_data", "train_data",
         "valid_data", "verbose", "version", "use_hdf5", "partition_block_size", "data_block_size"}
# BARS knobs with no config key here: the value is recorded in the preset (and must be the one named).
NOT_MAPPED: dict[str, Any] = {}
# FuxiCTR's loss names -> train.loss (binary_crossentropy: sigmoid, then BCE on probabilities = `bce`)
LOSSES = {"binary_crossentropy": "bce"}


class TranscriptionError(ValueError):
    pass


def parse_value(text: str) -> Any:
    """A logged FuxiCTR value (always a string) as Python: '[400, 400]', 'True', 'None', '1e-05', "{'AUC': 1}"."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


# ----------------------------------------------------------------------------------------------- reading BARS
class BarsRepo:
    """A BARS work tree or git dir; ``read(path)`` returns a file's text."""

    def __init__(self, path: Path, rev: str = "HEAD") -> None:
        self.path, self.rev = Path(path), rev
        self.worktree = (self.path / "ranking").is_dir()
        if not self.worktree and not (self.path / "HEAD").exists() and not (self.path / ".git").exists():
            raise TranscriptionError(f"{self.path}: neither a BARS work tree (no ranking/) nor a git dir")

    def _git(self, *args: str) -> str:
        git_dir = self.path / ".git" if (self.path / ".git").exists() else self.path
        r = subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True, text=True, check=False)
        if r.returncode:
            raise TranscriptionError(f"git {' '.join(args)} in {git_dir}: {r.stderr.strip()}")
        return r.stdout

    def read(self, path: str) -> str:
        if self.worktree:
            f = self.path / path
            if not f.is_file():
                raise TranscriptionError(f"{f}: the README named by bars_published.csv does not exist")
            return f.read_text(encoding="utf-8")
        return self._git("show", f"{self.rev}:{path}")

    def commit(self) -> str | None:
        try:
            return self._git("rev-parse", self.rev).strip()
        except TranscriptionError:
            return None


@dataclass
class Readme:
    path: str
    params: dict[str, Any]  # the logged run config, values parsed
    fuxictr_version: str
    test_auc: float | None
    test_logloss: float | None
    result_runs: list[tuple[float, float]] = field(default_factory=list)  # "Total n runs" table (AUC, logloss)


def parse_readme(path: str, text: str) -> Readme:
    if "### Logs" not in text:
        raise TranscriptionError(f"{path}: no '### Logs' section")
    logs = text.split("### Logs", 1)[1]
    m = re.search(r"INFO (?:Params: )?\{\n(.*?)\n[^\n]*?\}\n", logs, re.DOTALL)
    if not m:
        raise TranscriptionError(f"{path}: no logged run config ('INFO {{' ... '}}') in the Logs section")
    params: dict[str, Any] = {}
    for n, line in enumerate(m.group(1).splitlines(), 1):
        kv = re.match(r'\s*"([^"]+)": "(.*)",?$', line)
        if not kv:
            raise TranscriptionError(f"{path}: Logs config line {n}: cannot parse {line!r}")
        params[kv.group(1)] = parse_value(kv.group(2))
    ver = re.search(r"fuxictr:\s*v?([\d.]+\d)", text)
    if not ver:
        raise TranscriptionError(f"{path}: no 'fuxictr: <version>' in the Environments section")
    # the last metrics line of the log is the test evaluation (FuxiCTR prints AUC or logloss first)
    lines = re.findall(r"\[Metrics\] (?:test )?(\w+): ([\d.]+) - (\w+): ([\d.]+)", logs)
    auc = ll = None
    if lines:
        last = {lines[-1][0]: lines[-1][1], lines[-1][2]: lines[-1][3]}
        auc, ll = (float(last["AUC"]), float(last["logloss"])) if {"AUC", "logloss"} <= set(last) else (None, None)
    # a README whose Results section lists several runs of the logged config (seeds, reruns): "| 1 | auc | ll |"
    results = text.split("### Results", 1)[1].split("### Logs", 1)[0] if "### Results" in text else ""
    runs = [(float(a), float(b)) for a, b in re.findall(r"^\|\s*\d+\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|",
                                                         results, re.MULTILINE)]
    return Readme(path, params, ver.group(1), auc, ll, runs)


def read_source(repo: BarsRepo, path: str, row: dict[str, str]) -> str:
    """The text :func:`parse_readme` reads for a ``source``: the README itself (behind the folder's environments.txt
    when the README names no FuxiCTR version), or, where BARS published a result without a README (the source is
    the folder's results.csv, e.g. HFM on Frappe_x1), the run's log named by the results.csv line whose test AUC
    is the published one, behind the folder's environments.txt (its FuxiCTR version) and a '### Logs' heading."""
    if path.endswith("/README.md"):
        text = repo.read(path)
        if not re.search(r"fuxictr:\s*v?[\d.]+\d", text):  # e.g. FGCNN x4_001: the version is in environments.txt
            try:
                env = repo.read(f"{path.rsplit('/', 1)[0]}/environments.txt")
            except TranscriptionError:
                return text
            return f"{env}\n{text}"
        return text
    if not path.endswith("/results.csv"):
        raise TranscriptionError(f"{PUBLISHED}: source {path!r} is neither a README.md nor a results.csv")
    folder = path.rsplit("/", 1)[0]
    expids = []
    for line in repo.read(path).splitlines():
        m = re.search(r"\[exp_id\] ([^,\s]+).*\[test\] AUC: ([\d.]+)", line)
        if m and abs(float(m.group(2)) - float(row["auc"])) <= 5e-7:
            expids.append(m.group(1))
    if len(expids) != 1:
        raise TranscriptionError(f"{path}: {len(expids)} lines with [exp_id] and test AUC {row['auc']} (need one)")
    log = repo.read(f"{folder}/{expids[0]}.log")
    env = repo.read(f"{folder}/environments.txt")
    return f"{env}\n### Logs\n{log}"


# READMEs whose results table (= bars_published.csv) reports another run of the same tuner config than the one
# their Logs section prints. For these the preset is that run's configuration: its block in the tuner config's
# model_config.yaml (+ its dataset block), after the folder's results.csv has shown that run's test metrics to be
# exactly the published ones. Any other mismatch between the log and the CSV still stops the script.
OTHER_RUN = {
    # Logs print FiBiNET_avazu_x1_002_f09a284c (test AUC 0.764514); the table is _011_ (0.764531)
    "ranking/ctr/FiBiNET/FiBiNET_avazu_x1/README.md": "FiBiNET_avazu_x1_011_11e2ddd3",
}


def other_run(readme: Readme, text: str, repo: BarsRepo, expid: str, auc: float, ll: float) -> tuple[Readme, str]:
    """``readme`` with the params of run ``expid`` of the same folder (see OTHER_RUN), and a comment line."""
    folder = readme.path.rsplit("/", 1)[0]
    results = repo.read(f"{folder}/results.csv")
    m = re.search(rf"\[exp_id\] {re.escape(expid)},.*?\[test\] AUC: ([\d.]+) - logloss: ([\d.]+)", results)
    if not m or abs(float(m.group(1)) - auc) > 5e-7 or abs(float(m.group(2)) - ll) > 5e-7:
        raise TranscriptionError(f"{folder}/results.csv: no run {expid} with test AUC {auc} and logloss {ll}")
    cfg = re.search(r"--config \./(\S+) --expid", text)
    if not cfg:
        raise TranscriptionError(f"{readme.path}: no 'run_expid.py --config ./<dir> --expid' command")
    config_dir = f"{folder}/{cfg.group(1)}"
    runs = yaml.safe_load(repo.read(f"{config_dir}/model_config.yaml")) or {}
    if expid not in runs:
        raise TranscriptionError(f"{config_dir}/model_config.yaml: no run {expid}")
    params = dict(runs[expid])
    datasets = yaml.safe_load(repo.read(f"{config_dir}/dataset_config.yaml")) or {}
    params.update(datasets.get(params.get("dataset_id"), {}))
    params["model_id"] = expid
    note = (f"# The README's Logs print run {readme.params.get('model_id')}; its results table (the published\n"
            f"# value) is run {expid}, whose config this preset is:\n"
            f"# {cfg.group(1)}/model_config.yaml (+ dataset_config.yaml) in the README's folder.\n")
    return Readme(readme.path, params, readme.fuxictr_version, auc, ll), note


# ------------------------------------------------------------------------------------------------ the mapping
@dataclass
class Transcript:
    """One README's keys as they are consumed by the rules; ``finish`` refuses keys no rule consumed."""

    readme: Readme
    data_cfg: dict[str, Any]
    values: dict[str, Any] = field(default_factory=dict)
    inert: dict[str, Any] = field(default_factory=dict)
    not_mapped: dict[str, Any] = field(default_factory=dict)
    checked: dict[str, Any] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)

    @property
    def where(self) -> str:
        return self.readme.path

    def has(self, key: str) -> bool:
        return key in self.readme.params

    def get(self, key: str, *alts: str) -> Any:
        for k in (key, *alts):
            if k in self.readme.params:
                self.used.add(k)
                return self.readme.params[k]
        raise TranscriptionError(f"{self.where}: the logged config has no {' / '.join((key, *alts))}")

    def set(self, ours: str, theirs: str | tuple[str, ...], conv: Callable[[Any], Any] = lambda v: v) -> Any:
        keys = (theirs,) if isinstance(theirs, str) else theirs
        v = conv(self.get(*keys))
        self.values[ours] = v
        return v

    def put(self, ours: str, value: Any) -> None:
        self.values[ours] = value

    def mark_inert(self, *keys: str) -> None:
        for k in keys:
            if self.has(k):
                self.inert[k] = self.get(k)

    def check(self, key: str, expected: Any, *, optional: bool = True) -> None:
        if not self.has(key):
            if optional:
                return
            raise TranscriptionError(f"{self.where}: the logged config has no {key}")
        got = self.get(key)
        if got != expected:
            raise TranscriptionError(f"{self.where}: {key} = {got!r}; this project can only reproduce "
                                     f"{expected!r} (no counterpart for other values)")
        self.checked[key] = got

    def finish(self) -> None:
        left = sorted(set(self.readme.params) - self.used - INFRA)
        if left:
            raise TranscriptionError(f"{self.where}: keys no rule maps, checks or marks inert: {left}; extend "
                                     f"scripts/bars_presets.py (and docs/fidelity.md) before transcribing")


def _float(v: Any) -> float:
    return 0.0 if v in (None, "") else float(v)


def _regularizer(v: Any) -> float:
    """A FuxiCTR regularizer: a number (the L2 weight) or a string 'l2(<weight>)' (FuxiCTR 1.0.x logs both)."""
    if isinstance(v, str):
        m = re.fullmatch(r"\s*l2\(\s*([0-9.eE+-]+)\s*\)\s*", v)
        if not m:
            raise TranscriptionError(f"regularizer {v!r}: expected a number or 'l2(<weight>)' (only L2 exists here)")
        return float(m.group(1))
    return _float(v)


def _units(v: Any) -> list[int]:
    if v in (None, "None", ""):
        return []
    if not isinstance(v, list) or not all(isinstance(u, int) for u in v):
        raise TranscriptionError(f"hidden units {v!r}: expected a list of ints")
    return list(v)


def _act(v: Any) -> str:
    return str(v).lower()


def _monitor(t: Transcript) -> None:
    m = t.get("monitor")
    mode = t.get("monitor_mode")
    names = {"AUC": "val_auc", "logloss": "val_logloss"}
    if isinstance(m, str):
        if m not in names:
            raise TranscriptionError(f"{t.where}: monitor {m!r} is not AUC or logloss")
        if mode != {"AUC": "max", "logloss": "min"}[m]:
            raise TranscriptionError(f"{t.where}: monitor {m} with monitor_mode {mode!r}")
        t.put("train.monitor", names[m])
    elif isinstance(m, dict):
        if mode != "max" or set(m) - set(names):
            raise TranscriptionError(f"{t.where}: weighted monitor {m!r} with mode {mode!r}: expected AUC/logloss "
                                     f"weights, maximised")
        t.put("train.monitor", {names[k]: int(w) if float(w).is_integer() else float(w) for k, w in m.items()})
    else:
        raise TranscriptionError(f"{t.where}: monitor {m!r}")
    t.checked["monitor_mode"] = mode


def training_keys(t: Transcript, monitor: Callable[[Transcript], None], *, embedding: bool = True,
                  shared_regularizer: bool = False) -> None:
    """The keys of a BARS run's training (embedding size, regularizers, batch, learning rate, optimizer, epochs,
    patience, monitor via ``monitor``, seed): shared by the flat and the sequential boards' rules."""
    if embedding:
        t.set("model.params.embedding_dim", "embedding_dim", int)
    if shared_regularizer:  # FuxiCTR LR/FM: one `regularizer` for embedding tables and every other weight
        t.set("train.embedding_regularizer", "regularizer", _regularizer)
        t.values["train.net_regularizer"] = t.values["train.embedding_regularizer"]
    else:
        t.set("train.embedding_regularizer", "embedding_regularizer", _regularizer)
        t.set("train.net_regularizer", "net_regularizer", _regularizer)
    t.set("train.batch_size", "batch_size", int)
    t.set("train.learning_rate", "learning_rate", float)
    opt = t.get("optimizer")
    if str(opt).lower() != "adam":
        raise TranscriptionError(f"{t.where}: optimizer {opt!r}: only adam exists here")
    t.put("train.optimizer", "adam")
    t.set("train.max_epochs", "epochs", int)
    t.set("train.max_strikes", ("patience", "early_stop_patience"), int)
    monitor(t)
    t.set("seed", "seed", int)


def common(t: Transcript, *, embedding: bool = True, shared_regularizer: bool = False) -> None:
    """Training-level keys every BARS run has."""
    training_keys(t, _monitor, embedding=embedding, shared_regularizer=shared_regularizer)
    if t.has("loss"):
        loss = t.get("loss")
        if loss not in LOSSES:
            raise TranscriptionError(f"{t.where}: loss {loss!r}; only {sorted(LOSSES)} are known here")
        t.put("train.loss", LOSSES[loss])
    for k, v in NOT_MAPPED.items():
        if t.has(k):
            got = t.get(k)
            if got != v:
                raise TranscriptionError(f"{t.where}: {k} = {got!r}; only {v!r} is known here")
            t.not_mapped[k] = got
    # the fixed parts of this project's protocol
    t.check("task", "binary_classification")
    t.check("shuffle", True)
    t.check("save_best_only", True)
    t.check("every_x_epochs", 1)
    t.check("eval_interval", 1)
    t.check("eval_steps", None)
    t.check("embedding_dropout", 0)
    for k in ("feature_specs", "feature_config", "use_features", "group_id", "ordered_features"):
        t.check(k, None)
    if t.has("metrics"):
        metrics = t.get("metrics")
        if sorted(metrics) != ["AUC", "logloss"]:
            raise TranscriptionError(f"{t.where}: metrics {metrics!r}: expected AUC and logloss")
        t.checked["metrics"] = metrics
    if t.has("min_categr_count"):
        t.check("min_categr_count", int(t.data_cfg["min_count"]))
    t.used.add("model_id")


def _deep(t: Transcript, units_key: str, act_key: str, units_field: str = "dnn_hidden_units") -> bool:
    """An MLP part: units (None/[] = no MLP: its knobs are inert) -> True when the MLP exists."""
    units = t.set(f"model.params.{units_field}", units_key, _units)
    if units:
        t.set("model.params.activation", act_key, _act)
        t.set("model.params.batch_norm", "batch_norm", bool)
        t.set("model.params.dropout", "net_dropout", _float)
    else:
        _no_mlp(t, act_key)
    return bool(units)


def _no_mlp(t: Transcript, *keys: str) -> None:
    """No MLP part: its BARS knobs are inert; activation/batch_norm/dropout are set null (here a value the
    model would ignore is an error), so the preset also clears them over a model config that has an MLP."""
    t.mark_inert(*keys, "batch_norm", "net_dropout")
    for k in ("activation", "batch_norm", "dropout"):
        t.put(f"model.params.{k}", None)


def rule_lr(t: Transcript) -> None:
    common(t, embedding=False, shared_regularizer=True)


def rule_fm(t: Transcript) -> None:
    common(t, shared_regularizer=True)


def rule_mlp(t: Transcript) -> None:  # DNN, WideDeep, DeepFM
    common(t)
    if not _deep(t, "hidden_units", "hidden_activations", "hidden_units"):
        raise TranscriptionError(f"{t.where}: an MLP model without hidden units")


def rule_dcn(t: Transcript) -> None:  # DCN and CrossNet (dnn_hidden_units None)
    common(t)
    _deep(t, "dnn_hidden_units", "dnn_activations")
    t.set("model.params.num_cross_layers", "crossing_layers", int)


def rule_dcnv2(t: Transcript) -> None:  # DCNv2 and CrossNetv2 (model_structure crossnet_only)
    common(t)
    structure = t.set("model.params.model_structure", "model_structure", str)
    t.check("use_low_rank_mixture", False, optional=False)
    t.mark_inert("low_rank", "num_experts")  # only read by the low-rank mixture (off)
    t.set("model.params.num_cross_layers", "num_cross_layers", int)
    if structure == "crossnet_only":
        _no_mlp(t, "parallel_dnn_hidden_units", "stacked_dnn_hidden_units", "dnn_activations")
        return
    if structure not in ("parallel", "stacked"):
        raise TranscriptionError(f"{t.where}: model_structure {structure!r} does not exist here")
    used, other = ("parallel", "stacked") if structure == "parallel" else ("stacked", "parallel")
    if not _deep(t, f"{used}_dnn_hidden_units", "dnn_activations"):
        raise TranscriptionError(f"{t.where}: {structure} DCNv2 without {used}_dnn_hidden_units")
    t.mark_inert(f"{other}_dnn_hidden_units")


def rule_xdeepfm(t: Transcript) -> None:  # xDeepFM and CIN (dnn_hidden_units None)
    common(t)
    t.set("model.params.cin_hidden_units", "cin_layer_units", _units)
    _deep(t, "dnn_hidden_units", "hidden_activations")


def rule_autoint(t: Transcript) -> None:  # AutoInt (no MLP) and AutoInt+
    common(t)
    layers = t.set("model.params.attention_layers", "attention_layers", int)
    heads = t.set("model.params.num_heads", "num_heads", int)
    dim = int(t.get("attention_dim"))
    dropout = _float(t.get("net_dropout"))
    if version_tuple(t.readme.fuxictr_version) < (1, 2, 2):
        # FuxiCTR < 1.2.2: attention_dim is per head (layer width = heads * dim), heads are split by a plain
        # view (fields and heads mixed unless 1 head) and net_dropout also drops the attention output
        if heads != 1 or dropout:
            raise TranscriptionError(f"{t.where}: FuxiCTR {t.readme.fuxictr_version} AutoInt with {heads} heads "
                                     f"and net_dropout {dropout}: that attention layer has no counterpart here")
        dim *= heads
    t.put("model.params.attention_dim", dim)
    t.set("model.params.use_residual", "use_residual", bool)
    t.set("model.params.use_scale", "use_scale", bool)
    t.set("model.params.layer_norm", "layer_norm", bool)
    # FuxiCTR drops the attention weights with net_dropout (and the MLP's units, when there is one): `dropout`,
    # with attention_dropout null (= the same rate)
    t.put("model.params.attention_dropout", None)
    t.set("model.params.use_wide", "use_wide", bool)
    units = t.set("model.params.dnn_hidden_units", "dnn_hidden_units", _units)
    t.put("model.params.use_dnn", bool(units))
    t.put("model.params.dropout", dropout)
    if units:
        t.set("model.params.activation", "dnn_activations", _act)
        t.set("model.params.batch_norm", "batch_norm", bool)
    else:
        t.mark_inert("dnn_activations", "batch_norm")
        t.put("model.params.activation", None)
        t.put("model.params.batch_norm", None)
    if layers < 1:
        raise TranscriptionError(f"{t.where}: attention_layers {layers}")


def rule_finalmlp(t: Transcript) -> None:
    common(t)
    for i in (1, 2):
        t.set(f"model.params.mlp{i}_hidden_units", f"mlp{i}_hidden_units", _units)
        t.set(f"model.params.mlp{i}_activation", f"mlp{i}_hidden_activations", _act)
        t.set(f"model.params.mlp{i}_batch_norm", f"mlp{i}_batch_norm", bool)
        t.set(f"model.params.mlp{i}_dropout", f"mlp{i}_dropout", _float)
    if t.set("model.params.use_fs", "use_fs", bool):
        t.set("model.params.fs_hidden_units", "fs_hidden_units", _units)
        t.set("model.params.fs1_context", "fs1_context", list)
        t.set("model.params.fs2_context", "fs2_context", list)
    else:  # the feature-selection keys are inert; here they must be null / empty (a value would be ignored)
        t.mark_inert("fs_hidden_units", "fs1_context", "fs2_context")
        t.put("model.params.fs_hidden_units", None)
        t.put("model.params.fs1_context", [])
        t.put("model.params.fs2_context", [])
    # FuxiCTR (every 2.x FinalMLP, the BARS runs' 2.0.1 included) starts an empty context's bias at zeros
    t.put("model.params.fs_context_bias_init", "zeros")
    t.set("model.params.num_heads", "num_heads", int)


# --- zoo3: AOANet, DeepIM, DESTINE, DSSM, EDCN, FLEN, SAM (FuxiCTR 1.0.2 - 1.2.2 runs)
def rule_aoanet(t: Transcript) -> None:
    common(t)
    _deep(t, "dnn_hidden_units", "dnn_hidden_activations")
    t.set("model.params.num_interaction_layers", "num_interaction_layers", int)
    t.set("model.params.num_subspaces", "num_subspaces", int)


def rule_deepim(t: Transcript) -> None:  # DeepIM's MLP knobs are hidden_units / net_batch_norm
    common(t)
    t.set("model.params.im_order", "im_order", int)
    t.set("model.params.im_batch_norm", "im_batch_norm", bool)
    if t.set("model.params.hidden_units", "hidden_units", _units):
        t.set("model.params.activation", "hidden_activations", _act)
        t.set("model.params.batch_norm", "net_batch_norm", bool)
        t.set("model.params.dropout", "net_dropout", _float)
    else:
        t.mark_inert("hidden_activations", "net_batch_norm", "net_dropout")
        t.put("model.params.batch_norm", False)
        t.put("model.params.dropout", 0.0)


def rule_destine(t: Transcript) -> None:
    common(t)
    heads = t.set("model.params.num_heads", "num_heads", int)
    if heads != 1:  # FuxiCTR 1.2.2 reshaped the unary logits across samples with several heads: no counterpart
        raise TranscriptionError(f"{t.where}: DESTINE with {heads} heads: FuxiCTR {t.readme.fuxictr_version}'s "
                                 f"multi-head unary attention has no counterpart here (head_split)")
    t.set("model.params.attention_dim", "attention_dim", int)
    t.set("model.params.attention_layers", "attention_layers", int)
    t.set("model.params.attention_dropout", "att_dropout", _float)
    t.set("model.params.relu_before_att", "relu_before_att", bool)
    t.set("model.params.use_scale", "use_scale", bool)
    t.set("model.params.use_wide", "use_wide", bool)
    t.set("model.params.residual_mode", "residual_mode", lambda v: "none" if v in (None, "None") else str(v))
    _deep(t, "dnn_hidden_units", "dnn_activations")


def rule_dssm(t: Transcript) -> None:  # the towers' groups are the data config's data.groups
    common(t)
    for side in ("user", "item"):
        t.set(f"model.params.{side}_tower_units", f"{side}_tower_units", _units)
        t.set(f"model.params.{side}_tower_activation", f"{side}_tower_activations", _act)
        t.set(f"model.params.{side}_tower_dropout", f"{side}_tower_dropout", _float)
    t.set("model.params.batch_norm", "batch_norm", bool)


def rule_edcn(t: Transcript) -> None:
    common(t)
    t.set("model.params.num_cross_layers", "num_cross_layers", int)
    t.set("model.params.activation", "hidden_activations", _act)
    t.set("model.params.bridge_type", "bridge_type", str)
    t.set("model.params.use_regulation_module", "use_regulation_module", bool)
    t.set("model.params.temperature", "temperature", float)
    t.set("model.params.dropout", "net_dropout", _float)
    t.set("model.params.batch_norm", "batch_norm", bool)
    # FuxiCTR < 2 kept DCN's residual in EDCN's cross layer (2.3.10 dropped it)
    t.put("model.params.cross_residual", version_tuple(t.readme.fuxictr_version) < (2,))


def rule_flen(t: Transcript) -> None:  # the field groups are the data config's data.groups
    common(t)
    _deep(t, "dnn_hidden_units", "dnn_activations")


def rule_sam(t: Transcript) -> None:
    common(t)
    t.set("model.params.interaction_type", "interaction_type", str)
    t.set("model.params.aggregation", "aggregation", str)
    t.set("model.params.num_interaction_layers", "num_interaction_layers", int)
    t.set("model.params.use_residual", "use_residual", bool)
    t.set("model.params.dropout", "net_dropout", _float)


def _afn(t: Transcript, ensemble: bool) -> None:
    common(t)
    t.check("ensemble_dnn", ensemble, optional=False)
    t.set("model.params.logarithmic_neurons", "logarithmic_neurons", int)
    t.set("model.params.afn_hidden_units", "afn_hidden_units", _units)
    t.set("model.params.afn_activation", "afn_activations", _act)
    t.set("model.params.afn_dropout", "afn_dropout", _float)
    t.set("model.params.batch_norm", "batch_norm", bool)  # FuxiCTR: one flag for both MLPs
    if ensemble:
        if not t.set("model.params.dnn_hidden_units", "dnn_hidden_units", _units):
            raise TranscriptionError(f"{t.where}: AFN+ (ensemble_dnn) without dnn_hidden_units")
        t.set("model.params.dnn_activation", "dnn_activations", _act)
        t.set("model.params.dnn_dropout", "dnn_dropout", _float)
    else:  # the DNN tower does not exist without ensemble_dnn
        t.mark_inert("dnn_hidden_units", "dnn_activations", "dnn_dropout")


def rule_afn(t: Transcript) -> None:  # AFN: FuxiCTR AFN with ensemble_dnn False
    _afn(t, ensemble=False)


def rule_afn_plus(t: Transcript) -> None:  # AFN+: FuxiCTR AFN with ensemble_dnn True
    _afn(t, ensemble=True)


def rule_ffm(t: Transcript) -> None:  # FFM (FuxiCTR FFM, FFMv2 or 1.x's FFM_v2: the same function)
    common(t, shared_regularizer=True)


def _hfm(t: Transcript, use_dnn: bool) -> None:
    common(t)
    t.check("use_dnn", use_dnn, optional=False)
    t.set("model.params.interaction_type", "interaction_type", str)
    if use_dnn:
        if not t.set("model.params.hidden_units", "hidden_units", _units):
            raise TranscriptionError(f"{t.where}: HFM+ (use_dnn) without hidden_units")
        t.set("model.params.activation", "hidden_activations", _act)
        t.set("model.params.batch_norm", "batch_norm", bool)
        t.set("model.params.dropout", "net_dropout", _float)
    else:  # HFM projects the summed pair vectors: the MLP knobs have no effect
        t.mark_inert("hidden_units", "hidden_activations", "batch_norm", "net_dropout")


def rule_hfm(t: Transcript) -> None:  # HFM: FuxiCTR HFM with use_dnn False
    _hfm(t, use_dnn=False)


def rule_hfm_plus(t: Transcript) -> None:  # HFM+: FuxiCTR HFM with use_dnn True
    _hfm(t, use_dnn=True)


def rule_fignn(t: Transcript) -> None:
    common(t)
    t.set("model.params.gnn_layers", "gnn_layers", int)
    t.set("model.params.use_residual", "use_residual", bool)
    t.set("model.params.use_gru", "use_gru", bool)
    t.set("model.params.reuse_graph_layer", "reuse_graph_layer", bool)


def rule_ccpm(t: Transcript) -> None:
    common(t)
    t.set("model.params.channels", "channels", _units)
    t.set("model.params.kernel_heights", "kernel_heights", _units)
    t.set("model.params.activation", "activation", _act)


def rule_interhat(t: Transcript) -> None:  # FuxiCTR 1.0.2's InterHAt computes what 2.3.10's does
    common(t)
    hidden = t.get("hidden_dim")
    t.put("model.params.hidden_dim", None if hidden in (None, "None") else int(hidden))
    t.set("model.params.order", "order", int)
    t.set("model.params.num_heads", "num_heads", int)
    t.set("model.params.attention_dim", "attention_dim", int)
    t.set("model.params.hidden_units", "hidden_units", _units)
    t.set("model.params.activation", "hidden_activations", _act)
    t.set("model.params.batch_norm", "batch_norm", bool)
    t.set("model.params.layer_norm", "layer_norm", bool)
    t.set("model.params.use_residual", "use_residual", bool)
    t.set("model.params.dropout", "net_dropout", _float)


def rule_onn(t: Transcript) -> None:
    common(t)
    if not _deep(t, "hidden_units", "hidden_activations", "hidden_units"):
        raise TranscriptionError(f"{t.where}: ONN without hidden units")


def rule_afm(t: Transcript) -> None:
    common(t)
    if t.set("model.params.use_attention", "use_attention", bool):
        t.set("model.params.attention_dim", "attention_dim", int)
        t.set("model.params.attention_dropout", "attention_dropout", lambda v: [_float(x) for x in v])
    else:  # FuxiCTR builds the attention network and never calls it
        t.mark_inert("attention_dim", "attention_dropout")


def rule_shared_regularizer(t: Transcript) -> None:  # LorentzFM: embeddings only, one `regularizer`
    common(t, shared_regularizer=True)


def rule_fwfm(t: Transcript) -> None:
    common(t, shared_regularizer=True)
    t.set("model.params.linear_type", "linear_type", str)


def rule_fmfm(t: Transcript) -> None:
    common(t, shared_regularizer=True)
    t.set("model.params.field_interaction_type", "field_interaction_type", str)


def rule_hofm(t: Transcript) -> None:
    """FuxiCTR's ``embedding_dim`` is one int or a list (one table dim per degree 2..order): its first value is
    ``embedding_dim`` here, the rest ``high_order_embedding_dims``."""
    common(t, embedding=False, shared_regularizer=True)
    order = t.set("model.params.order", "order", int)
    reuse = t.set("model.params.reuse_embedding", "reuse_embedding", bool)
    dims = t.get("embedding_dim")
    if isinstance(dims, list):
        if reuse or len(dims) != order - 1 or not all(isinstance(d, int) for d in dims):
            raise TranscriptionError(f"{t.where}: HOFM embedding_dim {dims!r} with order {order} and "
                                     f"reuse_embedding {reuse}: expected {order - 1} ints without reuse")
        t.put("model.params.embedding_dim", dims[0])
        t.put("model.params.high_order_embedding_dims", dims[1:])
    else:
        t.put("model.params.embedding_dim", int(dims))
        t.put("model.params.high_order_embedding_dims", [])


def rule_fibinet(t: Transcript) -> None:
    """FuxiCTR 1.x (every BARS FiBiNET run): one bilinear layer serves both embeddings and the excitation ends in
    a ReLU; 2.x learns two bilinear layers and has excitation_activation: no BARS run used it."""
    if version_tuple(t.readme.fuxictr_version) >= (2,):
        raise TranscriptionError(f"{t.where}: FuxiCTR {t.readme.fuxictr_version} FiBiNET: add the 2.x mapping "
                                 f"(bilinear_layers: separate, excitation_activation) first")
    rule_mlp(t)
    t.set("model.params.reduction_ratio", "reduction_ratio", float)
    t.set("model.params.bilinear_type", "bilinear_type", str)
    t.put("model.params.bilinear_layers", "shared")
    t.put("model.params.excitation_activation", "relu")


def rule_dlrm(t: Transcript) -> None:
    """The bottom MLP's keys are transcribed as logged; they matter only on a split with numeric fields
    (Criteo_x1), as in FuxiCTR, which builds no bottom MLP without them."""
    common(t)
    for part in ("top", "bottom"):
        t.set(f"model.params.{part}_mlp_units", f"{part}_mlp_units", _units)
        t.set(f"model.params.{part}_mlp_activation", f"{part}_mlp_activations", _act)
        t.set(f"model.params.{part}_mlp_dropout", f"{part}_mlp_dropout", _float)
    t.set("model.params.interaction_op", "interaction_op", str)
    t.set("model.params.batch_norm", "batch_norm", bool)


def rule_deepcrossing(t: Transcript) -> None:
    common(t)
    t.set("model.params.residual_blocks", "residual_blocks", _units)
    t.set("model.params.activation", "dnn_activations", _act)
    t.set("model.params.batch_norm", "batch_norm", bool)
    t.set("model.params.dropout", "net_dropout", _float)
    t.set("model.params.use_residual", "use_residual", bool)


# --- issue 11: MaskNet (FuxiCTR 1.2.1 on the x1 splits, 2.2.0 on the x4: the same function as 2.3.10)
MASKNET_TYPES = {"SerialMaskNet": "serial", "ParallelMaskNet": "parallel"}


def rule_masknet(t: Transcript) -> None:
    """FuxiCTR's ``model_type`` SerialMaskNet / ParallelMaskNet -> ``model_type`` serial / parallel; the parallel
    block keys are logged for serial runs too (FuxiCTR's defaults): inert there, null here."""
    common(t)
    kind = t.get("model_type")
    if kind not in MASKNET_TYPES:
        raise TranscriptionError(f"{t.where}: model_type {kind!r} is not one of {sorted(MASKNET_TYPES)}")
    t.put("model.params.model_type", MASKNET_TYPES[kind])
    t.set("model.params.dnn_hidden_units", "dnn_hidden_units", _units)
    t.set("model.params.activation", "dnn_hidden_activations", _act)
    t.set("model.params.reduction_ratio", "reduction_ratio", float)
    t.set("model.params.emb_layernorm", "emb_layernorm", bool)
    t.set("model.params.net_layernorm", "net_layernorm", bool)
    t.set("model.params.dropout", "net_dropout", _float)
    if kind == "ParallelMaskNet":
        t.set("model.params.parallel_num_blocks", "parallel_num_blocks", int)
        t.set("model.params.parallel_block_dim", "parallel_block_dim", int)
    else:
        t.mark_inert("parallel_num_blocks", "parallel_block_dim")
        t.put("model.params.parallel_num_blocks", None)
        t.put("model.params.parallel_block_dim", None)


def rule_fgcnn(t: Transcript) -> None:
    """kernel_heights / pooling_sizes / recombined_channels are logged as one int (every layer) or a list, as
    FuxiCTR accepts both: transcribed as logged."""
    common(t)
    t.set("model.params.share_embedding", "share_embedding", bool)
    t.set("model.params.channels", "channels", _units)
    for k in ("kernel_heights", "pooling_sizes", "recombined_channels"):
        t.set(f"model.params.{k}", k, lambda v: int(v) if isinstance(v, int) else _units(v))
    t.set("model.params.conv_activation", "conv_activation", _act)
    t.set("model.params.conv_batch_norm", "conv_batch_norm", bool)
    if t.set("model.params.dnn_hidden_units", "dnn_hidden_units", _units):
        t.set("model.params.activation", "dnn_activations", _act)
        t.set("model.params.batch_norm", "dnn_batch_norm", bool)
        t.set("model.params.dropout", "net_dropout", _float)
    else:
        _no_mlp(t, "dnn_activations", "dnn_batch_norm")


def _act_or_none(v: Any) -> str | None:
    return None if v in (None, "None", "") else str(v).lower()


def rule_finalnet(t: Transcript) -> None:
    """FinalNet 1B / 2B. The x1 runs used FuxiCTR 2.0.2's ``FINAL`` (``use_field_gate``; ``norm_type: BN`` is
    not a FINAL argument there, batch norm is its default ``batch_norm=True``; no ``residual_type`` key: its default
    concat); the x4 runs 2.2.0's ``FinalNet`` (``use_feature_gating``, ``batch_norm``, ``residual_type``). A 1B
    run's block2_* keys are inert (FuxiCTR builds no second block) and null here."""
    common(t)
    block_type = t.set("model.params.block_type", "block_type", str)
    if t.has("batch_norm"):
        t.set("model.params.batch_norm", "batch_norm", bool)
    else:
        t.check("norm_type", "BN", optional=False)
        t.put("model.params.batch_norm", True)
    t.set("model.params.use_feature_gating", ("use_feature_gating", "use_field_gate"), bool)
    blocks = (1, 2) if block_type == "2B" else (1,)
    for i in blocks:
        t.set(f"model.params.block{i}_hidden_units", f"block{i}_hidden_units", _units)
        t.set(f"model.params.block{i}_activation", f"block{i}_hidden_activations", _act_or_none)
        t.set(f"model.params.block{i}_dropout", f"block{i}_dropout", _float)
    if block_type == "1B":
        t.mark_inert("block2_hidden_units", "block2_hidden_activations", "block2_dropout")
        for k in ("block2_hidden_units", "block2_activation", "block2_dropout"):
            t.put(f"model.params.{k}", None)
    if t.has("residual_type"):
        t.set("model.params.residual_type", "residual_type", str)
    else:
        t.put("model.params.residual_type", "concat")


# registry name of the model config -> (FuxiCTR model class(es) the README may name, rule)
RULES: dict[str, tuple[str | tuple[str, ...], Callable[[Transcript], None]]] = {
    "lr": ("LR", rule_lr), "fm": ("FM", rule_fm), "dnn": ("DNN", rule_mlp), "widedeep": ("WideDeep", rule_mlp),
    "deepfm": ("DeepFM", rule_mlp), "dcn": ("DCN", rule_dcn), "dcnv2": ("DCNv2", rule_dcnv2),
    "xdeepfm": ("xDeepFM", rule_xdeepfm), "autoint": ("AutoInt", rule_autoint),
    "finalmlp": ("FinalMLP", rule_finalmlp),
    "aoanet": ("AOANet", rule_aoanet), "deepim": ("DeepIM", rule_deepim), "destine": ("DESTINE", rule_destine),
    "dssm": ("DSSM", rule_dssm), "edcn": ("EDCN", rule_edcn), "flen": ("FLEN", rule_flen), "sam": ("SAM", rule_sam),
    "afn": ("AFN", rule_afn), "afn_plus": ("AFN", rule_afn_plus), "ffm": (("FFM", "FFMv2", "FFM_v2"), rule_ffm),
    "hfm": ("HFM", rule_hfm), "hfm_plus": ("HFM", rule_hfm_plus), "fignn": ("FiGNN", rule_fignn),
    "ccpm": ("CCPM", rule_ccpm), "interhat": ("InterHAt", rule_interhat), "onn": ("ONN", rule_onn),
    "afm": ("AFM", rule_afm), "deepcrossing": ("DeepCrossing", rule_deepcrossing), "dlrm": ("DLRM", rule_dlrm),
    "fibinet": ("FiBiNET", rule_fibinet), "fmfm": ("FmFM", rule_fmfm), "fwfm": ("FwFM", rule_fwfm),
    "hofm": ("HOFM", rule_hofm), "ipnn": ("PNN", rule_mlp), "lorentzfm": ("LorentzFM", rule_shared_regularizer),
    "nfm": ("NFM", rule_mlp),
    "masknet": ("MaskNet", rule_masknet),
    "fgcnn": ("FGCNN", rule_fgcnn),
    "finalnet": (("FinalNet", "FINAL"), rule_finalnet),
}


# -------------------------------------------------------------------------------------------------- outputs
def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def model_configs() -> dict[str, dict[str, Any]]:
    """bars_name -> {id, name, params order} of every conf/model/<id>.yaml that has a bars_name."""
    out: dict[str, dict[str, Any]] = {}
    for p in sorted((CONF / "model").glob("*.yaml")):
        raw = load_yaml(p)
        if raw.get("bars_name"):
            if raw["bars_name"] in out:
                raise TranscriptionError(f"{p}: bars_name {raw['bars_name']!r} also in {out[raw['bars_name']]['path']}")
            out[raw["bars_name"]] = {"id": p.stem, "name": raw["name"], "params": list(raw["params"]), "path": p}
    return out


def ordered(values: dict[str, Any], param_order: list[str]) -> dict[str, Any]:
    train_order = list(load_yaml(CONF / "train" / "default.yaml"))
    def rank(k: str) -> tuple[int, int, str]:
        if k.startswith("model.params."):
            name = k.split(".", 2)[2]
            return (0, param_order.index(name) if name in param_order else 999, k)
        if k.startswith("train."):
            name = k.split(".", 1)[1]
            return (1, train_order.index(name) if name in train_order else 999, k)
        return (2, 0, k)
    return {k: values[k] for k in sorted(values, key=rank)}


HEADER = """\
# `preset=bars` for model {id} on {data}: BARS {bars_model} on {bars_split}.
# Generated by scripts/bars_presets.py from the run config printed in the Logs section of the README
# named by `source` (= the `source` column of bars/reference/bars_published.csv). Do not edit by hand:
# rerun the script where a BARS copy exists. set: the config keys the preset applies (over the defaults,
# under the command line). inert: BARS keys without effect in this structure (in FuxiCTR too).
# not_mapped: BARS knobs without a key here (docs/fidelity.md). checked: BARS values this project's
# fixed protocol matches.
"""


class _Dumper(yaml.SafeDumper):
    """Mappings in block style, lists (hidden units, contexts) in flow style: one key per line, diffable."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
_Dumper.add_representer(dict, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v.items(),
                                                               flow_style=False))


def transcribe_row(row: dict[str, str], repo: BarsRepo, models: dict[str, dict[str, Any]], commit: str | None
                   ) -> tuple[Path, str] | None:
    split, bars_model, source = row["dataset"], row["model"], row["source"]
    data = split.lower()
    data_path = CONF / "data" / f"{data}.yaml"
    if bars_model not in models or not data_path.exists():
        return None
    mc = models[bars_model]
    if mc["name"] not in RULES:
        raise TranscriptionError(f"{mc['path']}: no transcription rule for registry model {mc['name']!r} "
                                 f"(BARS {bars_model}); add one to scripts/bars_presets.py")
    fux_classes, rule = RULES[mc["name"]]
    fux_classes = (fux_classes,) if isinstance(fux_classes, str) else fux_classes
    repo_name, _, readme_path = source.partition(":")
    if repo_name != "reczoo/BARS" or not readme_path:
        raise TranscriptionError(f"{PUBLISHED}: {split} {bars_model}: source {source!r} is not a reczoo/BARS path")
    readme_text = read_source(repo, readme_path, row)
    readme = parse_readme(readme_path, readme_text)
    auc, ll = float(row["auc"]), float(row["logloss"])
    note = ""
    if readme_path in OTHER_RUN:
        readme, note = other_run(readme, readme_text, repo, OTHER_RUN[readme_path], auc, ll)
    t = Transcript(readme, load_yaml(data_path)["data"])  # conf/data/<d>.yaml: data:, protocol:, train: blocks
    got_class = t.get("model")
    if got_class not in fux_classes:
        want = " or ".join(repr(c) for c in fux_classes)
        raise TranscriptionError(f"{readme_path}: logged model {got_class!r}, expected {want} for {mc['id']}")
    rule(t)
    t.finish()
    def same(a: float | None, b: float | None) -> bool:
        return a is not None and b is not None and abs(a - auc) <= 5e-7 and abs(b - ll) <= 5e-7
    # the published value is the logged run's test line, or one of the README's runs of that same config (a
    # "Total n runs" table: BARS reran the logged config and published a rerun, e.g. AFN+ on Avazu_x1)
    if not same(readme.test_auc, readme.test_logloss) and not any(same(a, b) for a, b in readme.result_runs):
        raise TranscriptionError(f"{readme_path}: last test line AUC {readme.test_auc} logloss "
                                 f"{readme.test_logloss} differs from bars_published.csv ({auc}, {ll}), and no "
                                 f"run of its Results table has that value")
    doc: dict[str, Any] = {
        "preset": "bars", "data": data, "model": mc["id"], "bars_model": bars_model, "bars_split": split,
        "source": source,
    }
    if commit:
        doc["bars_commit"] = commit
    doc["fuxictr_version"] = readme.fuxictr_version
    doc["expid"] = readme.params.get("model_id")
    if got_class != fux_classes[0]:  # an equivalent FuxiCTR class (e.g. FFMv2 for FFM): say which one ran
        doc["fuxictr_model"] = got_class
    doc["published"] = {"test_auc": auc, "test_logloss": ll}
    doc["set"] = ordered(t.values, mc["params"])
    for k in ("not_mapped", "inert", "checked"):
        part = getattr(t, k)
        if part:
            doc[k] = dict(sorted(part.items()))
    text = HEADER.format(bars_model=bars_model, bars_split=split, id=mc["id"], data=data) + note
    text += yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=110, allow_unicode=True)
    return OUT / data / f"{mc['id']}.yaml", text


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def seq_module():
    """scripts/bars_presets_seq.py (the sequential boards' rules), bound to this module (its ``bars_presets``)."""
    import importlib.util

    if "bars_presets_seq" not in sys.modules:
        sys.modules.setdefault("bars_presets", sys.modules[__name__])
        spec = importlib.util.spec_from_file_location("bars_presets_seq", Path(__file__).with_name("bars_presets_seq.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bars_presets_seq"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["bars_presets_seq"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bars", default=os.environ.get("BARS_REPO"), help="BARS work tree or git dir ($BARS_REPO)")
    ap.add_argument("--rev", default="HEAD", help="revision to read from a git dir (default HEAD)")
    ap.add_argument("--check", action="store_true", help="compare with the committed presets; write nothing")
    args = ap.parse_args(argv)
    if not args.bars:
        print("bars_presets: error: no BARS copy: pass --bars <work tree or git dir> or set BARS_REPO",
              file=sys.stderr)
        return 2
    try:
        repo = BarsRepo(Path(args.bars), args.rev)
        commit = repo.commit()
        models = model_configs()
        with PUBLISHED.open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        outputs = [o for o in (transcribe_row(r, repo, models, commit) for r in rows) if o is not None]
        outputs += seq_module().transcribe_all(repo, models, commit)  # the four sequential boards
    except TranscriptionError as e:
        print(f"bars_presets: error: {e}", file=sys.stderr)
        return 1
    wanted = {p: text for p, text in outputs}
    existing = set(OUT.glob("*/*.yaml"))
    if args.check:
        bad = [f"differs: {p.relative_to(ROOT)}" for p, text in wanted.items()
               if not p.exists() or p.read_text(encoding="utf-8") != text]
        bad += [f"extra (no published row): {p.relative_to(ROOT)}" for p in sorted(existing - set(wanted))]
        for line in bad:
            print(f"bars_presets: {line}", file=sys.stderr)
        print(f"bars_presets: {len(wanted)} presets checked, {len(bad)} problems")
        return 1 if bad else 0
    for p, text in wanted.items():
        if not p.exists() or p.read_text(encoding="utf-8") != text:
            atomic_write(p, text)
    for p in sorted(existing - set(wanted)):
        p.unlink()
        print(f"bars_presets: removed {p.relative_to(ROOT)} (no published row)")
    print(f"bars_presets: {len(wanted)} presets in {OUT.relative_to(ROOT)} "
          f"({len({p.parent.name for p in wanted})} datasets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
