"""`bars <command> [hydra overrides...]`: dispatch to the thin entry point of each command.

Each command lives next to the code it drives and is a ``@hydra.main`` shell (or a small argparse shell for
commands that take no config) around a plain function that tests call directly.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("bars.data.prepare", "Prepare a dataset: raw files -> Parquet splits + feature spec"),
    "train": ("bars.run", "Train one model on one dataset under the BARS protocol, tracked in MLflow"),
    "sweep": ("bars.sweep", "Optuna hyperparameter sweep (one or many workers)"),
    "final": ("bars.final", "Rerun a sweep's best configuration with several seeds (stage=final)"),
    "leaderboard": ("bars.leaderboard", "Write results/ tables and plots from MLflow"),
    "board": ("bars.board", "A whole board: every model swept at one fair budget, final seeds, the leaderboard"),
    "reproduce": ("bars.reproduce", "Rerun one MLflow run exactly and compare metrics"),
    "predict": ("bars.predict", "Score a new raw file with a recorded run (its model and preprocessing)"),
    "export": ("bars.export", "Export a recorded run's model to ONNX or TorchScript, verified"),
    "compress": ("bars.compress", "Low-rank compression of a recorded run (atomic feature mimicking), evaluated"),
    "ui": ("bars.ui", "Start the MLflow UI over the project's tracking store (on 127.0.0.1)"),
    "sync": ("bars.spool", "Send tracking records kept locally while the store was unreachable"),
    "dashboard": ("bars.dashboard", "Start optuna-dashboard over a sweep's storage"),
    "bench": ("bars.bench", "Benchmarks: data, train, metrics, sweep"),
    "presets": ("bars.presets", "Published configurations: list, show, plan (the runs of a BARS board)"),
}


def usage() -> str:
    lines = ["usage: bars <command> [overrides...]", "", "commands:"]
    lines += [f"  {name:<12} {desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


# Commands whose process, run from the command line, ends without the interpreter's teardown (_exit_now)
FAST_EXIT = frozenset({"train"})


def main(argv: list[str] | None = None) -> int:
    own = argv is None  # this process's own command line (the `bars` script, python -m bars.cli), not a caller's
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"bars: unknown command {cmd!r}; commands are: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[cmd][0])
    if own and hasattr(module, "startup"):  # a command's own process first starts its helpers and imports (bars.run)
        module.startup()
    sys.argv = [f"bars {cmd}", *rest]
    rc = int(module.main() or 0)
    if own and cmd in FAST_EXIT:
        _exit_now(rc)
    return rc


def _exit_now(rc: int) -> None:
    """End the process now that its command is done: the atexit handlers (helper processes closed, temporary
    folders removed, logging shut down), the standard streams flushed, then ``os._exit(rc)``, skipping the
    interpreter's teardown of every module: ~0.8 s with torch loaded, a tenth of a demo ``bars train`` process
    (issue 16). Returns instead (the normal exit follows) when another non-daemon thread still runs, which the
    normal exit would wait for."""
    import atexit
    import contextlib
    import os
    import threading

    if any(t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return
    atexit._run_exitfuncs()  # the normal exit's handlers, in its order (no public equivalent)
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()  # type: ignore[union-attr]
    os._exit(rc)


if __name__ == "__main__":
    sys.exit(main())
