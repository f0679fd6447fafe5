"""synthetic_funnel: the multi-task demo, a seeded impression -> click -> conversion funnel (bars.data.funnel).

Executed by `bars prepare data=synthetic_funnel` (runpy). The generator writes
``funnel_<users>u_<impressions>i_<items>items_<categories>cats_<seed>.parquet`` into ``data.raw_dir`` on first use
(deterministic for those arguments, every one of which is in the name: a file of another size is never reused);
labels ``click`` and ``conversion`` (= click AND buy: ESMM's entire-space CTCVR label; ``label`` is
click); ``hist_items``/``hist_categories`` keep the most recent ``data.history_max_len`` clicks, strictly before
the impression, pre-padded, sharing the tables of ``item``/``category``; ``data.history: false`` leaves them out.
"""

import polars as pl

from bars.data.engine import Field, Recipe
from bars.data.errors import DataError
from bars.data.funnel import generate_funnel
from bars.data.sources import Source
from bars.data.transforms import min_count_of

# the generator's arguments (bars.data.funnel.generate_funnel) and their lowest value
GENERATOR_KEYS = {"users": 1, "impressions_per_user": 1, "items": 1, "categories": 1, "generator_seed": 0}


def generator_args(data) -> dict[str, int]:
    """The generator's arguments from ``data``: every key of GENERATOR_KEYS, an integer >= its lowest value; a
    missing or invalid one is a DataError naming it."""
    out = {}
    for key, low in GENERATOR_KEYS.items():
        v = data.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise DataError(f"data.{key} must be an integer >= {low} (synthetic_funnel's generator), got {v!r}")
        out[key] = v
    return out


def recipe(data, raw_dir):
    g = generator_args(data)
    path = raw_dir / (f"funnel_{g['users']}u_{g['impressions_per_user']}i_{g['items']}items_{g['categories']}cats_"
                      f"{g['generator_seed']}.parquet")
    if not path.exists():
        generate_funnel(path, users=g["users"], items=g["items"], categories=g["categories"],
                        impressions_per_user=g["impressions_per_user"], seed=g["generator_seed"])
    with_history = bool(data.get("history", True))
    max_len = int(data.get("history_max_len") or 50)
    mc = min_count_of(data)

    def transform(df):
        cols = [pl.col("user"), pl.col("item"), pl.col("category"),
                (pl.col("price").log1p() * 2).floor().cast(pl.Int64).alias("price_bucket"), pl.col("hour"),
                pl.col("click"), pl.col("conversion")]
        if with_history:
            cols += [pl.col("hist_items").list.tail(max_len), pl.col("hist_categories").list.tail(max_len)]
        return df.select(cols)

    fields = [
        Field("user", min_count=mc, source="generated user id"),
        Field("item", min_count=mc, source="generated item id"),
        Field("category", min_count=mc, source="the item's category"),
        Field("price_bucket", min_count=mc, source="floor(2 ln(1 + price))"),
        Field("hour", min_count=mc, source="hour of the impression"),
    ]
    if with_history:
        fields += [
            Field("hist_items", "sequence", min_count=mc, max_len=max_len, padding="pre", share_embedding="item",
                  source=f"the user's items clicked strictly before this impression, oldest first, last {max_len}"),
            Field("hist_categories", "sequence", min_count=mc, max_len=max_len, padding="pre",
                  share_embedding="category", align_with="hist_items", source="category of each of hist_items"),
        ]
    src = Source(path, fmt="parquet", label="click")
    return Recipe(name=data["name"], sources=[src], fields=fields, labels=["click", "conversion"],
                  transform=transform, split_ratios=tuple(data.get("split_ratios", (0.8, 0.1, 0.1))),
                  split_seed=int(data["split_seed"]), rows=data.get("rows"), layout="bars.data.funnel Parquet",
                  notes={"labels": "click; conversion = click AND buy (entire space, CTCVR)",
                         "history": f"clicks strictly before the impression, last {max_len}" if with_history
                         else "none (data.history=false)"})
