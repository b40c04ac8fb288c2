"""The interpret / compiled split of the kernel tests (the pattern of jax's own Pallas tests): a test class holds
one body; its base runs every Pallas kernel in interpret mode (CPU CI) and a subclass marked ``tpu_only`` /
``gpu_only`` sets ``COMPILED`` to the implementations that compile natively on that accelerator."""

import pytest


class KernelModes:
  COMPILED: tuple[str, ...] = ()  # implementations a compiled subclass runs natively; empty = interpret all

  def interpret(self, impl: str) -> bool:
    """``interpret=`` for ``impl`` in this mode; skips a Pallas kernel that does not run on this accelerator."""
    if not self.COMPILED:
      return True
    if impl.startswith("pallas") and impl not in self.COMPILED:
      pytest.skip(f"{impl} does not run on this accelerator")
    return False
