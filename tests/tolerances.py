"""Dtype-keyed tolerances for kernel and numerics tests (Levanter's rule: ~1e-5 for simple float32 arithmetic,
rtol 1e-2 for bfloat16), in one helper module the tests import (not from ``conftest.py``)."""

import numpy as np


def tolerances(dtype) -> dict:
  """``dict(rtol=..., atol=...)`` for ``np.testing.assert_allclose`` at ``dtype``.

  Example:
    >>> tolerances(np.float32)
    {'rtol': 1e-05, 'atol': 1e-05}
  """
  name = np.dtype(dtype).name
  if name == "bfloat16":
    return dict(rtol=2e-2, atol=2e-2)
  if name == "float16":
    return dict(rtol=1e-2, atol=1e-2)
  return dict(rtol=1e-5, atol=1e-5)
