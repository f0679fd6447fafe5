"""The sequential half of scripts/bars_presets.py: BARS's four behaviour-sequence boards (TaobaoAd_x1,
AmazonElectronics_x1, KuaiVideo_x1, MicroVideo1.7M_x1) -> conf/presets/bars/<data>/<model id>.yaml.

The rows are bars/reference/bars_published_seq.csv (gAUC, AUC, logloss of each README's test line, FuxiCTR 2.0.x
runs validated on the test set). ``scripts/bars_presets.py`` calls :func:`transcribe_row` for every row (so
``--check`` covers both halves and neither removes the other's files); the reading of BARS (a work tree or a git
dir), the :class:`Transcript` bookkeeping and the output format are that script's. What differs here:

- the split -> data config is by ``data.bars_split`` (MicroVideo1.7M_x1 is conf/data/microvideo_x1.yaml);
- the model -> model config is by ``bars_name``, except BARS's ``YoutubeDNN`` rows: its DNN (the README folder is
  ranking/ctr/DNN/DNN_<split>) on the pooled histories, transcribed for model config ``dnn`` (bars_name DNN) and
  named ``YoutubeDNN`` in the preset, as the board names it; the board's ``DCN-V2`` is model config ``dcnv2``
  (bars_name DCNv2, the flat boards' spelling) (:data:`MODEL_ALIASES`);
- :func:`seq_common` replaces the flat rules' ``common``: ``monitor`` may name ``gAUC`` (-> ``val_gauc``) or
  weight ``AUC`` and ``gAUC``; ``metrics`` must be gAUC, AUC, logloss (gAUC needs the data config's
  ``group_column``, which must be the run's ``group_id`` / ``group_index`` meta field or the field it copies);
  ``valid_data`` must be the test file (protocol bars-seq: ``data.validation: test``); ``feature_specs`` (FuxiCTR's
  per-field ``feature_encoder``) is checked against what this project does (a masked mean of every sequence field no
  pair attends, attended sequences unpooled), and its ``nn.Linear(64, 64, bias=False)`` projections of the
  pretrained KuaiVideo / MicroVideo tables, which have no counterpart here, are ``not_mapped`` (docs/fidelity.md);
- the run's ``feature_cols`` (infrastructure for the flat boards) are compared with the data config: every active
  field is there with the same type, sequence ``max_len`` / ``padding`` / ``share_embedding``, per-field
  ``min_categr_count``, ``copy_from`` copies and ``pretrained_emb`` file; a difference stops the script;
- the published values are checked against the README's final test line and its Results table (gAUC, AUC, logloss).

Models not on main yet (:data:`PENDING_MODELS`) have their rules here, switched off with the reason; a row of such a
model is skipped until its entry is removed.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bars_presets as base  # bars_presets.seq_module() binds it to the calling script
import yaml

PUBLISHED_SEQ = base.ROOT / "bars" / "reference" / "bars_published_seq.csv"
TranscriptionError = base.TranscriptionError

# BARS's board name -> the bars_name of the model config it is a run of
MODEL_ALIASES = {"YoutubeDNN": "DNN", "DCN-V2": "DCNv2"}
# BARS models whose rules are written but off: the model is not on main yet (registry name -> reason). Remove the
# entry once the model merges with `bars_name` set, then rerun the script and update tests/test_presets.py's counts.
PENDING_MODELS = {
}

MEAN_POOLING = "layers.MaskedAveragePooling()"
# FuxiCTR 2.0.x feature encoders and what they are here: a masked mean (this project's pooling of a sequence no pair
# attends) or a bias-free linear map of the looked-up vectors (no counterpart: not_mapped)
LINEAR = re.compile(r"nn\.Linear\((\d+), (\d+), bias=False\)")


# ----------------------------------------------------------------------------------------------- the split
def seq_data_configs() -> dict[str, tuple[str, dict[str, Any]]]:
    """BARS split (lower case, as the CSV's dataset column) -> (data config name, its ``data:`` block)."""
    out = {}
    for p in sorted((base.CONF / "data").glob("*.yaml")):
        raw = base.load_yaml(p)
        split = (raw.get("data") or {}).get("bars_split")
        if split:
            out[str(split).lower()] = (p.stem, raw["data"])
    return out


def _names(v: Any) -> list[str]:
    return list(v) if isinstance(v, list) else [v]


def _feature_cols(t: base.Transcript) -> dict[str, dict[str, Any]]:
    """The run's active ``feature_cols`` by field name (a list name expands to one entry per field)."""
    cols = t.readme.params.get("feature_cols")
    if not isinstance(cols, list):
        raise TranscriptionError(f"{t.where}: feature_cols {cols!r} is not a list of field specs")
    out: dict[str, dict[str, Any]] = {}
    for col in cols:
        if not col.get("active", True):
            continue
        for n in _names(col["name"]):
            out[n] = col
    return out


def _field_option(data: dict[str, Any], field: str, key: str, default: Any = None) -> Any:
    return ((data.get("field_options") or {}).get(field) or {}).get(key, default)


def check_layout(t: base.Transcript) -> None:
    """The run's feature_cols against the data config (the data config is what bars prepares); a difference is a
    :class:`TranscriptionError` naming the field and the key."""
    data = t.data_cfg
    cols = _feature_cols(t)
    kinds = {k: set(data.get(k) or []) for k in ("categorical", "numeric", "sequence", "meta")}
    copies = data.get("copies") or {}
    where = f"{t.where}: feature_cols vs conf/data/{data['name']}.yaml"
    for name, col in cols.items():
        kind = col["type"]
        pre = col.get("preprocess")
        src = re.fullmatch(r"copy_from\((\w+)\)", pre).group(1) if pre else None
        if pre and not src:
            raise TranscriptionError(f"{where}: {name}: preprocess {pre!r} (only copy_from(<column>) is known)")
        if kind == "meta":  # a group id: the data config's group column, or a copy of it
            if name not in kinds["meta"] and name != data.get("group_column") and src != data.get("group_column"):
                raise TranscriptionError(f"{where}: meta field {name!r} is neither data.meta, data.group_column "
                                         f"nor a copy of it")
            continue
        if name not in kinds.get(kind, set()):
            raise TranscriptionError(f"{where}: {kind} field {name!r} is not in data.{kind}")
        if src and copies.get(name) != src:
            raise TranscriptionError(f"{where}: {name} is copy_from({src}); data.copies has {copies.get(name)!r}")
        min_count = col.get("min_categr_count", t.readme.params.get("min_categr_count"))
        ours = _field_option(data, name, "min_count", data.get("min_count"))
        if kind != "numeric" and min_count is not None and int(min_count) != int(ours):
            raise TranscriptionError(f"{where}: {name}: min_categr_count {min_count}, ours {ours}")
        share = col.get("share_embedding")
        if share != _field_option(data, name, "share_embedding"):
            raise TranscriptionError(f"{where}: {name}: share_embedding {share!r}, ours "
                                     f"{_field_option(data, name, 'share_embedding')!r}")
        pretrained = col.get("pretrained_emb")
        # a field sharing a table reads its owner's (FuxiCTR builds no table for it): the owner's file counts
        ours_p = _field_option(data, share or name, "pretrained")
        if (Path(pretrained).name if pretrained else None) != ours_p:
            raise TranscriptionError(f"{where}: {name}: pretrained_emb {pretrained!r}, ours {ours_p!r}")
        if pretrained and bool(col.get("freeze_emb", True)) != bool(_field_option(data, share or name,
                                                                                   "freeze_pretrained", True)):
            raise TranscriptionError(f"{where}: {name}: freeze_emb {col.get('freeze_emb', True)}, ours differ")
        if kind == "sequence":
            if int(col["max_len"]) != int(_field_option(data, name, "max_len", data.get("max_len"))):
                raise TranscriptionError(f"{where}: {name}: max_len {col['max_len']}, ours {data.get('max_len')}")
            padding = col.get("padding", "post")
            if padding != _field_option(data, name, "padding", "post"):
                if _field_option(data, name, "padding") is None or padding not in ("pre", "post"):
                    raise TranscriptionError(f"{where}: {name}: padding {padding!r}, ours "
                                             f"{_field_option(data, name, 'padding', 'post')!r}")
                # the run encoded its own copy of the data (FuxiCTR: another dataset_id): the preset sets the
                # field's padding (and so truncation side) over the data config's; a separately prepared dataset
                t.put(f"data.field_options.{name}.padding", padding)
            if col.get("splitter") != data.get("sequence_sep"):
                raise TranscriptionError(f"{where}: {name}: splitter {col.get('splitter')!r}, ours "
                                         f"{data.get('sequence_sep')!r}")
    ours_fields = kinds["categorical"] | kinds["numeric"] | kinds["sequence"]
    missing = sorted(ours_fields - set(cols))
    if missing:
        raise TranscriptionError(f"{where}: data config fields {missing} are not active in the run")
    label = t.readme.params.get("label_col") or {}
    if label.get("name") != data.get("label"):
        raise TranscriptionError(f"{where}: label {label.get('name')!r}, ours {data.get('label')!r}")


def _encoder(where: str, field: str, v: Any) -> tuple[bool, list[str]]:
    """A FuxiCTR feature_encoder value -> (masked mean pooling?, linear projections)."""
    pooled, linears = False, []
    for e in ([] if v in (None, "None", "none", "null") else _names(v)):
        if e == MEAN_POOLING and not pooled and not linears:
            pooled = True
        elif isinstance(e, str) and LINEAR.fullmatch(e):
            linears.append(e)
        else:
            raise TranscriptionError(f"{where}: feature_encoder {v!r} of {field}: only {MEAN_POOLING}, then "
                                     f"nn.Linear(d, d, bias=False), are known")
    return pooled, linears


def check_encoders(t: base.Transcript, attended: set[str]) -> None:
    """Each field's feature encoder (``feature_cols``, overridden by ``feature_specs``; FuxiCTR 2.0's default for a
    sequence is MaskedAveragePooling) against this project: attended sequences unpooled, other sequences pooled by
    a masked mean, nothing else pooled. A linear projection is ``not_mapped`` (the whole ``feature_specs``)."""
    cols = _feature_cols(t)
    enc = {n: c.get("feature_encoder", MEAN_POOLING if c["type"] == "sequence" else None) for n, c in cols.items()}
    specs = t.get("feature_specs") if t.has("feature_specs") else None
    for s in specs or []:
        for n in _names(s["name"]):
            if n not in cols:
                raise TranscriptionError(f"{t.where}: feature_specs names {n!r}, not an active field")
            enc[n] = s.get("feature_encoder")
    linears = {}
    for n, v in enc.items():
        pooled, lin = _encoder(t.where, n, v)
        want = cols[n]["type"] == "sequence" and n not in attended
        if pooled != want:
            raise TranscriptionError(f"{t.where}: {n}: feature encoder {v!r}; here a {cols[n]['type']} field "
                                     f"{'attended by the model' if n in attended else ''} is "
                                     f"{'pooled by a masked mean' if want else 'not pooled'}")
        if lin:
            linears[n] = lin
    if linears:
        t.not_mapped["feature_specs"] = specs
    elif specs is not None:
        t.checked["feature_specs"] = specs


# ------------------------------------------------------------------------------------------- the protocol
MONITOR_NAMES = {"AUC": "val_auc", "gAUC": "val_gauc", "logloss": "val_logloss"}
MONITOR_MODES = {"AUC": "max", "gAUC": "max", "logloss": "min"}


def _monitor(t: base.Transcript) -> None:
    m, mode = t.get("monitor"), t.get("monitor_mode")
    if isinstance(m, str) and m in MONITOR_NAMES and mode == MONITOR_MODES[m]:
        t.put("train.monitor", MONITOR_NAMES[m])
    elif isinstance(m, dict) and m and not set(m) - set(MONITOR_NAMES) and mode == "max":
        t.put("train.monitor", {MONITOR_NAMES[k]: int(w) if float(w).is_integer() else float(w) for k, w in m.items()})
    else:
        raise TranscriptionError(f"{t.where}: monitor {m!r} with monitor_mode {mode!r}: expected AUC, gAUC or "
                                 f"logloss (or AUC/gAUC/logloss weights, maximised)")
    t.checked["monitor_mode"] = mode


def seq_common(t: base.Transcript, *, embedding: bool = True, shared_regularizer: bool = False,
               attended: tuple[str, ...] = ()) -> None:
    """The training-level keys of a sequential-board run (the flat rules' ``common`` with gAUC, the group id, the
    valid = test protocol and the feature encoders)."""
    data = t.data_cfg
    base.training_keys(t, _monitor, embedding=embedding, shared_regularizer=shared_regularizer)
    loss = t.get("loss")
    if loss not in base.LOSSES:
        raise TranscriptionError(f"{t.where}: loss {loss!r}; only {sorted(base.LOSSES)} are known here")
    t.put("train.loss", base.LOSSES[loss])
    for k in ("task", "shuffle", "save_best_only", "every_x_epochs", "eval_interval", "eval_steps",
              "embedding_dropout"):
        t.check(k, {"task": "binary_classification", "shuffle": True, "save_best_only": True, "every_x_epochs": 1,
                    "eval_interval": 1, "eval_steps": None, "embedding_dropout": 0}[k])
    for k in ("feature_config", "use_features", "ordered_features"):
        t.check(k, None)
    got = t.get("metrics")
    if sorted(got) != ["AUC", "gAUC", "logloss"]:
        raise TranscriptionError(f"{t.where}: metrics {got!r}: expected gAUC, AUC and logloss")
    t.checked["metrics"] = got
    # gAUC's groups: the data config's group column is the run's group field or the column it copies
    group_key = "group_id" if t.has("group_id") else "group_index"
    group = t.get(group_key)
    col = _feature_cols(t).get(group, {})
    src = re.fullmatch(r"copy_from\((\w+)\)", col.get("preprocess") or "")
    if data.get("group_column") not in (group, src.group(1) if src else None):
        raise TranscriptionError(f"{t.where}: {group_key} {group!r} (a copy of {src.group(1) if src else None!r})"
                                 f" is not data.group_column {data.get('group_column')!r}")
    t.checked[group_key] = group
    # protocol bars-seq: BARS validated on the test file
    if t.readme.params.get("valid_data") != t.readme.params.get("test_data") or data.get("validation") != "test":
        raise TranscriptionError(f"{t.where}: valid_data {t.readme.params.get('valid_data')!r} / test_data "
                                 f"{t.readme.params.get('test_data')!r} with data.validation "
                                 f"{data.get('validation')!r}: the bars-seq protocol is valid = test")
    t.checked["valid_data"] = t.readme.params["valid_data"]
    t.check("min_categr_count", int(data["min_count"]), optional=False)
    check_layout(t)
    check_encoders(t, set(attended))
    t.used.add("model_id")


@contextmanager
def _as_seq_common(**kw: Any):
    """Run a flat rule (bars_presets.rule_*) with :func:`seq_common` in place of its ``common``."""
    saved = base.common
    base.common = lambda t, **k: seq_common(t, **{**k, **kw})
    try:
        yield
    finally:
        base.common = saved


def flat(rule: Callable[[base.Transcript], None]) -> Callable[[base.Transcript], None]:
    """A flat board's rule whose keys are the same in the FuxiCTR 2.0.x runs of the sequential boards."""
    def run(t: base.Transcript) -> None:
        with _as_seq_common():
            rule(t)
    run.__name__ = f"seq_{rule.__name__}"
    return run


# ------------------------------------------------------------------------------------------------ the rules
def rule_dcn(t: base.Transcript) -> None:  # FuxiCTR 2.x: num_cross_layers (1.x: crossing_layers)
    seq_common(t)
    base._deep(t, "dnn_hidden_units", "dnn_activations")
    t.set("model.params.num_cross_layers", ("num_cross_layers", "crossing_layers"), int)


def rule_xdeepfm(t: base.Transcript) -> None:  # FuxiCTR 2.x: cin_hidden_units (1.x: cin_layer_units)
    seq_common(t)
    t.set("model.params.cin_hidden_units", ("cin_hidden_units", "cin_layer_units"), base._units)
    base._deep(t, "dnn_hidden_units", "hidden_activations")


def _pairs(t: base.Transcript, target_key: str, sequence_key: str) -> tuple[list[list[str]], list[list[str]]]:
    """FuxiCTR's target / sequence fields (a tuple, a field name, or a list of those) -> target_fields,
    sequence_fields (lists of field lists)."""
    def norm(v: Any) -> list[list[str]]:
        items = v if isinstance(v, list) else [v]
        out = [list(x) if isinstance(x, tuple) else [x] for x in items]
        if not out or not all(isinstance(n, str) for x in out for n in x):
            raise TranscriptionError(f"{t.where}: {target_key} / {sequence_key} {v!r}: expected field names")
        return out
    targets, seqs = norm(t.get(target_key)), norm(t.get(sequence_key))
    if len(targets) != len(seqs) or any(len(a) != len(b) for a, b in zip(targets, seqs, strict=True)):
        raise TranscriptionError(f"{t.where}: {target_key} {targets} and {sequence_key} {seqs} do not pair up")
    t.put("model.params.target_fields", targets)
    t.put("model.params.sequence_fields", seqs)
    return targets, seqs


def rule_din(t: base.Transcript) -> None:
    _, seqs = _pairs(t, "din_target_field", "din_sequence_field")
    seq_common(t, attended=tuple(n for s in seqs for n in s))
    t.set("model.params.dnn_hidden_units", "dnn_hidden_units", base._units)
    t.set("model.params.activation", "dnn_activations", base._act)
    t.set("model.params.attention_hidden_units", "attention_hidden_units", base._units)
    t.set("model.params.attention_activation", "attention_hidden_activations", base._act)
    t.set("model.params.attention_output_activation", "attention_output_activation", base._act_or_none)
    t.set("model.params.attention_dropout", "attention_dropout", base._float)
    t.set("model.params.dropout", "net_dropout", base._float)
    t.set("model.params.batch_norm", "batch_norm", bool)
    t.set("model.params.use_softmax", "din_use_softmax", bool)


def rule_bst(t: base.Transcript) -> None:
    _, seqs = _pairs(t, "bst_target_field", "bst_sequence_field")
    seq_common(t, attended=tuple(n for s in seqs for n in s))
    t.set("model.params.dnn_hidden_units", "dnn_hidden_units", base._units)
    t.set("model.params.activation", "dnn_activations", base._act)
    t.set("model.params.num_heads", "num_heads", int)
    t.set("model.params.transformer_layers", "stacked_transformer_layers", int)
    t.set("model.params.attention_dropout", "attention_dropout", base._float)
    t.set("model.params.dropout", "net_dropout", base._float)
    t.set("model.params.batch_norm", "batch_norm", bool)
    t.set("model.params.layer_norm", "layer_norm", bool)
    t.set("model.params.use_residual", "use_residual", bool)
    t.set("model.params.seq_pooling", "seq_pooling_type", str)
    t.set("model.params.use_position_emb", "use_position_emb", bool)
    t.set("model.params.use_causal_mask", "use_causal_mask", bool)


def rule_ppnet(t: base.Transcript) -> None:
    """``gate_priors`` (field names, as logged) replace the model config's ``gate_prior_groups`` (ours)."""
    seq_common(t)
    t.set("model.params.gate_emb_dim", "gate_emb_dim", int)
    t.set("model.params.gate_priors", "gate_priors", lambda v: [str(x) for x in _names(v)])
    t.put("model.params.gate_prior_groups", [])
    t.set("model.params.gate_hidden_dim", "gate_hidden_dim", int)
    if not base._deep(t, "hidden_units", "hidden_activations", "hidden_units"):
        raise TranscriptionError(f"{t.where}: PPNet without hidden units")


APG_MODES = {"self-wise": "self-wise", "group-wise": "group-wise", "mix-wise": "group-wise"}


def rule_apg_dcnv2(t: base.Transcript) -> None:
    """FuxiCTR's ``hypernet_config`` dict -> hypernet_*; ``condition_mode: mix-wise`` computes exactly group-wise in
    FuxiCTR (docs/fidelity.md, APG) -> group-wise; ``overparam_p: None`` -> [] (none)."""
    seq_common(t)
    structure = t.set("model.params.model_structure", "model_structure", str)
    if structure != "parallel":
        raise TranscriptionError(f"{t.where}: APG_DCNv2 model_structure {structure!r}: only parallel is mapped")
    t.check("use_low_rank_mixture", False, optional=False)
    t.mark_inert("low_rank", "num_experts", "stacked_dnn_hidden_units")
    t.set("model.params.num_cross_layers", "num_cross_layers", int)
    if not base._deep(t, "parallel_dnn_hidden_units", "dnn_activations", "parallel_dnn_hidden_units"):
        raise TranscriptionError(f"{t.where}: parallel APG_DCNv2 without parallel_dnn_hidden_units")
    hyper = t.get("hypernet_config")
    if not isinstance(hyper, dict) or set(hyper) != {"dropout_rates", "hidden_activations", "hidden_units"}:
        raise TranscriptionError(f"{t.where}: hypernet_config {hyper!r}: expected hidden_units, "
                                 f"hidden_activations, dropout_rates")
    t.put("model.params.hypernet_hidden_units", base._units(hyper["hidden_units"]))
    t.put("model.params.hypernet_activation", base._act(hyper["hidden_activations"]))
    t.put("model.params.hypernet_dropout", base._float(hyper["dropout_rates"]))
    t.set("model.params.condition_features", "condition_features",
          lambda v: [] if v in (None, "None") else [str(x) for x in _names(v)])
    mode = t.get("condition_mode")
    if mode not in APG_MODES:
        raise TranscriptionError(f"{t.where}: condition_mode {mode!r} is not one of {sorted(APG_MODES)}")
    t.put("model.params.condition_mode", APG_MODES[mode])
    t.set("model.params.new_condition_emb", "new_condition_emb", bool)
    t.set("model.params.rank_k", "rank_k", base._units)
    t.set("model.params.overparam_p", "overparam_p", base._units)
    t.set("model.params.generate_bias", "generate_bias", bool)


# --- DIEN / DMIN / DMR (written while the models were pending): the keys of their BARS runs, mapped to the names
# of their model configs (FuxiCTR's, as DIN / BST here), checked against the merged configs.
def rule_dien(t: base.Transcript) -> None:
    _, seqs = _pairs(t, "dien_target_field", "dien_sequence_field")
    seq_common(t, attended=tuple(n for s in seqs for n in s))
    neg = t.get("dien_neg_seq_field")
    if neg not in (None, [], "None"):
        raise TranscriptionError(f"{t.where}: dien_neg_seq_field {neg!r}: BARS ran none; no mapping yet")
    t.checked["dien_neg_seq_field"] = neg
    t.set("model.params.gru_type", "gru_type", str)
    t.set("model.params.enable_sum_pooling", "enable_sum_pooling", bool)
    t.set("model.params.attention_type", "attention_type", str)
    t.set("model.params.attention_hidden_units", "attention_hidden_units", base._units)
    t.set("model.params.attention_activation", "attention_activation", base._act)
    t.set("model.params.attention_dropout", "attention_dropout", base._float)
    t.set("model.params.use_attention_softmax", "use_attention_softmax", bool)
    t.set("model.params.aux_loss_alpha", "aux_loss_alpha", float)
    t.set("model.params.aux_hidden_units", "aux_hidden_units", base._units)
    t.set("model.params.aux_activation", "aux_activation", base._act)
    t.set("model.params.dnn_hidden_units", "dnn_hidden_units", base._units)
    t.set("model.params.activation", "dnn_activations", base._act)
    t.set("model.params.dropout", "net_dropout", base._float)
    t.set("model.params.batch_norm", "batch_norm", bool)


def _dm(t: base.Transcript) -> None:  # DMIN and DMR share FuxiCTR's target_field / sequence_field keys
    _, seqs = _pairs(t, "target_field", "sequence_field")
    seq_common(t, attended=tuple(n for s in seqs for n in s))
    neg = t.get("neg_seq_field")
    if neg not in (None, [], "None"):
        raise TranscriptionError(f"{t.where}: neg_seq_field {neg!r}: BARS ran none; no mapping yet")
    t.checked["neg_seq_field"] = neg
    t.set("model.params.dnn_hidden_units", "dnn_hidden_units", base._units)
    t.set("model.params.activation", "dnn_activations", base._act)
    t.set("model.params.dropout", "net_dropout", base._float)
    t.set("model.params.batch_norm", "batch_norm", bool)
    t.set("model.params.attention_hidden_units", "attention_hidden_units", base._units)
    t.set("model.params.attention_activation", "attention_activation", base._act)
    t.set("model.params.attention_dropout", "attention_dropout", base._float)
    t.set("model.params.use_pos_emb", "use_pos_emb", bool)
    t.set("model.params.pos_emb_dim", "pos_emb_dim", int)
    t.set("model.params.enable_sum_pooling", "enable_sum_pooling", bool)


def rule_dmin(t: base.Transcript) -> None:
    _dm(t)
    t.set("model.params.bn_only_once", "bn_only_once", bool)
    t.set("model.params.num_heads", "num_heads", int)
    t.set("model.params.layer_norm", "layer_norm", bool)
    t.set("model.params.use_behavior_refiner", "use_behavior_refiner", bool)
    t.set("model.params.aux_loss_lambda", "aux_loss_lambda", float)
    t.set("model.params.aux_hidden_units", "aux_hidden_units", base._units)
    t.set("model.params.aux_activation", "aux_activation", base._act)


def rule_dmr(t: base.Transcript) -> None:
    _dm(t)
    t.check("context_field", None, optional=False)
    t.check("bn_only_once", False)  # no key in bars's DMR (false in every BARS run: docs/fidelity.md, DMR)
    t.set("model.params.enable_u2i_rel", "enable_u2i_rel", bool)
    t.set("model.params.enable_i2i_rel", "enable_i2i_rel", bool)
    t.set("model.params.aux_loss_beta", "aux_loss_beta", float)


# registry name of the model config -> (FuxiCTR model class the README names, rule)
RULES: dict[str, tuple[str, Callable[[base.Transcript], None]]] = {
    "fm": ("FM", flat(base.rule_fm)), "fmfm": ("FmFM", flat(base.rule_fmfm)), "dnn": ("DNN", flat(base.rule_mlp)),
    "deepfm": ("DeepFM", flat(base.rule_mlp)), "dcn": ("DCN", rule_dcn), "dcnv2": ("DCNv2", flat(base.rule_dcnv2)),
    "xdeepfm": ("xDeepFM", rule_xdeepfm), "autoint": ("AutoInt", flat(base.rule_autoint)),
    "aoanet": ("AOANet", flat(base.rule_aoanet)), "din": ("DIN", rule_din), "bst": ("BST", rule_bst),
    "ppnet": ("PPNet", rule_ppnet), "apg_dcnv2": ("APG_DCNv2", rule_apg_dcnv2),
    "dien": ("DIEN", rule_dien), "dmin": ("DMIN", rule_dmin), "dmr": ("DMR", rule_dmr),
}


# ----------------------------------------------------------------------------------------------- the README
def readme_metrics(text: str) -> tuple[tuple[float, float, float] | None, list[tuple[float, ...]]]:
    """(gAUC, AUC, logloss) of the log's last metrics line (the test evaluation), and the Results table's rows."""
    logs = text.split("### Logs", 1)[1]
    lines = re.findall(r"\[Metrics\] (?:test )?gAUC: ([\d.]+) - AUC: ([\d.]+) - logloss: ([\d.]+)", logs)
    last = tuple(float(x) for x in lines[-1]) if lines else None
    results = text.split("### Results", 1)[1].split("### Logs", 1)[0] if "### Results" in text else ""
    rows = [tuple(float(x) for x in m) for m in
            re.findall(r"^\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|", results, re.MULTILINE)]
    return last, rows


SEQ_HEADER = """\
# `preset=bars` for model {id} on {data}: BARS {bars_model} on {bars_split} (a sequential board: BARS validated
# on the test set, protocol bars-seq). Generated by scripts/bars_presets.py (rules: scripts/bars_presets_seq.py)
# from the run config printed in the Logs section of the README named by `source` (= the `source` column of
# bars/reference/bars_published_seq.csv). Do not edit by hand: rerun the script where a BARS copy exists.
# set: the config keys the preset applies (over the defaults, under the command line). inert: BARS keys without
# effect in this structure (in FuxiCTR too). not_mapped: BARS knobs without a key here (docs/fidelity.md).
# checked: BARS values this project's fixed protocol and data config match.
"""


def model_config_for(bars_model: str, models: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    return models.get(MODEL_ALIASES.get(bars_model, bars_model))


def transcribe_row(row: dict[str, str], repo: base.BarsRepo, models: dict[str, dict[str, Any]],
                   commit: str | None, datas: dict[str, tuple[str, dict[str, Any]]] | None = None
                   ) -> tuple[Path, str] | None:
    """One row of bars_published_seq.csv -> (preset path, text), or None (no data config / model config here, or a
    pending model)."""
    datas = seq_data_configs() if datas is None else datas
    bars_model, source = row["model"], row["source"]
    mc = model_config_for(bars_model, models)
    if row["dataset"] not in datas or mc is None:
        return None
    if mc["name"] in PENDING_MODELS:
        return None
    data, data_cfg = datas[row["dataset"]]
    if mc["name"] not in RULES:
        raise TranscriptionError(f"{mc['path']}: no sequential-board rule for registry model {mc['name']!r} (BARS "
                                 f"{bars_model}); add one to scripts/bars_presets_seq.py")
    fux_class, rule = RULES[mc["name"]]
    repo_name, _, readme_path = source.partition(":")
    if repo_name != "reczoo/BARS" or not readme_path.endswith("/README.md"):
        raise TranscriptionError(f"{PUBLISHED_SEQ}: {row['dataset']} {bars_model}: source {source!r} is not a "
                                 f"reczoo/BARS README")
    text = base.read_source(repo, readme_path, row)
    readme = base.parse_readme(readme_path, text)
    t = base.Transcript(readme, data_cfg)
    got = t.get("model")
    if got != fux_class:
        raise TranscriptionError(f"{readme_path}: logged model {got!r}, expected {fux_class!r} for {mc['id']}")
    rule(t)
    t.finish()
    want = (float(row["gauc"]), float(row["auc"]), float(row["logloss"]))
    last, table = readme_metrics(text)
    def same(got: tuple[float, ...] | None) -> bool:
        return got is not None and all(abs(a - b) <= 5e-7 for a, b in zip(got, want, strict=True))
    if not same(last) or not any(same(r) for r in table):
        raise TranscriptionError(f"{readme_path}: test line {last} / Results table {table} differ from "
                                 f"bars_published_seq.csv (gAUC, AUC, logloss) {want}")
    if readme.fuxictr_version != row["fuxictr_version"] or int(t.values["seed"]) != int(row["seed"]):
        raise TranscriptionError(f"{readme_path}: FuxiCTR {readme.fuxictr_version} seed {t.values['seed']}; "
                                 f"bars_published_seq.csv says {row['fuxictr_version']} seed {row['seed']}")
    if int(t.values.get("model.params.embedding_dim", row["embedding_dim"])) != int(row["embedding_dim"]):
        raise TranscriptionError(f"{readme_path}: embedding_dim differs from bars_published_seq.csv")
    split = data_cfg["bars_split"]
    doc: dict[str, Any] = {"preset": "bars", "data": data, "model": mc["id"], "bars_model": bars_model,
                           "bars_split": split, "source": source}
    if commit:
        doc["bars_commit"] = commit
    doc["fuxictr_version"] = readme.fuxictr_version
    doc["expid"] = readme.params.get("model_id")
    doc["published"] = {"test_gauc": want[0], "test_auc": want[1], "test_logloss": want[2]}
    doc["set"] = base.ordered(t.values, mc["params"])
    for k in ("not_mapped", "inert", "checked"):
        part = getattr(t, k)
        if part:
            doc[k] = dict(sorted(part.items()))
    text_out = SEQ_HEADER.format(bars_model=bars_model, bars_split=split, id=mc["id"], data=data)
    text_out += yaml.dump(doc, Dumper=base._Dumper, sort_keys=False, width=110, allow_unicode=True)
    return base.OUT / data / f"{mc['id']}.yaml", text_out


def transcribe_all(repo: base.BarsRepo, models: dict[str, dict[str, Any]], commit: str | None
                   ) -> list[tuple[Path, str]]:
    with PUBLISHED_SEQ.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    datas = seq_data_configs()
    return [o for o in (transcribe_row(r, repo, models, commit, datas) for r in rows) if o is not None]
