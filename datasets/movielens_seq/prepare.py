"""movielens_seq: the shipped GroupLens ml-latest-small with each rating's behaviour history.

Executed by `bars prepare data=movielens_seq` (runpy). The rows, label (rating >= 4) and seeded 8:1:1 per-row
split are movielens_small's; added: ``genre`` (the movie's first listed genre) and, per rating, the user's
earlier-rated movies ``hist_movies`` and their first genres ``hist_genres`` (strictly before the rating's time,
oldest first, the last ``data.history_max_len`` kept, pre-padded; sharing the tables of ``movie`` and ``genre``).
``data.history: false`` leaves the two history fields out (same rows and split: the no-history baseline).
"""

import io
import zipfile

import polars as pl

from bars.data.engine import Field, Recipe
from bars.data.errors import DataError
from bars.data.sources import Source
from bars.data.transforms import min_count_of, user_histories

ZIP = "ml-latest-small.zip"


def recipe(data, raw_dir):
    path = raw_dir / ZIP
    if not path.is_file():
        raise DataError(f"{path}: not found (expected GroupLens {ZIP} in data.raw_dir={raw_dir})")
    with zipfile.ZipFile(path) as z:
        movies = pl.read_csv(io.BytesIO(z.read("ml-latest-small/movies.csv")), schema_overrides={"movieId": pl.Int64})
        ratings = pl.read_csv(io.BytesIO(z.read("ml-latest-small/ratings.csv")),
                              schema_overrides={"userId": pl.Int64, "movieId": pl.Int64, "timestamp": pl.Int64})
    movies = movies.select(
        pl.col("movieId"),
        pl.col("genres").alias("genres_raw"),
        pl.col("genres").str.split("|").list.first().alias("genre"),
        pl.col("title").str.extract(r"\((\d{4})\)\s*$", 1).cast(pl.Int64).alias("year"),
    )
    threshold = float(data.get("positive_rating", 4.0))
    with_history = bool(data.get("history", True))
    max_len = int(data.get("history_max_len") or 50)
    histories = None
    if with_history:  # every rating's history, keyed by (userId, movieId): unique in ml-latest-small
        events = ratings.join(movies.select("movieId", "genre"), on="movieId", how="left", maintain_order="left")
        if events.select(pl.struct("userId", "movieId").is_duplicated().any()).item():
            raise DataError(f"{path}: a user rated a movie twice; histories are keyed by (userId, movieId)")
        histories = user_histories(events, "userId", "timestamp",
                                   {"hist_movies": "movieId", "hist_genres": "genre"}, max_len,
                                   tiebreak="movieId").select("userId", "movieId", "hist_movies", "hist_genres")

    def transform(df):
        ts = pl.from_epoch(pl.col("timestamp"), time_unit="s")
        df = df.join(movies, on="movieId", how="left", maintain_order="left")
        cols = [
            pl.col("userId").alias("user"),
            pl.col("movieId").alias("movie"),
            pl.col("genre"),
            pl.col("genres_raw").alias("genres"),
            pl.col("year"),
            ts.dt.hour().cast(pl.Int64).alias("hour"),
            ts.dt.weekday().cast(pl.Int64).alias("weekday"),
            (pl.col("rating") >= threshold).cast(pl.Float32).alias("label"),
        ]
        if histories is not None:
            df = df.join(histories, on=["userId", "movieId"], how="left", maintain_order="left")
            cols += [pl.col("hist_movies"), pl.col("hist_genres")]
        return df.select(cols)

    mc = min_count_of(data)
    src = Source(path, member="ml-latest-small/ratings.csv", types={
        "userId": "int", "movieId": "int", "rating": "float", "timestamp": "int"}, label="rating")
    fields = [
        Field("user", min_count=mc, source="ratings.userId"),
        Field("movie", min_count=mc, source="ratings.movieId"),
        Field("genre", min_count=mc, source="movies.genres: the first listed genre"),
        Field("genres", "sequence", min_count=mc, max_len=data.get("genres_max_len"), sep="|",
              source="movies.genres split on |"),
        Field("year", min_count=mc, source="release year from movies.title '(YYYY)'"),
        Field("hour", min_count=mc, source="ratings.timestamp hour (UTC)"),
        Field("weekday", min_count=mc, source="ratings.timestamp weekday (UTC, 1 = Monday)"),
    ]
    if with_history:
        fields += [
            Field("hist_movies", "sequence", min_count=mc, max_len=max_len, padding="pre", share_embedding="movie",
                  source=f"the user's movies rated strictly before this rating, oldest first, last {max_len}"),
            Field("hist_genres", "sequence", min_count=mc, max_len=max_len, padding="pre", share_embedding="genre",
                  align_with="hist_movies", source="first genre of each movie of hist_movies"),
        ]
    return Recipe(name=data["name"], sources=[src], fields=fields, transform=transform,
                  split_ratios=tuple(data.get("split_ratios", (0.8, 0.1, 0.1))),
                  split_seed=int(data["split_seed"]), rows=data.get("rows"), layout="ml-latest-small.zip",
                  notes={"label": f"rating >= {threshold}",
                         "history": f"strictly earlier ratings of the user, last {max_len}" if with_history
                         else "none (data.history=false)"})
