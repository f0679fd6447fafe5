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
