"""A seeded impression -> click -> conversion funnel with users' latent interests and behaviour histories.

The multi-task demo data (``data=synthetic_funnel``): every impression has a click label and a conversion label
that is 1 only for clicked impressions that convert (ESMM's entire space: ``conversion`` = click AND buy, the
CTCVR label; the post-click conversion rate is learnable only from the clicked rows). What decides each label:

- click: user taste x item vector (a latent dot product), the item's popularity, and the share of the user's
  recent clicks (the behaviour history) in the item's category: histories carry signal;
- conversion given a click: a second user vector (correlated with the taste, 0.6) x the item vector, and the
  user's price sensitivity x the item's price: partly shared with click, partly its own.

Deterministic for given arguments; written as one Parquet file (temporary path, then rename).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bars.fileio import atomic_write

DIM = 8
RECENT = 20  # clicks whose categories shape the history effect


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def generate_funnel(path: str | Path, users: int = 3000, items: int = 2000, categories: int = 30,
                    impressions_per_user: int = 40, seed: int = 0, oracle: bool = False) -> Path:
    """Write the funnel to ``path`` (Parquet): columns user, item, category, price, hour, time, hist_items and
    hist_categories (the user's items clicked strictly before this impression, oldest first, all of them: the
    recipe keeps the most recent), click, conversion. Rows are ordered by user, then time. ``oracle``: three more
    columns, never observable in real data, for benchmarks only: ``would_convert`` (the conversion draw of every
    impression, clicked or not: what a CVR model should predict over the entire space), ``convert_probability``
    (the probability that draw had: the best any CVR model can score) and ``click_probability``; the other
    columns are the same with or without them."""
    if min(users, items, categories, impressions_per_user) < 1:
        raise ValueError("generate_funnel: users, items, categories and impressions_per_user must be >= 1")
    rng = np.random.default_rng(seed)
    taste = rng.normal(size=(users, DIM))
    buy = 0.6 * taste + 0.8 * rng.normal(size=(users, DIM))
    price_sens = rng.gamma(2.0, 0.5, size=users)
    vec = rng.normal(size=(items, DIM))
    cat = rng.integers(0, categories, size=items)
    price = np.round(rng.lognormal(3.0, 0.8, size=items), 2)
    price_z = (np.log(price) - 3.0) / 0.8
    pop = rng.zipf(1.6, size=items).astype(float)
    pop_w = pop / pop.sum()
    pop_z = (np.argsort(np.argsort(pop, kind="stable"), kind="stable") / max(items - 1, 1) - 0.5) * 2  # rank, [-1, 1]
    cols: dict[str, list] = {k: [] for k in ("user", "item", "category", "price", "hour", "time", "hist_items",
                                             "hist_categories", "click", "conversion", "would_convert",
                                             "convert_probability", "click_probability")}
    scale = 1.0 / np.sqrt(DIM)
    for u in range(users):
        n = 1 + int(rng.poisson(impressions_per_user - 1))
        shown = np.where(rng.random(n) < 0.5, rng.choice(items, size=n, p=pop_w), rng.integers(0, items, size=n))
        times = np.sort(rng.choice(30 * 86400, size=n, replace=False))  # distinct: "before" is unambiguous
        affinity = vec[shown] @ taste[u] * scale
        conv_aff = vec[shown] @ buy[u] * scale
        cvr = _sigmoid(-2.2 + 1.2 * conv_aff - price_sens[u] * price_z[shown])
        u_conv = rng.random(n) < cvr
        u_click_draw = rng.random(n)
        base = -2.4 + 1.0 * affinity + 0.5 * pop_z[shown]
        clicked_items: list[int] = []
        clicked_cats: list[int] = []
        recent = np.zeros(categories)  # categories of the last RECENT clicks
        for j in range(n):
            i = int(shown[j])
            k = min(len(clicked_cats), RECENT)
            share = recent[cat[i]] / k if k else 0.0
            ctr = float(_sigmoid(base[j] + 2.0 * share))
            click = bool(u_click_draw[j] < ctr)
            cols["user"].append(u)
            cols["item"].append(i)
            cols["category"].append(int(cat[i]))
            cols["price"].append(float(price[i]))
            cols["hour"].append(int(times[j] % 86400) // 3600)
            cols["time"].append(int(times[j]))
            cols["hist_items"].append(list(clicked_items))
            cols["hist_categories"].append(list(clicked_cats))
            cols["click"].append(float(click))
            cols["conversion"].append(float(click and u_conv[j]))
            cols["would_convert"].append(float(u_conv[j]))
            cols["convert_probability"].append(float(cvr[j]))
            cols["click_probability"].append(ctr)
            if click:
                if len(clicked_cats) >= RECENT:
                    recent[clicked_cats[-RECENT]] -= 1
                clicked_items.append(i)
                clicked_cats.append(int(cat[i]))
                recent[cat[i]] += 1
    table = pa.table({
        "user": pa.array(cols["user"], pa.int64()), "item": pa.array(cols["item"], pa.int64()),
        "category": pa.array(cols["category"], pa.int64()), "price": pa.array(cols["price"], pa.float64()),
        "hour": pa.array(cols["hour"], pa.int64()), "time": pa.array(cols["time"], pa.int64()),
        "hist_items": pa.array(cols["hist_items"], pa.list_(pa.int64())),
        "hist_categories": pa.array(cols["hist_categories"], pa.list_(pa.int64())),
        "click": pa.array(cols["click"], pa.float32()), "conversion": pa.array(cols["conversion"], pa.float32()),
    })
    if oracle:
        for k in ("would_convert", "convert_probability", "click_probability"):
            table = table.append_column(k, pa.array(cols[k], pa.float32() if k == "would_convert" else pa.float64()))
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))
