"""The feature spec: THE contract between data preparation and models.

A dataset folder ``data/<name>/<fingerprint>/`` holds ``feature_spec.json`` next to the Parquet splits. Models
are built from a :class:`FeatureSpec` alone; they never see raw values or file paths.

Index convention for categorical and sequence fields (the same in every dataset):
  0  = padding / missing value
  1  = out-of-vocabulary (seen fewer than ``min_count`` times in train, or unseen in train)
  2+ = known values, ordered by train count descending, then by value (deterministic)
``vocab_size`` counts all indices, padding and OOV included, so an embedding table has ``vocab_size`` rows.

Feature groups (optional): ``Feature.group`` tags a field as ``user``, ``item`` or ``context`` (FuxiCTR's
``source``), for the models that treat groups differently (DSSM's towers, FLEN's field-wise interactions, PPNet's
gate priors). They are declared by the data config (``data.groups: {user: [...], item: [...], context: [...]}``,
checked by :func:`assign_groups`) and written into the spec; a field in no group has ``group == ""``, which the
JSON leaves out (so a spec without groups is byte-identical to one written before groups existed).

Parquet column types: categorical -> int32, numeric -> float32, sequence -> fixed-size list<int32> of
``max_len`` (0-padded at the end, or at the start when ``padding == "pre"``), label(s) -> float32 (values 0.0 /
1.0), meta -> int64.

Sequences and their tables (FuxiCTR's ``share_embedding``, ``padding``, ``pretrained_emb``):
- ``share_embedding``: the field's indices address the named field's table; the engine gives both the same
  vocabulary (the union of their own, see bars.data.engine), so ``vocab_size`` is equal too.
- ``padding``: ``post`` (values first, zeros after; truncation keeps the first ``max_len``) or ``pre`` (zeros
  first; truncation keeps the last ``max_len``, the most recent behaviours): FuxiCTR truncates on the side it
  pads. Index 0 is padding wherever it stands, so the mask of a sequence is ``indices > 0``.
- ``pretrained``: the file, inside the dataset folder, holding rows of the field's table (Parquet: ``index``
  int32, ``vector`` fixed-size list<float32> of ``pretrained_dim``); ``freeze_pretrained`` keeps the table fixed
  (FuxiCTR's ``freeze_emb``, default true). The loader reads the rows into :attr:`FeatureSpec.tables`, so models
  get them through the spec like everything else.

Several labels (multi-task datasets): ``labels`` names every label column, ``label`` is the first (what a
single-task trainer fits). Meta columns (``meta``, e.g. the user id BARS groups gAUC by on AmazonElectronics)
are stored and loaded but are not features: models never see them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from bars.fileio import atomic_write_text

SPEC_VERSION = 1
FEATURE_TYPES = ("categorical", "numeric", "sequence")
PADDING_SIDES = ("post", "pre")
PAD_INDEX = 0
OOV_INDEX = 1
FIRST_KNOWN_INDEX = 2
DEFAULT_MIN_COUNT = 1  # the one default: a value seen once in train is known (BARS x1 and FuxiCTR's default)
FEATURE_GROUPS = ("user", "item", "context")  # the groups a field may belong to (FuxiCTR's feature `source`)

FeatureType = Literal["categorical", "numeric", "sequence"]


class SpecError(ValueError):
    """A feature spec that is malformed or does not match the data it describes."""


@dataclass(frozen=True)
class Feature:
    name: str
    type: FeatureType
    vocab_size: int = 0  # categorical / sequence: rows of the embedding table (padding + OOV included)
    max_len: int = 0  # sequence only: fixed length after padding / truncation
    min_count: int = DEFAULT_MIN_COUNT  # categorical / sequence: values seen fewer times in train map to OOV
    source: str = ""  # free text: raw column(s) and transform, for humans
    share_embedding: str = ""  # name of another field whose embedding table this field reuses (optional)
    group: str = ""  # "" (none) or one of FEATURE_GROUPS: user, item, context (declared by data.groups)
    # -- keys added after the first release of version 1: omitted from the JSON while at their default, so the
    #    spec files of datasets that do not use them stay byte-identical (see _LATE_KEYS)
    padding: str = "post"  # sequence only: "post" (zeros after the values) or "pre" (zeros before)
    pretrained: str = ""  # file in the dataset folder with pretrained rows of this field's table (optional)
    pretrained_dim: int = 0  # width of the pretrained vectors
    freeze_pretrained: bool = True  # keep the pretrained table fixed (FuxiCTR's freeze_emb default)

    def __post_init__(self) -> None:
        if self.group and self.group not in FEATURE_GROUPS:
            raise SpecError(f"feature {self.name!r}: group {self.group!r} is not one of {FEATURE_GROUPS} (or empty)")
        if self.type not in FEATURE_TYPES:
            raise SpecError(f"feature {self.name!r}: type {self.type!r} is not one of {FEATURE_TYPES}")
        if self.type in ("categorical", "sequence") and self.vocab_size < FIRST_KNOWN_INDEX:
            raise SpecError(
                f"feature {self.name!r}: vocab_size {self.vocab_size} must be >= {FIRST_KNOWN_INDEX} "
                "(padding and OOV rows are always present)"
            )
        if self.type == "sequence" and self.max_len < 1:
            raise SpecError(f"feature {self.name!r}: a sequence field needs max_len >= 1, got {self.max_len}")
        if self.type != "sequence" and self.max_len:
            raise SpecError(f"feature {self.name!r}: max_len is only for sequence fields")
        if self.padding not in PADDING_SIDES:
            raise SpecError(f"feature {self.name!r}: padding {self.padding!r} is not one of {PADDING_SIDES}")
        if self.type != "sequence" and self.padding != "post":
            raise SpecError(f"feature {self.name!r}: padding is only for sequence fields")
        if self.pretrained:
            if self.type == "numeric":
                raise SpecError(f"feature {self.name!r}: a numeric field has no table to pretrain")
            if self.pretrained_dim < 1:
                raise SpecError(f"feature {self.name!r}: pretrained table {self.pretrained!r} needs pretrained_dim "
                                f">= 1, got {self.pretrained_dim}")
            if self.share_embedding:
                raise SpecError(f"feature {self.name!r}: has its own pretrained table and shares the table of "
                                f"{self.share_embedding!r}; give the pretrained table to the owner only")
        elif self.pretrained_dim:
            raise SpecError(f"feature {self.name!r}: pretrained_dim {self.pretrained_dim} without a pretrained file")


_LATE_KEYS = {"group": "", "padding": "post", "pretrained": "", "pretrained_dim": 0, "freeze_pretrained": True}


def _feature_dict(f: Feature) -> dict:
    return {k: v for k, v in asdict(f).items() if not (k in _LATE_KEYS and v == _LATE_KEYS[k])}


@dataclass(frozen=True)
class PretrainedRows:
    """Rows of a pretrained table as the loader read them: ``index`` int64 [n] (field indices, ascending, all
    >= 1) and ``vectors`` float32 [n, dim]. Rows not listed are not in the file (FuxiCTR: zero when frozen,
    initialised like any embedding row when trainable)."""

    index: object  # numpy int64 array
    vectors: object  # numpy float32 array


@dataclass(frozen=True)
class FeatureSpec:
    dataset: str
    label: str
    features: tuple[Feature, ...]
    version: int = SPEC_VERSION
    notes: dict = field(default_factory=dict)
    labels: tuple[str, ...] = ()  # every label column, ``label`` first; () = just ``label``
    meta: tuple[str, ...] = ()  # stored columns that are not features (e.g. a group id for gAUC)
    # pretrained rows by field name, filled by the loader (never in the JSON)
    tables: dict[str, PretrainedRows] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SpecError(f"feature spec for {self.dataset!r}: duplicate feature names {dup}")
        if not self.labels:
            object.__setattr__(self, "labels", (self.label,))
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "meta", tuple(self.meta))
        if self.labels[0] != self.label:
            raise SpecError(f"feature spec for {self.dataset!r}: label {self.label!r} must be the first of labels "
                            f"{list(self.labels)}")
        columns = names + list(self.labels) + list(self.meta)
        clash = sorted({n for n in columns if columns.count(n) > 1})
        if clash:
            raise SpecError(f"feature spec for {self.dataset!r}: columns {clash} appear more than once among "
                            f"features {names}, labels {list(self.labels)} and meta {list(self.meta)}")
        if not self.features:
            raise SpecError(f"feature spec for {self.dataset!r}: no features")
        for f in self.features:
            if f.share_embedding and f.share_embedding not in names:
                raise SpecError(f"feature {f.name!r}: share_embedding names unknown field {f.share_embedding!r}")
            if f.share_embedding:
                o = self[f.share_embedding]
                if o.type == "numeric" or o.share_embedding:
                    raise SpecError(f"feature {f.name!r}: share_embedding must name a categorical or sequence field "
                                    f"that owns its table, got {o.name!r} ({o.type}"
                                    + (f", itself sharing {o.share_embedding!r})" if o.share_embedding else ")"))
        unknown = sorted(set(self.tables) - {f.name for f in self.features if f.pretrained})
        if unknown:
            raise SpecError(f"feature spec for {self.dataset!r}: pretrained rows for {unknown}, which declare no "
                            "pretrained table")

    # -- views -------------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def by_type(self, kind: FeatureType) -> list[Feature]:
        return [f for f in self.features if f.type == kind]

    def __getitem__(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"no feature {name!r} in spec {self.dataset!r}; fields are {self.names}")

    @property
    def num_fields(self) -> int:
        return len(self.features)

    @property
    def groups(self) -> dict[str, list[str]]:
        """``{group: [field names in spec order]}`` for the groups that have fields (FEATURE_GROUPS order); empty
        when the data config declared no groups."""
        out = {g: [f.name for f in self.features if f.group == g] for g in FEATURE_GROUPS}
        return {g: names for g, names in out.items() if names}

    @property
    def multi_label(self) -> bool:
        return len(self.labels) > 1

    def owner(self, name: str) -> Feature:
        """The field whose table ``name`` reads: itself, or the field it shares the embedding of."""
        f = self[name]
        return self[f.share_embedding] if f.share_embedding else f

    def with_tables(self, tables: dict[str, PretrainedRows]) -> FeatureSpec:
        """This spec with the pretrained rows of its fields attached (what the loader returns)."""
        return replace(self, tables=dict(tables))

    # -- JSON --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {
            "version": self.version,
            "dataset": self.dataset,
            "label": self.label,
            "features": [_feature_dict(f) for f in self.features],
            "notes": self.notes,
        }
        if len(self.labels) > 1:  # written only when used, like the late feature keys
            d["labels"] = list(self.labels)
        if self.meta:
            d["meta"] = list(self.meta)
        return d

    @classmethod
    def from_dict(cls, d: dict, origin: str = "<dict>") -> FeatureSpec:
        try:
            version = d["version"]
            if version != SPEC_VERSION:
                raise SpecError(f"{origin}: feature spec version {version}, this bars reads {SPEC_VERSION}")
            allowed = set(Feature.__dataclass_fields__)
            feats = []
            for i, fd in enumerate(d["features"]):
                unknown = set(fd) - allowed
                if unknown:
                    raise SpecError(
                        f"{origin}: features[{i}] has unknown keys {sorted(unknown)}; allowed {sorted(allowed)}"
                    )
                feats.append(Feature(**fd))
            unknown = set(d) - {"version", "dataset", "label", "features", "notes", "labels", "meta"}
            if unknown:
                raise SpecError(f"{origin}: unknown keys {sorted(unknown)}")
            return cls(
                dataset=d["dataset"], label=d["label"], features=tuple(feats), version=version,
                notes=d.get("notes", {}), labels=tuple(d.get("labels") or ()), meta=tuple(d.get("meta") or ()),
            )
        except KeyError as e:
            raise SpecError(f"{origin}: feature spec is missing key {e.args[0]!r}") from None

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> FeatureSpec:
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise SpecError(f"{p}: feature spec not found") from None
        except json.JSONDecodeError as e:
            raise SpecError(f"{p}: not valid JSON ({e})") from None
        return cls.from_dict(d, origin=str(p))


def assign_groups(field_names: list[str], groups: object, where: str = "data.groups") -> dict[str, str]:
    """``{field name: group}`` from a declaration ``{group: [field names]}`` (``None`` or empty: no groups).

    Checks, naming the config key ``where`` (``data.groups``): a mapping of known group names
    (:data:`FEATURE_GROUPS`) to non-empty lists of field names; every name is a field of the dataset; no field is
    in two groups. Fields not named stay in no group."""
    if groups is None:
        return {}
    if not isinstance(groups, dict):
        raise SpecError(f"{where}: expected a mapping {{group: [field, ...]}} with groups {list(FEATURE_GROUPS)}, "
                        f"got {type(groups).__name__} {groups!r}")
    out: dict[str, str] = {}
    for group, names in groups.items():
        key = f"{where}.{group}"
        if group not in FEATURE_GROUPS:
            raise SpecError(f"{key}: unknown group {group!r}; groups are {list(FEATURE_GROUPS)}")
        if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
            raise SpecError(f"{key}: expected a non-empty list of field names, got {names!r}")
        unknown = [n for n in names if n not in field_names]
        if unknown:
            raise SpecError(f"{key}: unknown fields {unknown}; the dataset's fields are {field_names}")
        for n in names:
            if n in out:
                raise SpecError(f"{key}: field {n!r} is already in group {out[n]!r} (a field has one group)")
            out[n] = group
    return out
