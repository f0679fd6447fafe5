"""The `bars` command dispatcher and the Makefile's help."""

import subprocess
import sys
from pathlib import Path

from bars import cli

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_is_an_error_listing_commands(capsys):
    assert cli.main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and "train" in err


def test_every_command_module_has_a_main():
    import importlib

    for name, (module, _) in cli.COMMANDS.items():
        mod = importlib.import_module(module)
        assert callable(getattr(mod, "main", None)), f"{module} has no main() for `bars {name}`"


def test_make_help_lists_targets():
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for target in ("install", "data", "train", "sweep", "final", "board", "leaderboard", "reproduce", "ui", "test", "bench"):
        assert f"make {target}" in out, target


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "bars.cli", "--help"], capture_output=True, text=True, check=True)
    assert "usage: bars" in out.stdout


def test_exit_now_runs_the_exit_handlers_flushes_and_keeps_the_code(tmp_path):
    """``bars train`` from the command line ends with ``_exit_now``: atexit handlers run, buffered output is
    written, the exit code kept; with another non-daemon thread alive it returns and the normal exit waits."""
    mark = tmp_path / "atexit-ran"
    code = ("import atexit, sys; from bars.cli import _exit_now; "
            f"atexit.register(lambda: open({str(mark)!r}, 'w').write('x')); "
            "print('buffered', end=''); sys.stderr.write('err'); _exit_now(3); print('not reached')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert (out.returncode, out.stdout, out.stderr) == (3, "buffered", "err")
    assert mark.read_text() == "x"
    code = ("import threading, time, sys; from bars.cli import _exit_now; "
            "t = threading.Thread(target=lambda: (time.sleep(0.5), print('thread done'))); t.start(); "
            "_exit_now(3); print('returned')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.split() == ["returned", "thread", "done"]
