"""The vocabulary rule has one definition (bars.data.transforms.vocab_order), and every path of the engine follows
it: interned strings, small-range integers (array counts), wide-range integers (spilled to per-batch counts) and
sequence elements. Checked on a real prepared tabular dataset against a plain-Python statement of the rule."""

from __future__ import annotations

from collections import Counter

import polars as pl
import pytest

from bars.data import transforms as T
from bars.data.prepare import prepare
from bars.data.spec import DEFAULT_MIN_COUNT, FIRST_KNOWN_INDEX, OOV_INDEX, PAD_INDEX


def rule(values, min_count: int) -> dict:
    """The rule in words: count >= max(min_count, 1), then count descending, value ascending."""
    counts = Counter(v for v in values if v is not None)
    known = sorted((v for v, c in counts.items() if c >= max(min_count, 1)), key=lambda v: (-counts[v], v))
    return {v: FIRST_KNOWN_INDEX + i for i, v in enumerate(known)}


def test_vocab_order_clamps_min_count_and_breaks_ties_by_value():
    counts = pl.DataFrame({"v": [3, 1, 2, 5], "count": [2, 2, 0, 1]})
    assert T.vocab_order(counts, "v", 0)["v"].to_list() == [1, 3, 5]  # count 0 is never known
    assert T.vocab_order(counts.lazy(), "v", 2).collect()["v"].to_list() == [1, 3]
    assert T.min_count_of({}) == DEFAULT_MIN_COUNT and T.min_count_of({"min_count": 4}) == 4


@pytest.mark.parametrize("min_count", [0, 1, 2, 3])
def test_every_engine_path_follows_the_rule(data_cfg, tmp_path, min_count):
    rows = []
    for i in range(400):
        rows.append({
            "label": i % 2,
            "s": f"v{(i * 7) % 23 if i % 5 else (i * 3) % 31}",  # strings: interned ids
            "small": (i * i) % 17,  # a small integer range: counted into an array
            "wide": ((i * 37) % 29) * 10_000_000 if i % 3 else i % 11,  # a range too wide for the array
            "seq": "|".join(str((i * k) % 13) for k in range(1, 1 + i % 4)),
        })
    train_file, small = tmp_path / "train.parquet", tmp_path / "small.parquet"
    pl.DataFrame(rows).write_parquet(train_file)  # Parquet keeps the integer columns integers
    pl.DataFrame(rows[:20]).write_parquet(small)
    cfg = data_cfg("data=tabular", f"data.files.train={train_file}", f"data.files.valid={small}",
                   f"data.files.test={small}", "data.categorical=[s,small,wide]", "data.sequence=[seq]",
                   f"data.min_count={min_count}")
    out = prepare(cfg, quiet=True)
    got = pl.read_parquet(out / "train.parquet")
    for col, conv in (("s", str), ("small", int), ("wide", int)):
        index = rule([conv(r[col]) for r in rows], min_count)
        want = [index.get(conv(r[col]), OOV_INDEX) for r in rows]
        assert got[col].to_list() == want, col
    elements = [x for r in rows for x in r["seq"].split("|") if x]  # sequence tokens are strings
    index = rule(elements, min_count)
    for r, enc in zip(rows, got["seq"].to_list(), strict=True):
        toks = [x for x in r["seq"].split("|") if x][: len(enc)]
        want = [index.get(t, OOV_INDEX) for t in toks]
        assert enc == want + [PAD_INDEX] * (len(enc) - len(want))
