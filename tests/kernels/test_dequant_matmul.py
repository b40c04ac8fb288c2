"""Dequantizing matmul: the Pallas kernel (interpret mode) and the XLA path equal the float32 oracle, which
equals x @ RTN-dequantized weights."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.moe.quant import pack_codes, rtn
from kernels_pallas.dequant_matmul import BlockSizes, dequant_matmul
from kernels_pallas.dequant_matmul.reference import dequant_matmul_reference
from kernels_pallas.dequant_matmul.tpu import dequant_matmul_pallas
from kernels_pallas.dequant_matmul.xla import dequant_matmul_xla
from tests.kernels.aot import compile_for_tpu, has_libtpu


def _case(bits, R=64, C=128, M=5, group=32, seed=0):
  rng = np.random.RandomState(seed)
  w = rng.randn(R, C)
  codes, dq, scale, zero = rtn(w, bits, group, return_grids=True)  # the grids as stored (float16 scale)
  x = rng.randn(M, C).astype(np.float32)
  args = (
    jnp.asarray(x),
    jnp.asarray(pack_codes(codes, bits)),
    jnp.asarray(scale, jnp.float32),
    jnp.asarray(zero, jnp.float32),
  )
  return args, x @ dq.T


class TestDequantMatmulInterpret:
  """One body for the Pallas kernel: run in interpret mode here (CPU CI), compiled in the subclass below on a TPU
  (the pattern of jax's own Pallas tests)."""

  INTERPRET = True

  @pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
  def test_reference_xla_and_pallas_agree(self, bits):
    args, want = _case(bits)
    ref = dequant_matmul_reference(*args, bits=bits, group=32)
    np.testing.assert_allclose(np.asarray(ref), want, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(
      np.asarray(dequant_matmul_xla(*args, bits=bits, group=32)), np.asarray(ref), rtol=1e-5, atol=1e-4
    )
    got = dequant_matmul(
      *args, bits=bits, group=32, implementation="pallas_tpu", block_sizes=BlockSizes(32), interpret=self.INTERPRET
    )
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-4)

  def test_the_model_runs_its_packed_layers_through_the_pallas_kernel(self):
    """A CAMERA-Q packed MoE layer gives the same output through the Pallas kernel as through the XLA path."""
    import jax

    from jaxeff.config import ModelConfig
    from jaxeff.models import init_params
    from jaxeff.models.moe import moe_packed
    from jaxeff.moe.quant import QuantConfig, quantize_model

    cfg = ModelConfig.tiny(model_type="mixtral", n_experts=4, experts_per_token=2, d_expert=32, d_ff=32)
    params = init_params(cfg, jax.random.key(0))
    qc = QuantConfig(bits=(2, 4), ratios=(0.5, 0.5), method="rtn")
    mlp = quantize_model(params, cfg, {0: np.arange(128.0)}, qc, packed=True)["layers"][0]["mlp"]
    x = jax.random.normal(jax.random.key(1), (6, cfg.d_model))
    want = moe_packed(mlp, x, cfg, dequant="xla")
    got = moe_packed(mlp, x, cfg, dequant="pallas_tpu")  # interpreted off TPU, compiled on one
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


@pytest.mark.tpu_only
class TestDequantMatmulCompiled(TestDequantMatmulInterpret):
  INTERPRET = False


def test_bad_shapes_fail_clearly():
  args, _ = _case(2)
  with pytest.raises(ValueError, match="multiple of 8"):
    dequant_matmul_xla(*args, bits=2, group=12)
  with pytest.raises(ValueError, match="divide"):
    dequant_matmul_pallas(*args, bits=2, group=32, block_r=48, interpret=True)
  with pytest.raises(ValueError, match="planes must be"):
    dequant_matmul(args[0], args[1][:1], *args[2:], bits=2, group=32)
  with pytest.raises(ValueError, match="scale and zero"):
    dequant_matmul(args[0], args[1], args[2][:, :1], args[3], bits=2, group=32)
  with pytest.raises(ValueError, match="implementation must be"):
    dequant_matmul(*args, bits=2, group=32, implementation="cuda")
  with pytest.raises(ValueError, match="rows must be"):
    BlockSizes(0)


@pytest.mark.tpu_aot
@pytest.mark.skipif(not has_libtpu(), reason="needs libtpu (pip install 'jax[tpu]'; .ci/run installs it)")
def test_pallas_kernel_compiles_ahead_of_time_for_v5e():
  compile_for_tpu(
    """
from tests.kernels.aot import compile_for_tpu, has_libtpu
from kernels_pallas.dequant_matmul.tpu import dequant_matmul_pallas
M, R, C, bits = 8, 512, 1024, 3
specs = [((M, C), jnp.float32), ((bits, R, C // 8), jnp.uint8), ((R, C // 128), jnp.float32),
         ((R, C // 128), jnp.float32)]
f = lambda *a: dequant_matmul_pallas(*a, bits=bits, group=128, block_r=128)
"""
  )
