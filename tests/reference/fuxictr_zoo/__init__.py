"""The FuxiCTR 2.3.10 counterparts of the registered bars models: one module per model (``<name>.py``, the bars
registry name), each defining ``REFERENCE = Reference(composition, transplant, cases, source)`` or, for a model
FuxiCTR does not have, ``PAPER_ONLY = PaperOnly(reason, check)``. Modules are discovered, so adding a model is
one new file here (README.md).

Besides the cases a module lists (its switches), every model config of the project (``conf/model/<id>.yaml``,
the variants crossnet / crossnetv2 / cin / autoint_plus included) whose model has a reference is a case of that
reference, ``conf:<id>``: the shipped defaults resolved at embedding_dim 10 with every dropout rate set to 0
(:func:`config_cases`), so a new config or a changed default is checked without editing anything here."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from pathlib import Path
from typing import Any

import yaml
from fuxictr_reference import PaperOnly, Reference, RefModel, feature_map

from bars.data.spec import FeatureSpec

CONF_MODEL = Path(__file__).resolve().parents[3] / "conf" / "model"
CONFIG_EMBEDDING_DIM = 10  # protocol.embedding_dim of the x1 splits (Frappe_x1 included)

REFERENCES: dict[str, Reference] = {}
PAPER_ONLY: dict[str, PaperOnly] = {}

# Registered models that HAVE a FuxiCTR 2.3.10 counterpart (model_zoo/<dir>) whose composition here is not written
# yet: NOT proven equal to the reference (issue 10 stays open while this is not empty). They are tested against
# their papers' equations in the fast suite (tests/test_models_*.py). Adding fuxictr_zoo/<m>.py removes the entry.
# Empty: every registered model with a FuxiCTR counterpart has its composition (AFN and AFN+ compare 10 training
# steps, Reference.steps with the reason).
PENDING: dict[str, str] = {}

for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    _mod = importlib.import_module(f"{__name__}.{_m}")
    _ref, _paper = getattr(_mod, "REFERENCE", None), getattr(_mod, "PAPER_ONLY", None)
    if (_ref is None) == (_paper is None):
        raise TypeError(f"tests/reference/fuxictr_zoo/{_m}.py must define exactly one of REFERENCE, PAPER_ONLY")
    if _ref is not None:
        if not isinstance(_ref, Reference):
            raise TypeError(f"fuxictr_zoo/{_m}.py: REFERENCE must be a Reference, got {type(_ref).__name__}")
        REFERENCES[_m] = _ref
    else:
        if not isinstance(_paper, PaperOnly):
            raise TypeError(f"fuxictr_zoo/{_m}.py: PAPER_ONLY must be a PaperOnly, got {type(_paper).__name__}")
        PAPER_ONLY[_m] = _paper


def model_configs() -> dict[str, tuple[str, dict[str, Any]]]:
    """``{config id: (registry name, params)}`` of every conf/model/<id>.yaml, ``${protocol.embedding_dim}``
    resolved to :data:`CONFIG_EMBEDDING_DIM` (PyYAML: the reference venv has no OmegaConf)."""
    out = {}
    for path in sorted(CONF_MODEL.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        params = {}
        for k, v in (raw.get("params") or {}).items():
            if isinstance(v, str) and re.fullmatch(r"\$\{protocol\.embedding_dim\}", v):
                v = CONFIG_EMBEDDING_DIM
            elif isinstance(v, str) and "${" in v:
                raise ValueError(f"{path}: params.{k}: interpolation {v!r} is not known to the reference suite")
            params[k] = v
        if raw.get("id") != path.stem:
            raise ValueError(f"{path}: id {raw.get('id')!r} is not the file name")
        out[path.stem] = (str(raw["name"]), params)
    return out


def config_cases(params: dict[str, Any]) -> dict[str, Any]:
    """A shipped config as a reference case: dropout rates that are set become 0 (the two libraries draw
    different masks; the 20-step comparison needs none), a list of rates (AFM's attention_dropout) a list of 0,
    everything else as shipped."""
    def zero(v):
        return [0.0] * len(v) if isinstance(v, list | tuple) else 0.0
    return {k: (zero(v) if k.endswith("dropout") and v is not None else v) for k, v in params.items()}


for _cid, (_name, _params) in model_configs().items():
    if _name in REFERENCES:
        _ref = REFERENCES[_name]
        REFERENCES[_name] = dataclasses.replace(_ref, cases={**_ref.cases, f"conf:{_cid}": config_cases(_params)})


def build_reference(name: str, case: str, spec: FeatureSpec, *, lr: float, reg_e: float, reg_n: float) -> RefModel:
    """The FuxiCTR composition of model ``name`` for configuration ``case`` (its own FuxiCTR initialisation)."""
    ref = REFERENCES[name]
    params = dict(ref.cases[case])
    dim = int(params.get("embedding_dim", 1))
    return ref.composition(feature_map(spec, dim), params, lr, reg_e, reg_n)


__all__ = ["PAPER_ONLY", "PENDING", "REFERENCES", "build_reference", "model_configs"]
