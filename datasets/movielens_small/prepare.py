"""movielens_small: GroupLens ml-latest-small.zip -> user, movie, genres, year, hour, weekday; label rating>=4.

Executed by `bars prepare data=movielens_small` (runpy). Seeded 8:1:1 per-row split (data.split_seed).
"""

import io
import zipfile

import polars as pl

from bars.data.engine import Field, Recipe
from bars.data.errors import DataError
from bars.data.sources import Source
from bars.data.transforms import min_count_of

ZIP = "ml-latest-small.zip"


def recipe(data, raw_dir):
    path = raw_dir / ZIP
    if not path.is_file():
        raise DataError(f"{path}: not found (expected GroupLens {ZIP} in data.raw_dir={raw_dir})")
    with zipfile.ZipFile(path) as z:
        movies = pl.read_csv(io.BytesIO(z.read("ml-latest-small/movies.csv")), schema_overrides={"movieId": pl.Int64})
    movies = movies.select(
        pl.col("movieId"),
        pl.col("genres").alias("genres_raw"),
        pl.col("title").str.extract(r"\((\d{4})\)\s*$", 1).cast(pl.Int64).alias("year"),
    )
    threshold = float(data.get("positive_rating", 4.0))

    def transform(df):
        ts = pl.from_epoch(pl.col("timestamp"), time_unit="s")
        return df.join(movies, on="movieId", how="left", maintain_order="left").select(
            pl.col("userId").alias("user"),
            pl.col("movieId").alias("movie"),
            pl.col("genres_raw").alias("genres"),
            pl.col("year"),
            ts.dt.hour().cast(pl.Int64).alias("hour"),
            ts.dt.weekday().cast(pl.Int64).alias("weekday"),
            (pl.col("rating") >= threshold).cast(pl.Float32).alias("label"),
        )

    mc = min_count_of(data)
    src = Source(path, member="ml-latest-small/ratings.csv", types={
        "userId": "int", "movieId": "int", "rating": "float", "timestamp": "int"}, label="rating")
    fields = [
        Field("user", min_count=mc, source="ratings.userId"),
        Field("movie", min_count=mc, source="ratings.movieId"),
        Field("genres", "sequence", min_count=mc, max_len=data.get("genres_max_len"), sep="|",
              source="movies.genres split on |"),
        Field("year", min_count=mc, source="release year from movies.title '(YYYY)'"),
        Field("hour", min_count=mc, source="ratings.timestamp hour (UTC)"),
        Field("weekday", min_count=mc, source="ratings.timestamp weekday (UTC, 1 = Monday)"),
    ]
    return Recipe(name=data["name"], sources=[src], fields=fields, transform=transform,
                  split_ratios=tuple(data.get("split_ratios", (0.8, 0.1, 0.1))),
                  split_seed=int(data["split_seed"]), rows=data.get("rows"), layout="ml-latest-small.zip",
                  notes={"label": f"rating >= {threshold}"})
