"""The model zoo. Every module in this package other than ``registry`` and ``layers`` (and names starting with
``_``) is imported here, so adding a model is one new file ``bars/models/<m>.py`` (with its ``@register``) plus
``conf/model/<m>.yaml``.
"""

from __future__ import annotations

import importlib
import pkgutil

from bars.models.registry import (
    ModelConfigError,
    build,
    config_class,
    list_models,
    make_config,
    model_class,
    register,
)

_INFRA = {"registry", "layers"}

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _mod not in _INFRA and not _mod.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod}")

__all__ = [
    "ModelConfigError",
    "build",
    "config_class",
    "list_models",
    "make_config",
    "model_class",
    "register",
]
