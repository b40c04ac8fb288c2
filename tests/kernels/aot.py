"""TPU ahead-of-time compile on a CPU machine (platform notes, tier 2): a real Mosaic compile for a v5e
topology through libtpu, run in a subprocess so libtpu's environment stays out of the test process."""

import importlib.util
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_TEMPLATE = """
import jax, jax.numpy as jnp
from jax.experimental import topologies
topo = topologies.get_topology_desc({topology!r}, "tpu")
sh = jax.sharding.SingleDeviceSharding(topo.devices[0])
{body}
args = [jax.ShapeDtypeStruct(s, t, sharding=sh) for s, t in specs]
compiled = jax.jit(f).trace(*args).lower().compile()
print("COMPILED", type(compiled).__name__)
"""


def has_libtpu() -> bool:
  return importlib.util.find_spec("libtpu") is not None


def compile_for_tpu(body: str, topology: str = "v5e:2x2") -> None:
  """``body`` defines ``specs`` (list of (shape, dtype)) and ``f``; asserts that the TPU compile succeeds."""
  run_tpu_aot(_TEMPLATE.format(body=textwrap.dedent(body), topology=topology), expect=["COMPILED"])


def run_tpu_aot(code: str, expect: list[str]) -> str:
  """Runs ``code`` in a subprocess with libtpu's environment; asserts every line of ``expect`` is printed."""
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    TPU_SKIP_MDS_QUERY="1",
    TPU_ACCELERATOR_TYPE="v5litepod-4",
    TPU_WORKER_HOSTNAMES="localhost",
    # compile only, no device is touched: another jax process that loaded libtpu (and holds its lockfile, e.g. a
    # benchmark) must not make this fail with "Internal error when accessing libtpu multi-process lockfile"
    ALLOW_MULTIPLE_LIBTPU_LOAD="1",
  )
  res = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
  missing = [e for e in expect if e not in res.stdout]
  assert not missing, f"not compiled: {missing}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
  return res.stdout
