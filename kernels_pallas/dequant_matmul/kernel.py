"""Deprecated module (one release): the dequantizing matmul moved to ``reference`` / ``xla`` / ``tpu`` / ``api``
beside this file; import from ``kernels_pallas.dequant_matmul`` instead."""

from __future__ import annotations

import warnings

_MOVED = {
  "dequantize": "reference",
  "dequant_matmul_reference": "reference",
  "dequant_matmul_xla": "xla",
  "dequant_matmul_pallas": "tpu",
}


def __getattr__(name):
  if name not in _MOVED:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  import importlib

  where = f"kernels_pallas.dequant_matmul.{_MOVED[name]}"
  warnings.warn(f"kernels_pallas.dequant_matmul.kernel.{name} moved to {where}", DeprecationWarning, stacklevel=2)
  return getattr(importlib.import_module(where), name)
