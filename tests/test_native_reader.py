"""The native reader (bars.data.native, bars/data/_fastcsv.c) gives what the pyarrow reader gives: the same values
on the subset it parses, pyarrow's on blocks it hands back, the same errors, and the same prepared bytes."""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from bars.data import engine, native
from bars.data import sources as S
from bars.data.errors import DataError
from bars.data.recipes import CRITEO_CAT, CRITEO_INT, avazu_recipe, criteo_recipe, synthetic_criteo_recipe
from bars.fileio import file_digest

if native._load() is None:
    if os.environ.get("BARS_REQUIRE_NATIVE"):  # CI sets it: gcc is there, so the build must have made it
        raise RuntimeError("BARS_REQUIRE_NATIVE is set but bars/data/_fastcsv.c is not built (pip install -e .)")
    pytest.skip("the native reader is not built (no C compiler at install)", allow_module_level=True)

NAMES = ["label", "a", "b", "s", "t"]
TYPES = {"label": "float", "a": "int", "b": "int", "s": "str", "t": "str"}


def _src(path: Path, header: bool = False) -> S.Source:
    return S.Source(path, split="train", sep="\t", header=header, columns=list(NAMES), types=dict(TYPES))


def _native_rows(src: S.Source, rows=None, interned=("s", "t")) -> list[dict]:
    interners = {c: native.Interner() for c in interned}  # the others: plain strings
    out = []
    digest = hashlib.sha256()
    for _, t in native.read_batches(src, interners, rows, digest):
        d = t.to_pydict()
        for c, it in interners.items():
            ids = d[c]
            vals = it.values(pl.Series([i or 0 for i in ids], dtype=pl.UInt32))
            d[c] = [None if i is None else v for i, v in zip(ids, vals.to_list())]
        out += [dict(zip(d, r)) for r in zip(*d.values())]
    # the whole file (of a gzip file: its content), also when rows stopped it
    assert digest.hexdigest() == file_digest(src.path, "sha256", content=True)
    return out


def _arrow_rows(src: S.Source, rows=None) -> list[dict]:
    out = []
    for _, t in S.read_batches(src, rows):
        out += t.to_pylist()
    return out


def _same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k] == y[k] and (x[k] is None) == (y[k] is None), (k, x, y)
            if isinstance(x[k], float) and x[k] == 0:
                assert str(x[k]) == str(y[k]), (k, x, y)  # -0.0 is not 0.0


ODD_LINES = [
    "1\t5\t-3\tab12cd34\tx",
    "0\t\t\t\t",                      # every field missing
    "1\t007\t-0\tNA\tnull",           # leading zeros, -0, null tokens
    "0\t 5\t6 \tN/A\tnan",            # numbers with spaces: pyarrow trims them
    "1\t0x1F\t2\t#N/A\tNaN",          # hex integer (pyarrow's own form)
    "-0\t1\t2\ta\tb",                 # -0 as a float label: -0.0
    "1\t9223372036854775807\t-9223372036854775808\tverylongvalue_0123456789\tz",
    "",                               # an empty line: skipped
    "0\t1\t2\t\"quoted\ttab\"\tq",    # a quoted field holding the separator
    "1\t3\t4\tcafé\tü",               # non-ASCII
    "0\t8\t9\tcd56ef78\ty\r",           # a CRLF line end: pyarrow's (the fast path would keep the \r)
    "0\t1\t2\tab12cd34\tx",
]


