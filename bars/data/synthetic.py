"""Synthetic Criteo-format raw files (TAB, no header, label + I1..I13 + C1..C26) with planted interactions.

The click logit is a sum of main effects of a few fields plus pairwise interactions (C1 x C2, C3 x C4, I1 x C5)
so that models that capture feature crosses score measurably better than first-order ones. Written in chunks
with pyarrow (bounded memory, any size); deterministic for a given (rows, seed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from bars.fileio import atomic_write

N_INT, N_CAT = 13, 26


def _vocab(rng: np.random.Generator, card: int) -> pa.Array:
    return pa.array([f"{x:08x}" for x in rng.integers(0, 2**32, size=card, dtype=np.uint64)])


def generate_criteo(path: str | Path, rows: int, seed: int = 0, chunk: int = 500_000) -> Path:
    import pyarrow.compute as pc  # here, not at import: `bars prepare data=synthetic` mostly finds the file made
    import pyarrow.csv as pacsv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cards = [round(10 ** (1 + 4 * i / (N_CAT - 1))) for i in range(N_CAT)]  # 10 .. 100,000
    vocabs = [_vocab(rng, c) for c in cards]
    main = [rng.normal(0, 0.6, size=c) for c in cards[:6]]
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
                cats = [np.minimum((c * crng.random(n) ** 2.5).astype(np.int64), c - 1) for c in cards]
                ints = np.floor(np.exp(crng.normal(1.5, 1.5, size=(N_INT, n)))).astype(np.int64)
                ints[1] -= 2  # I2 may be negative, as in Criteo
                logit = -1.6 + sum(m[c] for m, c in zip(main, cats[:6]))
                logit += cross12[cats[0] % 16, cats[1] % 16] + cross34[cats[2] % 16, cats[3] % 16]
                logit += cross_i5[np.minimum(np.log1p(np.maximum(ints[0], 0)).astype(np.int64), 7), cats[4] % 16]
                label = (crng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
                cols = [pa.array(label)]
                for i in range(N_INT):
                    miss = crng.random(n) < 0.1 * (i % 3)
                    cols.append(pa.array(ints[i], mask=miss))
                for i in range(N_CAT):
                    miss = crng.random(n) < (0.02 * (i % 5))
                    values = vocabs[i].take(pa.array(cats[i]))
                    cols.append(pc.if_else(pa.array(miss), pa.scalar(None, pa.string()), values))
                w.write_table(pa.Table.from_arrays(cols, names=names))

    return atomic_write(path, write)
