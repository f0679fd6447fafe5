"""`bars bench <name> [args]`: benchmarks that print figures (never timed unit tests)."""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "data": "bars.benchmarks.data",
    "train": "bars.benchmarks.train",
    "metrics": "bars.benchmarks.metrics",
    "sweep": "bars.benchmarks.sweep",
    "missing": "bars.benchmarks.missing",
    "fidelity": "bars.benchmarks.fidelity",
    "predict": "bars.benchmarks.predict",
    "esmm": "bars.benchmarks.esmm",
    "load": "bars.benchmarks.load",
    "methods": "bars.benchmarks.methods",
}


def main() -> int:
    args = sys.argv[1:]
    if not args or args[0] not in BENCHES:
        print(f"usage: bars bench {{{'|'.join(BENCHES)}}} [args]", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHES[args[0]])
    sys.argv = [f"bars bench {args[0]}", *args[1:]]
    return int(module.main() or 0)