@pytest.mark.parametrize("chunk", [native.CHUNK_BYTES, 7, 64])
def test_same_values_as_pyarrow(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(native, "CHUNK_BYTES", chunk)  # tiny blocks: carried lines, grown buffer, block fallbacks
    rng = random.Random(1)
    lines = list(ODD_LINES)
    for _ in range(300):
        lines.append("\t".join([str(rng.randint(0, 1)), str(rng.randint(-5, 10**6)),
                                rng.choice(["", str(rng.randint(0, 9))]), rng.choice(["", "NA", f"v{rng.randint(0, 50)}"]),
                                f"{rng.randint(0, 3):08x}"]))
    for last_newline in (True, False):
        p = tmp_path / f"x{last_newline}.tsv"
        p.write_text("\n".join(lines) + ("\n" if last_newline else ""), encoding="utf-8")
        _same(_native_rows(_src(p)), _arrow_rows(_src(p)))
        _same(_native_rows(_src(p), rows=5), _arrow_rows(_src(p), rows=5))
        _same(_native_rows(_src(p), interned=("s",)), _arrow_rows(_src(p)))  # "t" as plain strings
        h = tmp_path / f"h{last_newline}.tsv.gz"  # with a header line, gzip
        h.write_bytes(gzip.compress(("\t".join(NAMES) + "\n" + p.read_text(encoding="utf-8")).encode()))
        _same(_native_rows(_src(h, header=True)), _arrow_rows(_src(h, header=True)))
        _same(_native_rows(_src(h, header=True), rows=3), _arrow_rows(_src(h, header=True), rows=3))


def test_plain_block_is_parsed_natively(tmp_path):
    """A block within the fast path's grammar does not go to pyarrow (else the test above proves nothing)."""
    p = tmp_path / "x.tsv"
    p.write_text("".join(f"{i % 2}\t{i}\t-{i}\tv{i % 7}\t{i:08x}\n" for i in range(1000)))
    calls = []
    orig = native._arrow_block
    try:
        native._arrow_block = lambda *a, **k: calls.append(1) or orig(*a, **k)
        rows = _native_rows(_src(p))
    finally:
        native._arrow_block = orig
    assert calls == [] and len(rows) == 1000
    _same(rows, _arrow_rows(_src(p)))


@pytest.mark.parametrize("bad, why", [("1\t2\t3\tx", "found 4 columns, expected 5"),
                                      ("1\tseven\t3\tx\ty", "column 'a': expected an integer or empty, got 'seven'"),
                                      ("2\t1\t3\tx\ty", "label 'label' is 2.0: expected 0 or 1")])
@pytest.mark.parametrize("seeded", [False, True])  # an official split file, or rows split by the seeded rule
def test_errors_name_the_line(tmp_path, monkeypatch, bad, why, seeded):
    lines = [f"0\t{i}\t{i}\tv\tw" for i in range(50)]
    lines[37] = bad
    p = tmp_path / "raw.txt"
    p.write_text("\n".join(lines) + "\n")
    src = _src(p)
    if seeded:
        src.split = None
    for mode in ("native", "arrow"):
        monkeypatch.setenv("BARS_READER", mode)
        r = engine.Recipe(name="t", sources=[src],
                          fields=[engine.Field(c, "categorical", min_count=1) for c in ["a", "b", "s", "t"]],
                          raw_categoricals=("s", "t"))
        out = tmp_path / f"out_{mode}"
        out.mkdir()
        with pytest.raises(DataError) as e:
            engine.build(r, out, "fp")
        assert f"{p}:38" in str(e.value) and why in str(e.value), (mode, str(e.value))


def _digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def _build_both(tmp_path, monkeypatch, make_recipe) -> dict:
    got = {}
    for mode in ("native", "arrow"):
        monkeypatch.setenv("BARS_READER", mode)
        out = tmp_path / f"out_{mode}"
        out.mkdir(parents=True)
        manifest = engine.build(make_recipe(), out, "fp")
        got[mode] = {**_digests(out), "inputs": manifest["inputs"], "splits": manifest["splits"]}
    assert got["native"] == got["arrow"]
    return got["native"]


def test_prepared_bytes_do_not_depend_on_the_reader(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    data = {"name": "synthetic", "rows": 30000, "generator_seed": 3, "integer_mode": "bucket", "min_count": 2,
            "missing": "oov", "split_ratios": [0.8, 0.1, 0.1], "split_seed": 2021}
    r = synthetic_criteo_recipe(data, raw)
    f = r.sources[0].path
    lines = f.read_text().splitlines()
    cols = lines[100].split("\t")
    cols[14] = '"q,uoted"'  # one line pyarrow must parse (a quote): its block goes through pyarrow
    lines[100] = "\t".join(cols)
    f.write_text("\n".join(lines) + "\n")
    made = []  # every interner of the native build: freed once its vocabulary is taken, before the encoding
    init = native.Interner.__init__
    monkeypatch.setattr(native.Interner, "__init__", lambda self: (init(self), made.append(self))[0])
    got = _build_both(tmp_path / "out", monkeypatch, lambda: synthetic_criteo_recipe(data, raw))
    assert got["inputs"][0]["sha256"] == file_digest(f, "sha256")  # the native reader hashes what it reads
    assert "train.parquet" in got and len(got) > 40
    assert len(made) == 26 and all(it._ptr is None and not len(it.counts) for it in made)


@pytest.mark.parametrize("gz", [True, False])
def test_real_criteo_bytes_do_not_depend_on_the_reader(tmp_path, monkeypatch, shared_datasets, gz):
    """The real Kaggle Criteo head (10,000 rows), as shipped (gzip) and decompressed."""
    raw = tmp_path / "raw"
    raw.mkdir()
    blob = (shared_datasets / "criteo_head10k" / "raw" / "train.txt.gz").read_bytes()
    (raw / ("train.txt.gz" if gz else "train.txt")).write_bytes(blob if gz else gzip.decompress(blob))
    data = {"name": "criteo_x4_001", "integer_mode": "bucket", "min_count": 2, "missing": "oov",
            "split_ratios": [0.8, 0.1, 0.1], "split_seed": 2018}
    assert _build_both(tmp_path, monkeypatch, lambda: criteo_recipe(data, raw))["splits"]["train"]["rows"] > 7000

@pytest.mark.parametrize("gz", [True, False])
def test_real_avazu_bytes_do_not_depend_on_the_reader(tmp_path, monkeypatch, shared_datasets, gz):
    """The real Kaggle Avazu head: 21 interned fields, ``id`` and ``hour`` read as plain strings (the recipe
    transforms hour)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    blob = (shared_datasets / "avazu_head10k" / "raw" / "train.gz").read_bytes()
    (raw / ("train.gz" if gz else "train")).write_bytes(blob if gz else gzip.decompress(blob))
    data = {"name": "avazu_x4_001", "min_count": 2, "missing": "oov", "split_ratios": [0.8, 0.1, 0.1],
            "split_seed": 2018}
    assert _build_both(tmp_path, monkeypatch, lambda: avazu_recipe(data, raw))["splits"]["train"]["rows"] > 7000

def test_modes(tmp_path, monkeypatch):
    monkeypatch.setenv("BARS_READER", "fast")
    with pytest.raises(DataError, match="BARS_READER='fast': expected auto, native or arrow"):
        native.available()
    p = tmp_path / "raw.txt.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("0\t1\t2\tv\tw\n")

    def recipe(raw_categoricals):
        return engine.Recipe(name="t", sources=[_src(p)], raw_categoricals=raw_categoricals,
                             fields=[engine.Field(c, "categorical", min_count=1) for c in ["a", "b", "s", "t"]])

    def build(raw_categoricals, name):
        out = tmp_path / name
        out.mkdir()
        return engine.build(recipe(raw_categoricals), out, "fp")

    monkeypatch.setenv("BARS_READER", "native")
    with pytest.raises(DataError, match="names no raw categoricals for it to intern"):  # not its job then
        build((), "o1")
    assert build(("s",), "o2")["splits"]["train"]["rows"] == 1  # gzip, "t" a plain string: read natively
    zipped = tmp_path / "raw.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("raw.tsv", "0\t1\t2\tv\tw\n")
    p_zip = _src(zipped)
    p_zip.member = "raw.tsv"
    assert not native.usable(p_zip, {"s"})  # a zip member: pyarrow reads it
    monkeypatch.setenv("BARS_READER", "auto")
    assert build((), "o3")["splits"]["train"]["rows"] == 1
    assert set(CRITEO_CAT) == set(synthetic_criteo_recipe({"name": "s", "rows": 10}, tmp_path / "r").raw_categoricals)
    assert not set(CRITEO_INT) & set(CRITEO_CAT)


def test_frappe_csvs_bytes_do_not_depend_on_the_reader(tmp_path, monkeypatch, shared_datasets):
    """Frappe_x1's official valid/test CSVs (../shared), resplit as frappe_vt: ten interned one-hot fields."""
    from bars.data.recipes import onehot_resplit_recipe

    raw = shared_datasets / "frappe_x1" / "derived"
    fields = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city"]
    data = {"name": "frappe_vt", "files": {"train": "valid.csv", "test": "test.csv"}, "holdout_ratio": 0.2,
            "fields": fields, "min_count": 1, "missing": "oov", "split_seed": 2021, "verify_md5": False}
    got = _build_both(tmp_path, monkeypatch, lambda: onehot_resplit_recipe(data, raw))
    assert got["splits"]["test"]["rows"] == 28860 and got["splits"]["train"]["rows"] + got["splits"]["valid"][
        "rows"] == 57722


def test_tabular_bytes_do_not_depend_on_the_reader(tmp_path, monkeypatch):
    """A user's CSV: interned categoricals, a copied column (read as strings), a sequence, a numeric column,
    quoted values in one block (pyarrow's), several files."""
    from bars.data.recipes import tabular_recipe

    rng = random.Random(3)
    rows = ["click,user,city,price,hist"]
    for i in range(3000):
        city = f'"c,{i % 5}"' if i == 1500 else f"c{rng.randint(0, 40)}"
        rows.append(f"{i % 2},u{rng.randint(0, 300)},{city},{rng.choice(['', '1.5', str(i)])},"
                    f"a|b{i % 3}{'|c' if i % 4 == 0 else ''}")
    for split, sl in (("train", slice(1, 2401)), ("valid", slice(2401, 2701)), ("test", slice(2701, 3001))):
        (tmp_path / f"{split}.csv").write_text("\n".join([rows[0], *rows[sl]]) + "\n")
    data = {"name": "mine", "files": {k: f"{k}.csv" for k in ("train", "valid", "test")}, "label": "click",
            "categorical": ["user", "city", "town"], "numeric": ["price"], "sequence": ["hist"], "min_count": 2,
            "missing": "oov", "copies": {"town": "city"}}
    r = tabular_recipe(data, tmp_path)
    assert r.raw_categoricals == ("user",)  # city is copied, town is a copy: both stay strings until the transform
    got = _build_both(tmp_path / "o", monkeypatch, lambda: tabular_recipe(data, tmp_path))
    assert got["splits"]["train"]["rows"] == 2400


def test_interner_hex_then_compact_then_full(tmp_path):
    """While every value is 8 lowercase hex digits (hashed CTR ids) the interner keeps their 32-bit numbers in its
    hash table alone (8 bytes a slot); the first other value of at most 8 bytes moves them to 16-byte slots that
    hold the bytes (still no arena); the first longer value moves every value so far into an arena. Ids, values of
    any subset of ids in any order, and lengths (``ab`` and ``ab\\0`` share a zero-padded key) survive each move
    and the table's growth."""
    import pyarrow as pa

    it = native.Interner()
    rng = random.Random(5)
    hexes = list(dict.fromkeys([f"{rng.getrandbits(32):08x}" for _ in range(30_000)]
                               + ["00000000", "ffffffff", "0123abcd", "9a9a9a9a", "a0f9fa09"]))
    ids = it.intern_arrow(pa.array(hexes + hexes[::-7])).to_pylist()
    assert ids == list(range(len(hexes))) + list(range(len(hexes)))[::-7]  # arrival order, repeats found
    slots = 2 ** (len(hexes) * 4 // 3).bit_length()  # a power of two at load <= 3/4
    assert it.footprint == 8 * slots
    assert it.values(pl.Series(range(len(hexes)), dtype=pl.UInt32)).to_list() == hexes
    assert it.values(pl.Series([], dtype=pl.UInt32)).to_list() == []
    with pytest.raises(IndexError, match="not interned"):
        it.values(pl.Series([len(hexes)], dtype=pl.UInt32))

    # 8 bytes but not lowercase hex digits, then shorter values: the same ids in 16-byte slots
    others = ["0123ABCD", "0123abcg", "0123abc/", "0123abc:", "0123abc`", "", "a", "ab", "ab\x00", "1005"]
    short = hexes + others
    ids = it.intern_arrow(pa.array(others + hexes[::-5])).to_pylist()
    assert ids == list(range(len(hexes), len(short))) + list(range(len(hexes)))[::-5]
    assert it.size == len(short)
    compact = it.footprint
    assert compact == 16 * 2 ** (len(short) * 4 // 3).bit_length()
    pick = [len(short) - 1, 0, 17, len(short) - 3, len(short) - 2, 5, 5, len(hexes)]
    assert it.values(pl.Series(pick, dtype=pl.UInt32)).to_list() == [short[i] for i in pick]

    long = ["verylongvalue_0123456789", "x" * 9, "café-au-lait"]
    assert it.intern_arrow(pa.array(long + ["ab\x00", short[3]])).to_pylist() == [
        len(short), len(short) + 1, len(short) + 2, short.index("ab\x00"), 3]
    assert it.footprint > compact  # the arena and its offsets now
    every = short + long
    assert it.values(pl.Series(range(len(every)), dtype=pl.UInt32)).to_list() == every
    assert it.intern_arrow(pa.array(every[::-1])).to_pylist() == list(range(len(every)))[::-1]
    assert it.values(pl.Series([], dtype=pl.UInt32)).to_list() == []
    with pytest.raises(IndexError, match="not interned"):
        it.values(pl.Series([len(every)], dtype=pl.UInt32))
    it.release()
    with pytest.raises(RuntimeError, match="after release"):
        _ = it.size


def test_interner_vocab_sorted_on_hex_numbers_is_the_rule():
    """In hex mode the vocabulary is sorted on the numbers the values spell (first digit highest) and the kept
    values exported after: the result is the rule's (``vocab_order`` on the strings), count ties included. Once a
    value of another form arrives there are no numbers and the strings are sorted themselves: the same rule."""
    import pyarrow as pa

    from bars.data import transforms as T

    rng = random.Random(2)
    vals = list(dict.fromkeys(f"{rng.getrandbits(rng.choice([4, 8, 16, 32])):08x}" for _ in range(20_000)))
    it = native.Interner()
    it.intern_arrow(pa.array(vals))

    def rule(values, counts, min_count):
        frame = pl.DataFrame({"c": np.arange(len(values), dtype=np.uint32), "count": counts.astype(np.int64),
                              "value": values})
        return T.vocab_order(frame, "value", min_count)

    keys = it.order_keys(np.arange(len(vals), dtype=np.uint32))
    assert keys is not None and keys.dtype == np.uint32
    assert [vals[i] for i in np.argsort(keys, kind="stable")] == sorted(vals)  # numbers order as strings do
    it.counts = np.array([rng.randint(0, 4) for _ in vals], dtype=np.uint32)  # many ties
    for min_count in (1, 2, 4):
        assert it.vocab("c", min_count).equals(rule(vals, it.counts, min_count))

    it.intern_arrow(pa.array(["ABCDEF01", "zz"]))  # not lowercase hex digits: hex mode is left
    vals += ["ABCDEF01", "zz"]
    assert it.order_keys(np.arange(3, dtype=np.uint32)) is None
    it.counts = np.array([rng.randint(0, 4) for _ in vals], dtype=np.uint32)
    assert it.vocab("c", 2).equals(rule(vals, it.counts, 2))


def test_hex_fields_leaving_hex_mode_mid_file_do_not_change_the_bytes(tmp_path, monkeypatch):
    """Fields of 8 hex digits (the interner's hex mode, whose vocabulary is sorted on the numbers they spell) that
    meet another value mid-file: an upper-case one, a short one, a long one. Both readers give the same files."""
    from bars.data.recipes import tabular_recipe

    rng = random.Random(11)
    rows = ["click,h,g"]
    for i in range(4000):
        h = {2500: "ABCDEF01", 3100: "x"}.get(i, f"{rng.getrandbits(10):08x}")  # ~1,000 values: count ties
        g = f"longer_value_{i % 7}" if i > 1200 and i % 9 == 0 else f"{rng.getrandbits(9) << 20:08x}"
        rows.append(f"{i % 2},{h},{g}")
    for split, sl in (("train", slice(1, 3201)), ("valid", slice(3201, 3601)), ("test", slice(3601, 4001))):
        (tmp_path / f"{split}.csv").write_text("\n".join([rows[0], *rows[sl]]) + "\n")
    data = {"name": "hexes", "files": {k: f"{k}.csv" for k in ("train", "valid", "test")}, "label": "click",
            "categorical": ["h", "g"], "min_count": 2, "missing": "oov"}
    got = _build_both(tmp_path / "o", monkeypatch, lambda: tabular_recipe(data, tmp_path))
    assert got["splits"]["train"]["rows"] == 3200
