"""movielenslatest_x1: BARS MovielensLatest_x1 (official CSVs, md5-checked; or AFN libsvm) on the shared engine."""

from bars.data.protocols import onehot_recipe


def recipe(data, raw_dir):
    return onehot_recipe(data, raw_dir, list(data["fields"]), allow_libsvm=True)
