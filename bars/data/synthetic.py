"""Synthetic Criteo-format raw files (TAB, no header, label + I1..I13 + C1..C26) with planted interactions.

The click logit is a sum of main effects of a few fields plus pairwise interactions (C1 x C2, C3 x C4, I1 x C5)
so that models that capture feature crosses score measurably better than first-order ones. Written in chunks
with pyarrow (bounded memory, any size); deterministic for a given (rows, seed).

``cardinality="criteo"`` (``bars bench data --cardinality criteo``): every categorical field draws uniformly from
as many values as Kaggle Criteo's field has distinct values over its 45.8M rows (:data:`CRITEO_CARDINALITY`,
33.8M in all; a value is a 32-bit hash of its number, so no table of millions is held), instead of the default
10 .. 100,000 values drawn with a skew. At 45M rows that gives about Criteo's vocabulary sizes, which the
default file does not: what a prepare's memory depends on at real scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from bars.fileio import atomic_write

N_INT, N_CAT = 13, 26

#: distinct values of C1 .. C26 in Kaggle's Criteo display-advertising data (train.txt, 45,840,617 rows), the
#: figures of the DLRM and TorchRec Criteo Kaggle configurations
CRITEO_CARDINALITY = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992,
                      5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572)
CARDINALITIES = ("synthetic", "criteo")
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _hex8(x: np.ndarray) -> pa.Array:
    """uint32 ids as 8 lowercase hex digits each (``f"{x:08x}"``), built without Python strings."""
    n = len(x)
    shifts = np.arange(28, -4, -4, dtype=np.uint32)
    digits = np.empty((n, 8), dtype=np.uint8)
    for i in range(0, n, 1 << 20):  # bounded temporaries
        digits[i:i + (1 << 20)] = _HEX[(x[i:i + (1 << 20), None] >> shifts) & np.uint32(15)]
    return pa.StringArray.from_buffers(n, pa.py_buffer(np.arange(0, 8 * n + 1, 8, dtype=np.int32)),
                                       pa.py_buffer(digits))


def _vocab(rng: np.random.Generator, card: int) -> pa.Array:
    """``card`` random 32-bit ids as hex strings."""
    return _hex8(rng.integers(0, 2**32, size=card, dtype=np.uint64).astype(np.uint32))


def _hashed_values(ids: np.ndarray, salt: int) -> pa.Array:
    """Value number ``ids`` of a field as a 32-bit hex id (splitmix64 of ``ids + salt``): the criteo cardinality's
    values, computed per row instead of drawn into a table of millions per field."""
    z = ids.astype(np.uint64) + np.uint64(salt)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return _hex8(((z ^ (z >> np.uint64(31))) & np.uint64(0xFFFFFFFF)).astype(np.uint32))


def generate_criteo(path: str | Path, rows: int, seed: int = 0, chunk: int = 500_000, *,
                    cardinality: str = "synthetic") -> Path:
    import pyarrow.compute as pc  # here, not at import: `bars prepare data=synthetic` mostly finds the file made
    import pyarrow.csv as pacsv

    if cardinality not in CARDINALITIES:
        raise ValueError(f"cardinality {cardinality!r}: expected one of {', '.join(CARDINALITIES)}")
    criteo = cardinality == "criteo"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cards = list(CRITEO_CARDINALITY) if criteo else [round(10 ** (1 + 4 * i / (N_CAT - 1))) for i in range(N_CAT)]
    vocabs = None if criteo else [_vocab(rng, c) for c in cards]
    salts = [int(x) for x in rng.integers(0, 2**62, size=N_CAT)] if criteo else []
    main = [rng.normal(0, 0.6, size=min(c, 1 << 16)) for c in cards[:6]]  # criteo: by value number mod 2^16
    cross12 = rng.normal(0, 1.2, size=(16, 16))
    cross34 = rng.normal(0, 1.0, size=(16, 16))
    cross_i5 = rng.normal(0, 0.8, size=(8, 16))
    names = ["label"] + [f"I{i}" for i in range(1, N_INT + 1)] + [f"C{i}" for i in range(1, N_CAT + 1)]

    def write(tmp: Path) -> None:
        opts = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
        with pacsv.CSVWriter(str(tmp), pa.schema([(n, pa.string() if n.startswith("C") else pa.int64())
                                                  for n in names]), write_options=opts) as w:
            for start in range(0, rows, chunk):
                n = min(chunk, rows - start)
                crng = np.random.default_rng([seed, start])
                cats = [crng.integers(0, c, size=n) if criteo else
                        np.minimum((c * crng.random(n) ** 2.5).astype(np.int64), c - 1) for c in cards]
                ints = np.floor(np.exp(crng.normal(1.5, 1.5, size=(N_INT, n)))).astype(np.int64)
                ints[1] -= 2  # I2 may be negative, as in Criteo
                logit = -1.6 + sum(m[c % len(m)] for m, c in zip(main, cats[:6]))
                logit += cross12[cats[0] % 16, cats[1] % 16] + cross34[cats[2] % 16, cats[3] % 16]
                logit += cross_i5[np.minimum(np.log1p(np.maximum(ints[0], 0)).astype(np.int64), 7), cats[4] % 16]
                label = (crng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
                cols = [pa.array(label)]
                for i in range(N_INT):
                    miss = crng.random(n) < 0.1 * (i % 3)
                    cols.append(pa.array(ints[i], mask=miss))
                for i in range(N_CAT):
                    miss = crng.random(n) < (0.02 * (i % 5))
                    values = _hashed_values(cats[i], salts[i]) if criteo else vocabs[i].take(pa.array(cats[i]))
                    cols.append(pc.if_else(pa.array(miss), pa.scalar(None, pa.string()), values))
                w.write_table(pa.Table.from_arrays(cols, names=names))

    return atomic_write(path, write)
