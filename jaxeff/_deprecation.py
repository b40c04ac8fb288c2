"""Deprecated aliases kept for one release: a module-level ``__getattr__`` that forwards moved names."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable


def moved(module: str, targets: dict[str, str]) -> Callable[[str], object]:
  """A module ``__getattr__`` for ``module`` that forwards each old name in ``targets`` to its new home
  (``"pkg.mod"`` or ``"pkg.mod:new_name"``) with a ``DeprecationWarning``; other names raise AttributeError.

  Example:
    >>> __getattr__ = moved("old.place", {"sqrt": "math", "root": "math:sqrt"})
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as w:
    ...   warnings.simplefilter("always")
    ...   __getattr__("root")(4.0), str(w[0].message)
    (2.0, 'old.place.root moved to math.sqrt')
  """

  def __getattr__(name: str):
    if name not in targets:
      raise AttributeError(f"module {module!r} has no attribute {name!r}")
    where, _, new = targets[name].partition(":")
    new = new or name
    warnings.warn(f"{module}.{name} moved to {where}.{new}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(where), new)

  return __getattr__
