"""Type checks of a plain dict (a JSON / YAML file's contents) against a dataclass's field annotations, before
the dataclass is built: a config file read from disk never reaches ``__post_init__`` with a string where an int
belongs (``steps: abc`` compared with ``<`` raised TypeError), a null where a value is required, or a bool spelled
``"no"``. Every problem is listed in one message."""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}


@functools.cache
def _hints(cls) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def _describe(hint) -> str:
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin in (typing.Union, types.UnionType):
    return " or ".join(_describe(a) for a in args)
  if origin is tuple:
    return f"a list of {_describe(args[0])}" if len(args) == 2 and args[1] is Ellipsis else "a list"
  if dataclasses.is_dataclass(hint) or origin is dict:
    return "a mapping"
  return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def value_ok(value: Any, hint: Any) -> bool:
  """Whether ``value`` (as JSON / YAML gives it) fits annotation ``hint``: ints are not bools, floats accept ints
  and must be finite, tuples accept lists, dataclasses accept mappings; an annotation it does not know passes."""
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if hint is Any:
    return True
  if origin in (typing.Union, types.UnionType):
    return any(value_ok(value, a) for a in args)
  if hint is type(None):
    return value is None
  if hint is bool:
    return isinstance(value, bool)
  if hint is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if hint is float:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
  if hint is str:
    return isinstance(value, str)
  if origin is tuple:
    if not isinstance(value, list | tuple):
      return False
    if len(args) == 2 and args[1] is Ellipsis:
      return all(value_ok(v, args[0]) for v in value)
    return len(args) == len(value) and all(value_ok(v, a) for v, a in zip(value, args, strict=True))
  if dataclasses.is_dataclass(hint):
    return isinstance(value, Mapping | hint)
  if origin is dict or hint is dict:
    return isinstance(value, Mapping)
  return True


def field_problems(cls, d: Any, prefix: str = "") -> list[str]:
  """Every problem of mapping ``d`` as the fields of dataclass ``cls``: not a mapping, unknown keys, required
  fields missing, values of the wrong type (``prefix`` names nested fields, e.g. ``model.``).

  Example:
    >>> from jaxeff.training.optim import OptimizerConfig
    >>> field_problems(OptimizerConfig, {"steps": "abc", "lr": None, "speed": 1})
    ["unknown key 'speed'", "steps: expected an integer, got 'abc'", 'lr: expected a number, got null']
  """
  if not isinstance(d, Mapping):
    return [f"{prefix.rstrip('.') or 'config'}: expected a mapping of fields, got {_show(d)}"]
  hints = _hints(cls)
  fields = {f.name: f for f in dataclasses.fields(cls)}
  out = [f"unknown key {prefix + k!r}" for k in d if k not in fields]
  for name, f in fields.items():
    if name not in d:
      if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        out.append(f"{prefix}{name}: required")
      continue
    if not value_ok(d[name], hints[name]):
      out.append(f"{prefix}{name}: expected {_describe(hints[name])}, got {_show(d[name])}")
  return out


def _show(v) -> str:
  if v is None:
    return "null"
  if isinstance(v, bool):
    return "true" if v else "false"
  text = repr(v)
  return text if len(text) <= 60 else text[:57] + "..."
