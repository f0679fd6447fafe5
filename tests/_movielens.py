"""The raw rows of movielens_small's splits, for tests that feed raw files to bars predict / bars.data.apply."""

from __future__ import annotations

import io
import zipfile

import polars as pl

from bars.config import PROJECT_ROOT
from bars.data import transforms as T

ML_ZIP = PROJECT_ROOT / "datasets" / "movielens_small" / "raw" / "ml-latest-small.zip"


def movielens_raw_splits(seed: int = 2021, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> dict[str, pl.DataFrame]:
    """The raw ratings rows of each split (the recipe's seeded per-row assignment), in file order."""
    with zipfile.ZipFile(ML_ZIP) as z:
        ratings = pl.read_csv(io.BytesIO(z.read("ml-latest-small/ratings.csv")))
    ids = T.assign_split(0, ratings.height, seed, ratios)
    return {k: ratings.filter(pl.Series(ids == i)) for i, k in enumerate(T.SPLITS)}
