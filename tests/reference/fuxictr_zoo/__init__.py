"""The FuxiCTR 2.3.10 counterparts of the registered bars models: one module per model (``<name>.py``, the bars
registry name), each defining ``REFERENCE = Reference(composition, transplant, cases, source)`` or, for a model
FuxiCTR does not have, ``PAPER_ONLY = PaperOnly(reason, check)``. Modules are discovered, so adding a model is
one new file here (README.md)."""

from __future__ import annotations

import importlib
import pkgutil

from fuxictr_reference import PaperOnly, Reference, RefModel, feature_map

from bars.data.spec import FeatureSpec

REFERENCES: dict[str, Reference] = {}
PAPER_ONLY: dict[str, PaperOnly] = {}

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


def build_reference(name: str, case: str, spec: FeatureSpec, *, lr: float, reg_e: float, reg_n: float) -> RefModel:
    """The FuxiCTR composition of model ``name`` for configuration ``case`` (its own FuxiCTR initialisation)."""
    ref = REFERENCES[name]
    params = dict(ref.cases[case])
    dim = int(params.get("embedding_dim", 1))
    return ref.composition(feature_map(spec, dim), params, lr, reg_e, reg_n)


__all__ = ["PAPER_ONLY", "REFERENCES", "build_reference"]
