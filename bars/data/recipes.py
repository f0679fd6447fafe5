"""Dataset recipes by name: ``recipe: <name>`` in ``conf/data/<d>.yaml`` picks one of :data:`RECIPES`.

A recipe is ``recipe(data: dict, raw_dir: Path) -> bars.data.engine.Recipe``: it declares the sources and fields
of a dataset on the shared engine. The BARS families are here (Criteo, Avazu, the x1 one-hot CSV datasets), plus
the generated synthetic data and ``tabular`` (your own files, described by config). For a family, the layout
found in ``raw_dir`` decides how rows are read (official split CSVs, checked against published md5, or raw
Kaggle files with a seeded split recorded as not official). A dataset that needs its own code names a script
instead (``recipe: datasets/<d>/prepare.py``, e.g. movielens_small): see ``bars.data.prepare.load_recipe``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl

from bars.data import transforms as T
from bars.data.download import ensure_download
from bars.data.engine import Field, Pretrained, Recipe
from bars.data.errors import DataError
from bars.data.sources import Source, resolve_columns
from bars.data.synthetic import generate_criteo

SPLITS = T.SPLITS
CRITEO_INT = [f"I{i}" for i in range(1, 14)]
CRITEO_CAT = [f"C{i}" for i in range(1, 27)]
AVAZU_COLUMNS = ["id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
                 "app_domain", "app_category", "device_id", "device_ip", "device_model", "device_type",
                 "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"]


def find_file(raw_dir: Path, names: list[str]) -> Path | None:
    """First existing ``raw_dir/<name>`` or ``raw_dir/<name>.gz``."""
    for n in names:
        for cand in (Path(raw_dir) / n, Path(raw_dir) / f"{n}.gz"):
            if cand.is_file():
                return cand
    return None


def official_files(data: dict, raw_dir: Path, ext: str = "csv") -> dict[str, Path] | None:
    """train/valid/test.<ext>[.gz] in raw_dir (downloading the official zip first when configured)."""
    found = {k: find_file(raw_dir, [f"{k}.{ext}"]) for k in SPLITS}
    if all(found.values()):
        return found
    if any(found.values()):
        missing = [f"{k}.{ext}" for k, v in found.items() if v is None]
        raise DataError(f"{raw_dir}: official split files incomplete: missing {missing} (found "
                        f"{[v.name for v in found.values() if v]})")
    return None


def _md5(data: dict, split: str) -> str | None:
    md5 = (data.get("md5") or {}).get(split)
    return md5 if data.get("verify_md5", True) else None


def _rows(data: dict):
    return data.get("rows")


def _base(data: dict, sources, fields, layout, official, transform=None, notes=None) -> Recipe:
    return Recipe(name=data["name"], sources=sources, fields=fields, transform=transform,
                  split_ratios=tuple(data.get("split_ratios") or (0.8, 0.1, 0.1)),
                  split_seed=int(data.get("split_seed", 2021)), rows=_rows(data), layout=layout,
                  official_split=official, notes=notes or {})


def _no_input(data: dict, raw_dir: Path, expected: str) -> DataError:
    return DataError(f"data={data['name']}: no raw files in data.raw_dir={raw_dir}: expected {expected}")


# -- Criteo --------------------------------------------------------------------------------------------------
def criteo_recipe(data: dict, raw_dir: Path, raw_file: Path | None = None) -> Recipe:
    """``raw_file``: a Kaggle-layout file to use directly. ``data.integer_mode``: "bucket" (x4: floor(ln(x)^2) for x > 2, categorical) or "numeric" (x1)."""
    mode = data.get("integer_mode", "bucket")
    if mode not in ("bucket", "numeric"):
        raise DataError(f"data.integer_mode: expected 'bucket' or 'numeric', got {mode!r}")
    mc = T.min_count_of(data)
    int_type = "int" if mode == "bucket" else "float"
    types = {c: int_type for c in CRITEO_INT}
    off = None if raw_file else official_files(data, raw_dir)
    raw = raw_file or (None if off else find_file(raw_dir, ["train.txt", "dac_sample.txt"]))
    if not off and raw is None and ensure_download(data, raw_dir):
        off = official_files(data, raw_dir)
    if off:
        sources = []
        for k in SPLITS:
            src = Source(off[k], split=k, sep=",", header=True, types=types, md5=_md5(data, k))
            src.label = resolve_columns(src)[0]
            sources.append(src)
        layout, official = "official split CSVs", True
    else:
        if raw is None:
            raise _no_input(data, raw_dir, "official train/valid/test.csv[.gz] or the Kaggle train.txt[.gz]")
        sources = [Source(raw, split=None, sep="\t", header=False, columns=["label", *CRITEO_INT, *CRITEO_CAT],
                          types=types)]
        layout, official = "Kaggle train.txt (TAB, no header)", False

    def transform(df: pl.DataFrame) -> pl.DataFrame:
        if "label" not in df.columns:
            df = df.rename({df.columns[0]: "label"})
        if mode == "bucket":
            df = df.with_columns([T.criteo_bucket(c) for c in CRITEO_INT])
        return df

    kind = "categorical" if mode == "bucket" else "numeric"
    src_txt = "floor(ln(x)^2) if x > 2 else x; missing -> 0" if mode == "bucket" else "numeric as given"
    fields = [Field(c, kind, min_count=mc, source=f"{c}: {src_txt}") for c in CRITEO_INT]
    fields += [Field(c, "categorical", min_count=mc, source=c) for c in CRITEO_CAT]
    r = _base(data, sources, fields, layout, official, transform)
    r.raw_categoricals = tuple(CRITEO_CAT)  # passed through untouched: the native reader interns them
    return r


# -- Avazu ---------------------------------------------------------------------------------------------------
def avazu_recipe(data: dict, raw_dir: Path) -> Recipe:
    """x4: id dropped; hour -> hour, weekday, weekend; every other column categorical (min_count)."""
    mc = T.min_count_of(data)
    off = official_files(data, raw_dir)
    raw = None if off else find_file(raw_dir, ["train.csv", "train"])
    if not off and raw is None and ensure_download(data, raw_dir):
        off = official_files(data, raw_dir)
    types = {"click": "float"}
    if off:
        sources = [Source(off[k], split=k, header=True, types=types, md5=_md5(data, k), label="click")
                   for k in SPLITS]
        layout, official = "official split CSVs", True
    else:
        if raw is None:
            raise _no_input(data, raw_dir, "official train/valid/test.csv[.gz] or the Kaggle train[.csv][.gz]")
        sources = [Source(raw, split=None, header=True, columns=AVAZU_COLUMNS, types=types, label="click")]
        layout, official = f"Kaggle {raw.name} (CSV with header)", False
    cats = [c for c in AVAZU_COLUMNS if c not in ("id", "click", "hour")]

    def transform(df: pl.DataFrame) -> pl.DataFrame:
        bad = df["hour"].str.len_chars() != 8
        if bad.any():
            i = int(bad.arg_max())
            raise DataError(f"avazu: column 'hour' value {df['hour'][i]!r} in batch row {i}: expected YYMMDDHH")
        return df.with_columns(T.avazu_hour_fields("hour"))

    fields = [Field(c, min_count=mc, source=c) for c in cats]
    fields += [Field("hour", min_count=mc, source="hour HH"), Field("weekday", min_count=mc, source="hour -> weekday"),
               Field("weekend", min_count=mc, source="hour -> weekday >= Sat")]
    r = _base(data, sources, fields, layout, official, transform)
    r.raw_categoricals = tuple(cats)  # passed through untouched (hour is transformed): the native reader interns them
    return r


# -- x1 one-hot datasets (Frappe_x1, MovielensLatest_x1, Avazu_x1): official CSVs or AFN libsvm ----------------
def onehot_recipe(data: dict, raw_dir: Path, fields: list[str], allow_libsvm: bool = False) -> Recipe:
    mc = T.min_count_of(data)
    off = official_files(data, raw_dir)
    lib = official_files(data, raw_dir, "libsvm") if (allow_libsvm and not off) else None
    if not off and not lib and ensure_download(data, raw_dir):
        off = official_files(data, raw_dir)
    if off:
        sources = []
        for k in SPLITS:
            src = Source(off[k], split=k, header=True, md5=_md5(data, k))
            src.label = resolve_columns(src)[0]
            sources.append(src)
        layout = "official split CSVs"
    elif lib:
        sources = [Source(lib[k], split=k, fmt="libsvm", header=False, columns=["label", *fields]) for k in SPLITS]
        layout = "AFN libsvm files"
    else:
        what = "train/valid/test.csv[.gz]" + (" or train/valid/test.libsvm[.gz]" if allow_libsvm else "")
        raise _no_input(data, raw_dir, what)

    def transform(df: pl.DataFrame) -> pl.DataFrame:
        if "label" not in df.columns:
            df = df.rename({df.columns[0]: "label"})
        return df

    r = _base(data, sources, [Field(c, min_count=mc, source=c) for c in fields], layout, True, transform)
    r.raw_categoricals = tuple(fields)  # passed through untouched: the native reader interns them (CSV files)
    return r



def onehot_resplit_recipe(data: dict, raw_dir: Path) -> Recipe:
    """An x1 one-hot dataset rebuilt from two of its files (CSV or AFN libsvm): ``data.files.train`` is split by a
    seeded ``data.holdout_ratio`` share into train/valid, ``data.files.test`` tests (e.g. frappe_vt: Frappe_x1's
    valid and test files, when its train file is not at hand). Not an official split."""
    fields, files = list(data["fields"]), dict(data.get("files") or {})
    if not files.get("train") or not files.get("test"):
        raise DataError(f"data.files: expected train and test file names (in data.raw_dir), got {files}")
    h = float(data.get("holdout_ratio", 0.2))
    if not 0 < h < 1:
        raise DataError(f"data.holdout_ratio: expected a number in (0, 1), got {h}")
    found = {k: find_file(raw_dir, [files[k]]) for k in ("train", "test")}
    missing = [files[k] for k, v in found.items() if v is None]
    if missing:
        raise _no_input(data, raw_dir, f"{missing}[.gz] (data.files)")

    def source(path: Path, split: str | None, md5: str | None) -> Source:
        if ".libsvm" in path.name:
            return Source(path, split=split, fmt="libsvm", header=False, columns=["label", *fields], md5=md5)
        src = Source(path, split=split, header=True, md5=md5)
        src.label = resolve_columns(src)[0]
        return src

    md5 = (data.get("md5") or {}) if data.get("verify_md5", True) else {}
    sources = [source(found["train"], None, md5.get("train")), source(found["test"], "test", md5.get("test"))]
    r = _base(data, sources, [Field(c, min_count=T.min_count_of(data), source=c) for c in fields],
              f"{found['train'].name} split {1 - h:g}/{h:g} (seeded) + {found['test'].name}", False,
              lambda df: df if "label" in df.columns else df.rename({df.columns[0]: "label"}))
    r.split_ratios = (1 - h, h, 0.0)
    r.raw_categoricals = tuple(fields)
    return r

# -- the tabular recipe: a user's own files described in the data config --------------------------------
# per-field options (data.field_options.<field>, and the sequence datasets' recipes)
FIELD_OPTIONS = frozenset({"min_count", "max_len", "sep", "share_embedding", "padding", "token_type", "align_with",
                           "pretrained", "freeze_pretrained", "pretrained_md5"})


def field_from_options(name: str, kind: str, o: dict, data: dict, min_count: int, raw_dir: Path, where: str) -> Field:
    """A Field from its options (FIELD_OPTIONS), defaults from ``data`` (max_len, sequence_sep, padding);
    a relative ``pretrained`` path is looked up in ``raw_dir``."""
    padding = o.get("padding", data.get("padding") or "post")
    if padding not in ("post", "pre"):
        raise DataError(f"{where}.padding: expected 'post' or 'pre' (FuxiCTR's padding side), got {padding!r}")
    token_type = o.get("token_type", "str")
    if token_type not in ("str", "int"):
        raise DataError(f"{where}.token_type: expected 'str' or 'int', got {token_type!r}")
    if kind != "sequence":
        seq_only = sorted({"max_len", "sep", "padding", "token_type", "align_with"} & set(o))
        if seq_only:
            raise DataError(f"{where}: {seq_only} apply to sequence fields only ({name!r} is {kind})")
    pretrained = None
    if o.get("pretrained"):
        q = Path(str(o["pretrained"])).expanduser()
        pretrained = Pretrained(q if q.is_absolute() else Path(raw_dir) / q,
                                freeze=bool(o.get("freeze_pretrained", True)), md5=o.get("pretrained_md5"))
    elif "freeze_pretrained" in o or "pretrained_md5" in o:
        raise DataError(f"{where}: freeze_pretrained / pretrained_md5 without a pretrained file")
    return Field(name, kind, min_count=int(o.get("min_count", min_count)),
                 max_len=o.get("max_len", data.get("max_len")) if kind == "sequence" else None,
                 sep=o.get("sep", data.get("sequence_sep", "|")), source=f"column {name}",
                 share_embedding=o.get("share_embedding") or "", padding=padding if kind == "sequence" else "post",
                 token_type=token_type, align_with=o.get("align_with") or "", pretrained=pretrained)


def _as_list(x) -> list:
    if x is None:
        return []
    if isinstance(x, str):
        return [s for s in x.split(",") if s]
    return list(x)


# data.validation: where the validation rows come from when train and test are files
VALIDATIONS = {"file": "data.files.valid", "test": "the test file validates (BARS's sequential boards: bars-seq)",
               "holdout": "a seeded data.holdout_ratio of the train file's rows (the honest variant)"}


def tabular_recipe(data: dict, raw_dir: Path, name: str | None = None) -> Recipe:
    """A recipe from config keys (see conf/data/tabular.yaml): files, label, categorical/numeric/sequence."""
    name = name or data["name"]
    labels = _as_list(data.get("labels"))
    label = labels[0] if labels else (data.get("label") or "label")
    cats, nums, seqs = (_as_list(data.get(k)) for k in ("categorical", "numeric", "sequence"))
    metas = _as_list(data.get("meta"))
    if not (cats or nums or seqs):
        raise DataError(f"data={name}: no features: set data.categorical=[...], data.numeric=[...] and/or "
                        "data.sequence=[...] (column names)")
    opts = data.get("field_options") or {}
    unknown = set(opts) - set(cats + nums + seqs)
    if unknown:
        raise DataError(f"data.field_options: unknown fields {sorted(unknown)}; features are {cats + nums + seqs}")
    min_count = T.min_count_of(data)
    fields = []
    for kind, cols in (("categorical", cats), ("numeric", nums), ("sequence", seqs)):
        for c in cols:
            o = dict(opts.get(c) or {})
            bad = set(o) - FIELD_OPTIONS
            if bad:
                raise DataError(f"data.field_options.{c}: unknown keys {sorted(bad)}; allowed {sorted(FIELD_OPTIONS)}")
            fields.append(field_from_options(c, kind, o, data, min_count, raw_dir, f"data.field_options.{c}"))
    fields += [Field(c, "meta", source=f"column {c} (meta)") for c in metas]
    copies = dict(data.get("copies") or {})  # new column -> the file column it copies (FuxiCTR's copy_from)
    declared = set(cats + nums + seqs + metas)
    for dst, src in copies.items():
        if dst not in declared or src == dst or src in copies:
            raise DataError(f"data.copies.{dst}={src!r}: expected a feature or meta column (one of "
                            f"{sorted(declared)}) copied from a file column")
    for f in fields:
        if f.name in copies:
            f.source = f"copy of column {copies[f.name]}"
    transform = (lambda df: df.with_columns([pl.col(s).alias(d) for d, s in copies.items()])) if copies else None

    def resolve(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else Path(raw_dir) / q

    def source(p: str, split: str | None) -> Source:
        path = resolve(p)
        fmt = data.get("format") or "auto"
        if fmt == "auto":
            fmt = "parquet" if path.suffix == ".parquet" else "csv"
        sep = data.get("sep") or ("\t" if path.suffix in (".tsv", ".txt") else ",")
        types = {c: "float" for c in nums}
        cols = _as_list(data.get("columns")) or None
        return Source(path, split=split, fmt=fmt, sep=sep, header=bool(data.get("header", True)),
                      columns=cols, types=types, label=label, md5=_md5(data, split) if split else None)

    validation = data.get("validation") or "file"
    if validation not in VALIDATIONS:
        raise DataError(f"data.validation: expected one of {list(VALIDATIONS)}, got {validation!r}")
    if validation == "test" and not data.get("protocol_name"):
        raise DataError("data.validation=test validates on the test set: label it, data.protocol_name=bars-seq "
                        "(BARS's sequential boards), so boards and runs say so")
    if validation != "test" and data.get("protocol_name") == "bars-seq":
        raise DataError(f"data.protocol_name=bars-seq means validated on the test set, but data.validation="
                        f"{validation!r}; the honest variant is data.validation=holdout data.protocol_name=holdout")
    ratios = tuple(float(r) for r in data.get("split_ratios") or (0.8, 0.1, 0.1))
    files = data.get("files") or {}
    valid_is_test = False
    if data.get("file"):
        if validation != "file":
            raise DataError(f"data.validation={validation!r} needs data.files.train and data.files.test (and no "
                            "data.file): one file is split by data.split_ratios")
        sources = [source(data["file"], None)]
    elif files.get("train"):
        if validation == "file":
            sources = [source(files[k], k) for k in SPLITS if files.get(k)]
            missing = [k for k in SPLITS if not files.get(k)]
            if missing:
                raise DataError(f"data.files: no file for {missing}; give train, valid and test files, or one "
                                "data.file=... with data.split_ratios, or data.validation=test|holdout")
        else:
            if files.get("valid") or not files.get("test"):
                raise DataError(f"data.validation={validation!r}: give data.files.train and data.files.test and no "
                                f"data.files.valid (got valid={files.get('valid')!r}, test={files.get('test')!r})")
            if validation == "test":  # BARS's sequential boards: the test file validates
                sources, valid_is_test = [source(files["train"], "train"), source(files["test"], "test")], True
            else:  # the honest variant: a seeded share of the train file's rows validates, the test file tests
                h = float(data.get("holdout_ratio", 0.1))
                if not 0 < h < 1:
                    raise DataError(f"data.holdout_ratio: expected a number in (0, 1), got {h}")
                train = source(files["train"], None)
                train.md5 = _md5(data, "train")
                sources, ratios = [train, source(files["test"], "test")], (1 - h, h, 0.0)
    else:
        raise DataError(f"data={name}: no input: set data.file=<one file> (split by data.split_ratios) or "
                        "data.files.train/valid/test=<files> (CSV or Parquet; relative to data.raw_dir)")
    if len(ratios) != 3 or min(ratios) < 0 or sum(ratios) <= 0:
        raise DataError(f"data.split_ratios: expected three non-negative numbers (train, valid, test), got {ratios}")
    # interned while parsing: categoricals that neither copy nor are copied (a copy must see the file's strings)
    # and own a table of their own (shared tables and pretrained keys are joined by value)
    as_strings = (set(copies) | set(copies.values()) | {f.share_embedding for f in fields if f.share_embedding}
                  | {f.name for f in fields if f.share_embedding or f.pretrained is not None})
    return Recipe(name=name, sources=sources, fields=fields, label=label, split_ratios=ratios,
                  split_seed=int(data.get("split_seed", 2021)), rows=data.get("rows"),
                  params=data, layout="tabular", official_split=bool(data.get("official_split", False)),
                  labels=labels or None, valid_is_test=valid_is_test, transform=transform,
                  raw_categoricals=tuple(c for c in cats if c not in as_strings))


def onehot_csv_recipe(data: dict, raw_dir: Path) -> Recipe:
    """The x1 one-hot datasets from the official CSVs only (Avazu_x1): fields from ``data.fields``."""
    return onehot_recipe(data, raw_dir, list(data["fields"]), allow_libsvm=False)


def onehot_csv_or_libsvm_recipe(data: dict, raw_dir: Path) -> Recipe:
    """The x1 one-hot datasets from the official CSVs or the AFN libsvm files (Frappe_x1, MovielensLatest_x1)."""
    return onehot_recipe(data, raw_dir, list(data["fields"]), allow_libsvm=True)


def synthetic_criteo_recipe(data: dict, raw_dir: Path) -> Recipe:
    """Generate a Criteo-format file of ``data.rows`` rows into raw_dir (unless present), then the Criteo recipe."""
    rows, seed = int(data["rows"]), int(data.get("generator_seed", 0))
    path = raw_dir / f"synthetic_criteo_{rows}_{seed}.txt"
    if not path.exists():
        generate_criteo(path, rows, seed)
    r = criteo_recipe(data, raw_dir, raw_file=path)
    r.layout = "synthetic Criteo-format TSV"
    return r


# The names ``recipe:`` in conf/data/<d>.yaml may take (besides a path to a datasets/<d>/prepare.py script).
RECIPES: dict[str, Callable[[dict, Path], Recipe]] = {
    "criteo": criteo_recipe,
    "avazu": avazu_recipe,
    "onehot_csv": onehot_csv_recipe,
    "onehot_csv_or_libsvm": onehot_csv_or_libsvm_recipe,
    "onehot_resplit": onehot_resplit_recipe,
    "synthetic_criteo": synthetic_criteo_recipe,
    "tabular": tabular_recipe,
}
