"""Test setup: 8 fake CPU devices (set before any backend starts), offline HF, markers. Shared helpers live in
ordinary modules (``tests/tolerances.py``), not here."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# CI installs libtpu for the TPU ahead-of-time compile test; the test process itself stays on CPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Speed: the suite's time is mostly XLA compiling small programs, single-threaded. Two settings halve it, and they
# are inherited by what the tests start (notebook kernels, CLI subprocesses): (1) LLVM's backend optimisation off
# (``--xla_backend_optimization_level=0``: the HLO passes, hence numerics, fusion and buffer assignment, are
# unchanged; only the machine code is less tuned, and at test shapes compiling dominates running); (2) JAX's
# persistent compilation cache, every program kept (a program equal to one compiled before, in another test,
# module or worker, is loaded instead of compiled; keys include the jax version and the flags). Set XLA_FLAGS with
# your own optimisation level, or JAX_COMPILATION_CACHE_DIR, to override either.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"jaxeff-test-xla-cache-{os.getuid()}")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

import pytest  # noqa: E402


def _has_torch() -> bool:
  try:
    import torch  # noqa: F401
  except ImportError:
    return False
  return True


HAS_TORCH = _has_torch()


def pytest_collection_modifyitems(config, items):
  backend = jax.default_backend()
  needs = {
    "needs_torch": (HAS_TORCH, "needs the torch test extra: pip install -e '.[test]'"),
    "tpu_only": (backend == "tpu", f"compiled kernel test: needs a TPU (backend here: {backend})"),
    "gpu_only": (backend == "gpu", f"compiled kernel test: needs a GPU (backend here: {backend})"),
  }
  for item in items:
    for marker, (ok, reason) in needs.items():
      if marker in item.keywords and not ok:
        item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
  """A machine without process isolation (no bubblewrap: installing it needs root) cannot run model-written
  programs at all: tests that reach the sandbox there are skipped with the reason, never passed. Where
  isolation exists, ``SandboxUnavailable`` stays a failure. A test that reaches the sandbox one step removed
  (a notebook cell, a CLI subprocess, a doctest) fails with the sandbox's message in its error instead of the
  exception itself: that is recognised by the message."""
  from jaxeff.sandbox import isolation

  try:
    return (yield)
  except Exception as e:
    problem = isolation.isolation_problem()
    if problem is None:
      raise
    direct = isinstance(e, isolation.SandboxUnavailable)
    inner = getattr(e, "exc_info", None)  # a doctest's unexpected exception
    text = f"{e!r} {e} {inner[1]!r}" if inner else f"{e!r} {e}"
    if not direct and not any(m in text for m in ("SandboxUnavailable", isolation.UNAVAILABLE_MESSAGE)):
      raise
    pytest.skip(f"needs the sandbox (bubblewrap; .ci/run installs it as root): {problem}")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_executables():
  """Drop jax's compilation caches after every test module. Each XLA:CPU executable holds a few memory
  mappings; the whole suite in one process compiles tens of thousands of them, and past the kernel's
  ``vm.max_map_count`` (65,530 by default) the next compilation's mmap fails and LLVM segfaults (seen twice
  at ~40 % of the suite). Clearing per module keeps the count to what one module needs."""
  yield
  import gc

  jax.clear_caches()
  gc.collect()
