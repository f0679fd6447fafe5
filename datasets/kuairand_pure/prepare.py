"""kuairand_pure: KuaiRand-Pure (Kuaishou, CC BY-SA 4.0), multi-task with behaviour histories.

Executed by `bars prepare data=kuairand_pure` (runpy). Reads from ``data.raw_dir`` (the archive's ``data/``
folder) the standard logs ``log_standard_4_08_to_4_21_pure.csv`` and ``log_standard_4_22_to_5_08_pure.csv``
(``data.random_log: true`` adds ``log_random_4_22_to_5_08_pure.csv``, the randomly exposed videos),
``user_features_pure.csv`` and ``video_features_basic_pure.csv``. Every impression becomes a row with its labels
(``data.labels``, any of the log's 0/1 signals), user and video features joined by id, and the histories of the
user's videos CLICKED strictly before it (``time_ms``; oldest first, the last ``data.history_max_len``,
pre-padded, sharing the video_id / author_id tables). Split by date (``data.split_dates``: valid and test from
those days on). The joined rows are staged as Parquet next to the prepared dataset's inputs, in
``data.raw_dir/derived/`` (named by a digest of the inputs and the keys that shape them).
"""

import hashlib
import json

import polars as pl

from bars.data.engine import Field, Recipe
from bars.data.errors import DataError
from bars.data.sources import Source
from bars.data.transforms import min_count_of, user_histories
from bars.fileio import atomic_write

LOGS = ["log_standard_4_08_to_4_21_pure.csv", "log_standard_4_22_to_5_08_pure.csv"]
RANDOM_LOG = "log_random_4_22_to_5_08_pure.csv"
USERS, VIDEOS = "user_features_pure.csv", "video_features_basic_pure.csv"
SIGNALS = ("is_click", "is_like", "is_follow", "is_comment", "is_forward", "is_hate", "long_view",
           "is_profile_enter")
LOG_COLUMNS = ("user_id", "video_id", "date", "hourmin", "time_ms", "tab", *SIGNALS)
USER_FIELDS = ("user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author",
               "follow_user_num_range", "fans_user_num_range", "friend_user_num_range", "register_days_range",
               *(f"onehot_feat{i}" for i in range(18)))
VIDEO_FIELDS = ("author_id", "video_type", "upload_type", "music_type")


def _read(path, needed):
    if not path.is_file():
        raise DataError(f"{path}: not found (expected the KuaiRand-Pure file {path.name} in data.raw_dir)")
    df = pl.read_csv(path, infer_schema_length=10_000)
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; expected KuaiRand-Pure's {list(needed)}")
    return df


def recipe(data, raw_dir):
    labels = list(data.get("labels") or ["is_click"])
    bad = [x for x in labels if x not in SIGNALS]
    if bad or len(set(labels)) != len(labels):
        raise DataError(f"data.labels={labels}: expected distinct log signals among {list(SIGNALS)}")
    dates = data.get("split_dates") or {}
    valid_from, test_from = int(dates.get("valid", 0)), int(dates.get("test", 0))
    if not 0 < valid_from <= test_from:
        raise DataError(f"data.split_dates: expected valid <= test (YYYYMMDD), got {dict(dates)}")
    max_len = int(data.get("history_max_len") or 50)
    with_history = bool(data.get("history", True))
    logs = LOGS + ([RANDOM_LOG] if data.get("random_log") else [])
    paths = [raw_dir / f for f in [*logs, USERS, VIDEOS]]
    digest = hashlib.sha256(json.dumps({
        "files": [(p.name, p.stat().st_size if p.is_file() else None) for p in paths], "labels": labels,
        "dates": [valid_from, test_from], "max_len": max_len, "history": with_history, "v": 1}).encode())
    stage = raw_dir / "derived" / f"kuairand_pure_{digest.hexdigest()[:12]}"
    if not all((stage / f"{k}.parquet").is_file() for k in ("train", "valid", "test")):
        ev = pl.concat([_read(raw_dir / f, LOG_COLUMNS).select(LOG_COLUMNS) for f in logs], how="vertical_relaxed")
        users = _read(raw_dir / USERS, ("user_id", *USER_FIELDS)).select("user_id", *USER_FIELDS)
        videos = _read(raw_dir / VIDEOS, ("video_id", *VIDEO_FIELDS)).select("video_id", *VIDEO_FIELDS)
        for name, df, key in ((USERS, users, "user_id"), (VIDEOS, videos, "video_id")):
            if df[key].is_duplicated().any():
                raise DataError(f"{raw_dir / name}: {key} {df.filter(pl.col(key).is_duplicated())[key][0]} "
                                "appears twice; expected one row per id")
        ev = ev.join(videos, on="video_id", how="left", maintain_order="left")
        if with_history:
            ev = user_histories(ev.with_columns((pl.col("is_click") == 1).alias("__clicked")), "user_id", "time_ms",
                                {"hist_videos": "video_id", "hist_authors": "author_id"}, max_len,
                                tiebreak="video_id", where="__clicked").drop("__clicked")
        ev = ev.join(users, on="user_id", how="left", maintain_order="left").with_columns(
            (pl.col("hourmin") // 100).alias("hour"))
        split = (pl.when(pl.col("date") >= test_from).then(pl.lit("test"))
                 .when(pl.col("date") >= valid_from).then(pl.lit("valid")).otherwise(pl.lit("train")))
        ev = ev.with_columns(split.alias("__split"), *[pl.col(x).cast(pl.Float32) for x in labels])
        for k in ("train", "valid", "test"):
            part = ev.filter(pl.col("__split") == k).drop("__split", "date", "hourmin", "time_ms",
                                                          *[s for s in SIGNALS if s not in labels])
            if part.height == 0:
                raise DataError(f"data.split_dates={dict(dates)}: no {k} rows (the logs cover 20220408-20220508)")
            atomic_write(stage / f"{k}.parquet", part.write_parquet)
    mc = min_count_of(data)
    fields = [Field(c, min_count=mc, source=f"log.{c}") for c in ("user_id", "video_id", "tab")]
    fields += [Field("hour", min_count=mc, source="log.hourmin // 100")]
    fields += [Field(c, min_count=mc, source=f"{USERS}.{c}") for c in USER_FIELDS]
    fields += [Field(c, min_count=mc, source=f"{VIDEOS}.{c}") for c in VIDEO_FIELDS]
    if with_history:
        fields += [
            Field("hist_videos", "sequence", min_count=mc, max_len=max_len, padding="pre", share_embedding="video_id",
                  source=f"the user's videos clicked strictly before this impression (time_ms), last {max_len}"),
            Field("hist_authors", "sequence", min_count=mc, max_len=max_len, padding="pre",
                  share_embedding="author_id", align_with="hist_videos", source="author_id of each of hist_videos"),
        ]
    sources = [Source(stage / f"{k}.parquet", split=k, fmt="parquet", label=labels[0]) for k in ("train", "valid", "test")]
    return Recipe(name=data["name"], sources=sources, fields=fields, labels=labels, rows=data.get("rows"),
                  layout="KuaiRand-Pure data/ (logs, user and video features)", official_split=False,
                  notes={"labels": ", ".join(labels), "split": f"by date: valid from {valid_from}, test from {test_from}",
                         "history": f"clicked videos strictly before, last {max_len}" if with_history else "none"})
