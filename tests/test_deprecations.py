"""Names that moved keep working for one release, with a DeprecationWarning that names the new home."""

import importlib

import pytest

ALIASES = [
  ("jaxeff.kvcache", "MiniCache", "jaxeff.kvcache.peers", "MiniCacheMerge"),
  ("jaxeff.kvcache.judgeq", "train_judgeq", "jaxeff.training.judgeq", "train_judgeq"),
  ("jaxeff.kvcache.evaluate", "teacher_forced", "jaxeff.evals.cached", "teacher_forced"),
  (
    "kernels_pallas.dequant_matmul.kernel",
    "dequant_matmul_xla",
    "kernels_pallas.dequant_matmul.xla",
    "dequant_matmul_xla",
  ),
]


@pytest.mark.parametrize("old_mod, old, new_mod, new", ALIASES, ids=[a[1] for a in ALIASES])
def test_moved_names_forward_with_a_warning(old_mod, old, new_mod, new):
  with pytest.warns(DeprecationWarning, match=new_mod.replace(".", r"\.")):
    got = getattr(importlib.import_module(old_mod), old)
  assert got is getattr(importlib.import_module(new_mod), new)
  with pytest.raises(AttributeError):
    _ = importlib.import_module(old_mod).no_such_name_anywhere
