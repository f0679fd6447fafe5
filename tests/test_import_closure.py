"""bars.models (with bars.data.spec and the bars.fileio it writes with) imports only torch, the standard library and
itself, so the FuxiCTR reference
environment (make test-reference: its own venv, no hydra/mlflow/polars 2) can import it next to fuxictr."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

from bars.config import PROJECT_ROOT

ALLOWED_THIRD_PARTY = {"torch"}


def _closure_files() -> list[Path]:
    bars = PROJECT_ROOT / "bars"
    return sorted((bars / "models").rglob("*.py")) + [
        bars / "data" / "spec.py",
        bars / "data" / "__init__.py",
        bars / "fileio.py",
        bars / "process.py",  # fileio's temporaries are named for their process (stdlib only)
    ]


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def test_models_import_only_torch_stdlib_and_themselves():
    bad = []
    for path in _closure_files():
        for line, mod in _imports(path):
            top = mod.split(".")[0]
            ok = (
                top in sys.stdlib_module_names
                or top in ALLOWED_THIRD_PARTY
                or mod == "bars.models"
                or mod.startswith("bars.models.")
                or mod == "bars.data.spec"
                or mod == "bars.fileio"
                or mod == "bars.process"
            )
            if not ok:
                bad.append(f"{path.relative_to(PROJECT_ROOT)}:{line}: import {mod}")
    assert not bad, "bars.models must import only torch, the standard library, bars.models, bars.data.spec, bars.fileio and bars.process:\n" + (
        "\n".join(bad)
    )


def test_import_linter_contract_lists_every_other_dependency():
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    names = {"scikit-learn": "sklearn", "optuna-dashboard": "optuna_dashboard", "hydra-core": "hydra",
             "psycopg[binary]": "psycopg", "sqlalchemy": "sqlalchemy"}
    deps = set()
    for d in pyproject["project"]["dependencies"]:
        name = re.split(r"[<>=!~ ]", d, maxsplit=1)[0].strip()
        deps.add(names.get(name, names.get(name.lower(), name.lower().replace("-", "_"))))
    contract = next(
        c for c in pyproject["tool"]["importlinter"]["contracts"] if c["name"].startswith("bars.models imports only")
    )
    listed = set(contract["forbidden_modules"])
    missing = deps - ALLOWED_THIRD_PARTY - listed
    assert not missing, f"add {sorted(missing)} to the bars.models import-linter contract in pyproject.toml"
    assert "bars.*" in listed
