"""kuairand_pure from files of KuaiRand-Pure's layout (made here: the real archive is not on this machine): the
split by date, several labels, user/video features joined by id, and histories of the user's CLICKED videos
strictly before each impression; bad input is named."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from bars.config import compose
from bars.data.errors import DataError
from bars.data.loader import load_dataset
from bars.data.prepare import prepare

USER_FIELDS = ["user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author",
               "follow_user_num_range", "fans_user_num_range", "friend_user_num_range", "register_days_range",
               *(f"onehot_feat{i}" for i in range(18))]


def _raw(tmp_path, n=400, seed=0):
    rng = np.random.default_rng(seed)
    raw = tmp_path / "raw"
    raw.mkdir()
    days = np.array([20220408 + d for d in range(23)] + [20220501 + d for d in range(8)])
    day = np.sort(rng.choice(days, n))
    log = pl.DataFrame({
        "user_id": rng.integers(0, 15, n), "video_id": rng.integers(100, 140, n), "date": day,
        "hourmin": rng.integers(0, 24, n) * 100, "time_ms": day.astype(np.int64) * 100_000 + rng.integers(0, 9, n),
        "is_click": rng.integers(0, 2, n), "is_like": rng.integers(0, 2, n), "is_follow": 0, "is_comment": 0,
        "is_forward": 0, "is_hate": 0, "long_view": rng.integers(0, 2, n), "play_time_ms": 1, "duration_ms": 2,
        "profile_stay_time": 0, "comment_stay_time": 0, "is_profile_enter": 0, "is_rand": 0,
        "tab": rng.integers(0, 3, n)})
    early = log["date"] < 20220422
    log.filter(early).write_csv(raw / "log_standard_4_08_to_4_21_pure.csv")
    log.filter(~early).write_csv(raw / "log_standard_4_22_to_5_08_pure.csv")
    users = pl.DataFrame({"user_id": np.arange(15), **{c: rng.integers(0, 3, 15) for c in USER_FIELDS}})
    users.write_csv(raw / "user_features_pure.csv")
    videos = pl.DataFrame({"video_id": np.arange(100, 140), "author_id": np.arange(40) % 9,
                           "video_type": "NORMAL", "upload_dt": "2022-01-01", "upload_type": "ShortImport",
                           "visible_status": 0, "video_duration": 1.0, "music_id": 1, "music_type": 9,
                           "tag": "1,2"})
    videos.write_csv(raw / "video_features_basic_pure.csv")
    return raw, log


def test_kuairand_pure_rows_labels_and_histories(tmp_path):
    raw, log = _raw(tmp_path)
    cfg = compose(["data=kuairand_pure", f"data.raw_dir={raw}", f"paths.data={tmp_path / 'data'}",
                   "data.history_max_len=5"])
    out = prepare(cfg, quiet=True)
    ds = load_dataset(out)
    spec = ds.spec
    assert spec.labels == ("is_click", "long_view", "is_like")
    assert spec["hist_videos"].share_embedding == "video_id" and spec["hist_authors"].share_embedding == "author_id"
    sizes = [len(ds.splits[k]) for k in ("train", "valid", "test")]
    assert sizes == [int((log["date"] < 20220502).sum()),
                     int(((log["date"] >= 20220502) & (log["date"] < 20220505)).sum()),
                     int((log["date"] >= 20220505).sum())]
    tr = ds.splits["train"]
    assert tr.labels.shape == (sizes[0], 3) and tr.label_names == ("is_click", "long_view", "is_like")
    # the staged rows (before encoding): histories hold only clicks strictly before, the most recent 5
    staged = pl.read_parquet(next((raw / "derived").glob("kuairand_pure_*")) / "train.parquet")
    first = log.filter(pl.col("date") < 20220502)
    clicks = log.filter(pl.col("is_click") == 1).sort(["user_id", "time_ms", "video_id"])
    for i in range(0, staged.height, 17):
        row, ev = staged.row(i, named=True), first.row(i, named=True)
        prev = clicks.filter((pl.col("user_id") == ev["user_id"]) & (pl.col("time_ms") < ev["time_ms"]))
        assert row["hist_videos"] == prev["video_id"].to_list()[-5:]
        assert row["hist_authors"] == [v % 100 % 9 for v in row["hist_videos"]]
    assert staged["user_active_degree"].null_count() == 0  # user features joined


def test_kuairand_pure_bad_input_is_named(tmp_path):
    raw, _ = _raw(tmp_path)
    base = ["data=kuairand_pure", f"data.raw_dir={raw}", f"paths.data={tmp_path / 'data'}"]
    with pytest.raises(DataError, match="data.labels"):
        prepare(compose([*base, "data.labels=[is_click,clicks]"]), quiet=True)
    with pytest.raises(DataError, match="data.split_dates"):
        prepare(compose([*base, "data.split_dates.valid=20220506"]), quiet=True)
    videos = raw / "video_features_basic_pure.csv"
    kept = videos.read_bytes()
    videos.unlink()
    with pytest.raises(DataError, match="video_features_basic_pure.csv: not found"):
        prepare(compose(base), quiet=True)
    videos.write_bytes(kept)
    (raw / "user_features_pure.csv").write_text("user_id,x\n1,2\n")
    with pytest.raises(DataError, match=r"user_features_pure.csv: missing columns \['user_active_degree'"):
        prepare(compose(base), quiet=True)
