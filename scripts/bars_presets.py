#!/usr/bin/env python3
"""Transcribe BARS's published best configurations into presets: conf/presets/bars/<data>/<model id>.yaml.

For every row of bars/reference/bars_published.csv whose split is one of this project's datasets (the split id
in lower case names conf/data/<data>.yaml) and whose model is the ``bars_name`` of a model config
(conf/model/<id>.yaml), read the README named in the row's ``source`` column from a copy of the BARS repository,
take the run configuration its Logs section prints (the first ``{...}`` block: FuxiCTR's logged params), and map
every key to this project's config keys with the rules below. Nothing is dropped silently: each BARS key is

- mapped (``set:``) to a dotted key of the composed config (model.params.*, train.*, seed),
- ``inert``: it has no effect in that run's structure (e.g. net_dropout of a DCN without MLP), in FuxiCTR too,
- ``not_mapped``: a knob with no counterpart key here (listed in docs/fidelity.md),
- ``checked``: it must equal what this project's protocol does (e.g. shuffle True, evaluation every epoch,
  min_categr_count == the data config's min_count), else the script stops,
- or infrastructure (paths, GPU, logging, data files: the data config is the truth for those).

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
    return Readme(path, params, ver.group(1), auc, ll)


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


def common(t: Transcript, *, embedding: bool = True, shared_regularizer: bool = False) -> None:
    """Training-level keys every BARS run has."""
    if embedding:
        t.set("model.params.embedding_dim", "embedding_dim", int)
    if shared_regularizer:  # FuxiCTR LR/FM: one `regularizer` for embedding tables and every other weight
        t.set("train.embedding_regularizer", "regularizer", _float)
        t.values["train.net_regularizer"] = t.values["train.embedding_regularizer"]
    else:
        t.set("train.embedding_regularizer", "embedding_regularizer", _float)
        t.set("train.net_regularizer", "net_regularizer", _float)
    t.set("train.batch_size", "batch_size", int)
    t.set("train.learning_rate", "learning_rate", float)
    opt = t.get("optimizer")
    if str(opt).lower() != "adam":
        raise TranscriptionError(f"{t.where}: optimizer {opt!r}: only adam exists here")
    t.put("train.optimizer", "adam")
    t.set("train.max_epochs", "epochs", int)
    t.set("train.max_strikes", ("patience", "early_stop_patience"), int)
    _monitor(t)
    t.set("seed", "seed", int)
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


# registry name of the model config -> (FuxiCTR model class the README must name, rule)
RULES: dict[str, tuple[str, Callable[[Transcript], None]]] = {
    "lr": ("LR", rule_lr), "fm": ("FM", rule_fm), "dnn": ("DNN", rule_mlp), "widedeep": ("WideDeep", rule_mlp),
    "deepfm": ("DeepFM", rule_mlp), "dcn": ("DCN", rule_dcn), "dcnv2": ("DCNv2", rule_dcnv2),
    "xdeepfm": ("xDeepFM", rule_xdeepfm), "autoint": ("AutoInt", rule_autoint),
    "finalmlp": ("FinalMLP", rule_finalmlp),
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
    fux_class, rule = RULES[mc["name"]]
    repo_name, _, readme_path = source.partition(":")
    if repo_name != "reczoo/BARS" or not readme_path:
        raise TranscriptionError(f"{PUBLISHED}: {split} {bars_model}: source {source!r} is not a reczoo/BARS path")
    readme = parse_readme(readme_path, repo.read(readme_path))
    t = Transcript(readme, load_yaml(data_path)["data"])  # conf/data/<d>.yaml: data:, protocol:, train: blocks
    got_class = t.get("model")
    if got_class != fux_class:
        raise TranscriptionError(f"{readme_path}: logged model {got_class!r}, expected {fux_class!r} for {mc['id']}")
    rule(t)
    t.finish()
    auc, ll = float(row["auc"]), float(row["logloss"])
    if readme.test_auc is None or abs(readme.test_auc - auc) > 5e-7 or abs(readme.test_logloss - ll) > 5e-7:
        raise TranscriptionError(f"{readme_path}: last test line AUC {readme.test_auc} logloss "
                                 f"{readme.test_logloss} differs from bars_published.csv ({auc}, {ll})")
    doc: dict[str, Any] = {
        "preset": "bars", "data": data, "model": mc["id"], "bars_model": bars_model, "bars_split": split,
        "source": source,
    }
    if commit:
        doc["bars_commit"] = commit
    doc["fuxictr_version"] = readme.fuxictr_version
    doc["expid"] = readme.params.get("model_id")
    doc["published"] = {"test_auc": auc, "test_logloss": ll}
    doc["set"] = ordered(t.values, mc["params"])
    for k in ("not_mapped", "inert", "checked"):
        part = getattr(t, k)
        if part:
            doc[k] = dict(sorted(part.items()))
    text = HEADER.format(bars_model=bars_model, bars_split=split, id=mc["id"], data=data)
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
