"""Validation before side effects: each command with one bad value exits with an error naming the key, and has
created nothing (no MLflow store or run, no study, no dataset, no file), run as a real ``bars`` process.

Also config fuzzing: random overrides of the composed config never end in an unnamed crash; each either composes
and validates, or fails with hydra's override/composition error or a :class:`bars.validate.ConfigError`.
"""

from __future__ import annotations

import pytest
from _reliability import command_env, tiny_args, tiny_csv
from hydra.errors import HydraException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bars.benchmarks.procs import CommandServer
from bars.config import compose
from bars.validate import SECTIONS, ConfigError, validate


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with CommandServer(stderr=tmp_path_factory.mktemp("srv") / "server.err") as srv:
        yield srv


def _overrides_file(path):
    path.write_text("model.params.dnn_hidden_units=[16]\n")
    return path


CASES = {  # command -> (extra argv, the key the error must name)
    "prepare": (["data.split_ratios=[0.5,0.5]"], "data.split_ratios"),
    "train": (["train.learning_rate=-1"], "train.learning_rate"),
    "sweep": (["train.learning_rate=-1", "sweep.trials=2"], "train.learning_rate"),
    "sweep-worker": (["sweep.role=worker", "sweep.trials=0"], "sweep.trials"),
    "final": (["train.learning_rate=-0.5", "final.seeds=2"], "train.learning_rate"),
    "final-seeds": (["final.seeds=0"], "final.seeds"),
    "leaderboard": (["leaderboard.alpha=2"], "leaderboard.alpha"),
    "dashboard": (["sweep.storage=bogus://x"], "sweep.storage"),
    "train-tracking": (["tracking.uri=nosuch://x"], "tracking.uri"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_value_creates_nothing(server, tmp_path, case):
    root = tmp_path / "project"
    root.mkdir()
    csv = tiny_csv(tmp_path / "tiny.csv")
    extra, key = CASES[case]
    command = case.split("-")[0]
    argv = [command, *tiny_args(root, csv, *extra)]
    if command == "final":
        argv.append(f"final.overrides={_overrides_file(tmp_path / 'best.overrides')}")
    if command == "leaderboard":
        argv = [command, f"paths.root={root}", *extra]
    log = tmp_path / "cmd.log"
    rc = server.run(argv, env=command_env(), cwd=root, log=log, timeout=300)
    out = log.read_text()
    assert rc != 0, out
    assert key in out and "Traceback" not in out, out
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert left == [], f"bars {command} with a bad {key} created {left}"


# ------------------------------------------------------------------------------------------- config fuzzing
def _leaves(cfg, prefix=""):
    out = []
    for k in cfg:
        v = cfg._get_node(k)  # the node itself: no interpolation is resolved while listing
        key = f"{prefix}{k}"
        if OmegaConf.is_dict(v):
            out += _leaves(v, key + ".")
        else:
            out.append(key)
    return out


_BASE = compose(["model=dcn", "data=movielens_small"])
KEYS = sorted(k for k in _leaves(_BASE) if not k.startswith(("hydra", "paths")))
VALUES = st.one_of(
    st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["null", "true", "false", "[]", "[1,2]", "{}", "''", "abc", "-1", "0", "1e-300", "nan",
                     "[-1,0]", "{a: 1}", "'${oc.env:NOPE}'", "'${nope}'"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12))


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3),
       st.sampled_from(sorted(SECTIONS)))
def test_random_overrides_fail_only_with_named_errors(pairs, command):
    overrides = ["model=dcn", "data=movielens_small", *(f"{k}={v}" for k, v in pairs)]
    try:
        cfg = compose(overrides)
        validate(cfg, command)
    except ConfigError as e:
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)
    except (HydraException, OmegaConfBaseException) as e:  # a malformed override or value: hydra names it
        assert str(e)
