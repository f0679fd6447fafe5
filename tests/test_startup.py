"""A bars process's start (bars.startup, bars.run.startup): the imports run with the garbage collector paused and
what they leave is frozen; only a command's own process does it, never a caller's (a test session)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str) -> Any:  # the JSON value the code printed last
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=str(ROOT))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_collector_paused_freezes_what_the_block_imported_and_restores_the_collector():
    got = _run("""
import gc, json
from bars.startup import collector_paused
seen = {"before": gc.isenabled(), "frozen_before": gc.get_freeze_count()}
with collector_paused():
    seen["inside"] = gc.isenabled()
    import email.mime.text  # a few thousand objects
seen["after"] = gc.isenabled()
seen["frozen_after"] = gc.get_freeze_count()
gc.disable()
with collector_paused():
    pass
seen["off_stays_off"] = not gc.isenabled()
print(json.dumps(seen))
""")
    assert got["before"] and not got["inside"] and got["after"] and got["off_stays_off"]
    assert got["frozen_before"] == 0 and got["frozen_after"] > 1000


_CLI = """
import gc, json, sys
from bars import cli, run
seen = []
run.main = lambda: seen.append({"frozen": gc.get_freeze_count(), "torch": "torch" in sys.modules,
                                "collector": gc.isenabled()}) or 0
cli.FAST_EXIT = frozenset()  # return to this code instead of ending the process
from bars import tracking_helper
tracking_helper.prestart = lambda: seen.append("prestart")
{call}
print(json.dumps(seen))
"""


def test_bars_train_as_its_own_process_imports_the_run_modules_first_with_the_collector_paused():
    own = _run(_CLI.replace("{call}", "sys.argv = ['bars', 'train']; cli.main()"))
    assert own[0] == "prestart"  # the tracking helper starts before the imports
    assert own[1]["torch"] and own[1]["frozen"] > 100_000 and own[1]["collector"]
    caller = _run(_CLI.replace("{call}", "cli.main(['train'])"))  # a caller's process (a test): nothing frozen
    assert caller == [{"frozen": 0, "torch": False, "collector": True}]


def test_the_tracking_helper_is_prestarted_once_per_process():
    got = _run("""
import json
from bars import tracking_helper as th
starts = []
class Fake:
    opts = None
    def __init__(self): starts.append(1)
    def kill(self): pass
th.Helper = Fake
th.prestart(); th.prestart()
n = len(starts)
th.discard(); th.prestart()
print(json.dumps([n, len(starts)]))
""")
    assert got == [1, 2]
