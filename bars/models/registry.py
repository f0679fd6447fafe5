"""The strict model registry.

    @register("dcn", DCNConfig)
    class DCN(nn.Module):
        def __init__(self, spec: FeatureSpec, cfg: DCNConfig): ...

``build(name, spec, params)`` validates ``params`` against the config dataclass (unknown keys, missing required
keys and mistyped values raise :class:`ModelConfigError` listing the valid fields and their types), converts
OmegaConf containers to plain Python (lists -> tuples) and returns ``Model(spec, cfg)``.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args, get_origin

from torch import nn

from bars.data.spec import FeatureSpec

_MODELS: dict[str, tuple[type[nn.Module], type]] = {}


class ModelConfigError(ValueError):
    """Unknown model name, or model params that do not match the model's config dataclass."""


def register(name: str, config_cls: type) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator registering ``model_cls`` under ``name`` with its frozen config dataclass."""
    if not dataclasses.is_dataclass(config_cls) or not config_cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"register({name!r}): {config_cls!r} must be a frozen dataclass")

    def deco(model_cls: type[nn.Module]) -> type[nn.Module]:
        if name in _MODELS and _MODELS[name][0] is not model_cls:
            raise ValueError(f"model {name!r} is already registered by {_MODELS[name][0].__qualname__}")
        _MODELS[name] = (model_cls, config_cls)
        return model_cls

    return deco


def list_models() -> list[str]:
    return sorted(_MODELS)


def _entry(name: str) -> tuple[type[nn.Module], type]:
    if name not in _MODELS:
        raise ModelConfigError(f"unknown model {name!r}; registered models: {list_models()}")
    return _MODELS[name]


def model_class(name: str) -> type[nn.Module]:
    return _entry(name)[0]


def config_class(name: str) -> type:
    return _entry(name)[1]


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) if get_origin(tp) is None else str(tp).replace("typing.", "")  # type: ignore[return-value]


def describe_fields(config_cls: type) -> str:
    """``name: type [= default]`` per field, one per line."""
    hints = typing.get_type_hints(config_cls)
    lines = []
    for f in dataclasses.fields(config_cls):
        d = ""
        if f.default is not dataclasses.MISSING:
            d = f" = {f.default!r}"
        lines.append(f"  {f.name}: {_type_name(hints[f.name])}{d}")
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain Python. bars.models never imports omegaconf (its import closure is torch and
    the standard library): a value can only be an OmegaConf container if the caller has imported omegaconf."""
    oc = sys.modules.get("omegaconf")
    if oc is not None and isinstance(value, (oc.DictConfig, oc.ListConfig)):
        return oc.OmegaConf.to_container(value, resolve=True)
    return value


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against (and minimally coerced to) type ``tp``; raises TypeError with a reason."""
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise TypeError(f"{where}: {value!r} is not one of {get_args(tp)}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, arg, where)
            except TypeError as e:
                errors.append(str(e))
        raise TypeError(f"{where}: {value!r} does not match {tp} ({'; '.join(errors)})")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise TypeError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{where}: expected bool, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{where}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{where}: expected float, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected str, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"{where}: unsupported config field type {tp}")  # pragma: no cover


def make_config(name: str, params: Mapping[str, Any]) -> Any:
    """The validated config dataclass instance of model ``name`` from ``params``."""
    _, cfg_cls = _entry(name)
    params = _plain(params)
    if not isinstance(params, Mapping):
        raise ModelConfigError(f"model {name!r}: params must be a mapping, got {type(params).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cfg_cls)}
    hints = typing.get_type_hints(cfg_cls)
    valid = f"valid fields of {cfg_cls.__name__}:\n{describe_fields(cfg_cls)}"
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ModelConfigError(f"model {name!r}: unknown params {unknown}; {valid}")
    missing = sorted(
        n
        for n, f in fields.items()
        if n not in params and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ModelConfigError(f"model {name!r}: missing params {missing}; {valid}")
    values = {}
    for k, v in params.items():
        try:
            values[k] = _coerce(_plain(v), hints[k], f"model {name!r} param {k!r}")
        except TypeError as e:
            raise ModelConfigError(f"{e}; {valid}") from None
    try:
        return cfg_cls(**values)
    except (TypeError, ValueError) as e:
        raise ModelConfigError(f"model {name!r}: invalid params: {e}") from None


def build(name: str, spec: FeatureSpec, params: Mapping[str, Any]) -> nn.Module:
    """Model ``name`` built for ``spec`` from ``params`` (``cfg.model.params``; plain dict or OmegaConf)."""
    model_cls, _ = _entry(name)
    cfg = make_config(name, params)
    return model_cls(spec, cfg)
