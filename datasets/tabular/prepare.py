"""tabular: a user's own CSV/Parquet files, described entirely by conf/data/tabular.yaml (or overrides).

Run through `bars prepare data=tabular ...` (this file is executed with runpy, never imported).
"""

from bars.data.engine import tabular_recipe


def recipe(data, raw_dir):
    return tabular_recipe(data, raw_dir)


if __name__ == "__main__":
    import sys

    from bars.data.prepare import main

    sys.argv = [sys.argv[0], "data=tabular", *sys.argv[1:]]
    sys.exit(main())
