"""Dequantizing matmul: the Pallas kernel (interpret mode) and the XLA path equal the float32 oracle, which
equals x @ RTN-dequantized weights."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.moe.quant import pack_codes, rtn
from kernels_pallas.dequant_matmul.kernel import dequant_matmul_pallas, dequant_matmul_reference, dequant_matmul_xla
from tests.kernels.aot import compile_for_tpu, has_libtpu


def _case(bits, R=64, C=128, M=5, group=32, seed=0):
  rng = np.random.RandomState(seed)
  w = rng.randn(R, C)
  codes, dq = rtn(w, bits, group)
  g = w.reshape(R, C // group, group)
  lo, hi = np.minimum(g.min(-1), 0), np.maximum(g.max(-1), 0)
  scale = np.where(hi > lo, (hi - lo) / (2**bits - 1), 1.0)
  zero = np.round(-lo / scale)
  x = rng.randn(M, C).astype(np.float32)
  args = (
    jnp.asarray(x),
    jnp.asarray(pack_codes(codes, bits)),
    jnp.asarray(scale, jnp.float32),
    jnp.asarray(zero, jnp.float32),
  )
  return args, x @ dq.T


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_reference_xla_and_pallas_agree(bits):
  args, want = _case(bits)
  ref = dequant_matmul_reference(*args, bits=bits, group=32)
  np.testing.assert_allclose(np.asarray(ref), want, rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(
    np.asarray(dequant_matmul_xla(*args, bits=bits, group=32)), np.asarray(ref), rtol=1e-5, atol=1e-4
  )
  got = dequant_matmul_pallas(*args, bits=bits, group=32, block_r=32, interpret=True)
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-4)


def test_bad_shapes_fail_clearly():
  args, _ = _case(2)
  with pytest.raises(ValueError, match="multiple of 8"):
    dequant_matmul_xla(*args, bits=2, group=12)
  with pytest.raises(ValueError, match="divide"):
    dequant_matmul_pallas(*args, bits=2, group=32, block_r=48, interpret=True)


@pytest.mark.tpu_aot
@pytest.mark.skipif(not has_libtpu(), reason="needs libtpu (pip install 'jax[tpu]'; .ci/run installs it)")
def test_pallas_kernel_compiles_ahead_of_time_for_v5e():
  compile_for_tpu(
    """
from tests.kernels.aot import compile_for_tpu, has_libtpu
from kernels_pallas.dequant_matmul.kernel import dequant_matmul_pallas
M, R, C, bits = 8, 512, 1024, 3
specs = [((M, C), jnp.float32), ((bits, R, C // 8), jnp.uint8), ((R, C // 128), jnp.float32),
         ((R, C // 128), jnp.float32)]
f = lambda *a: dequant_matmul_pallas(*a, bits=bits, group=128, block_r=128)
"""
  )
