"""Latent decode kernels (XLA; Pallas TPU and GPU in interpret mode) vs the f32 reference; int8 latents;
the kernel inside LatentCache equals the jnp path; TPU/GPU lowering."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels_pallas.latent_attention import latent_decode_attention, latent_decode_reference
from tests.kernels.aot import compile_for_tpu, has_libtpu
from tests.kernels.modes import KernelModes

CASES = [  # B, N, K, H, r, S, block
  (2, 8, 2, 32, 48, 200, 64),  # GQA 4, ragged, r not a power of two (xla/tpu)
  (2, 4, 4, 64, 64, 256, 128),  # MHA-like, head_dim 64
  (1, 7, 1, 32, 32, 130, 64),  # GQA 7, length not a multiple of the tile
]


def _inputs(case, seed=0):
  B, N, K, H, r, S, _ = case
  ks = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(ks[0], (B, N, H))
  c = jax.random.normal(ks[1], (B, S, r))
  ku = jax.random.normal(ks[2], (K, H, r)) / np.sqrt(r)
  vu = jax.random.normal(ks[3], (K, H, r)) / np.sqrt(r)
  lens = jnp.array([S, S - 37][:B])
  pos = jnp.where(jnp.arange(S)[None] < lens[:, None], jnp.arange(S)[None], -1)
  f = 1.0 / (10000 ** (jnp.arange(H // 2) / (H // 2)))
  return q, c, pos, lens - 1, ku, vu, f


# Triton needs power-of-two latent widths: the GPU kernel runs on the cases that have one.
COMBOS = [
  (i, c) for i in ("xla", "pallas_tpu", "pallas_gpu") for c in CASES if i != "pallas_gpu" or not c[4] & (c[4] - 1)
]


class TestLatentDecodeInterpret(KernelModes):
  """One body: Pallas kernels interpreted here (CPU CI), compiled in the ``tpu_only`` / ``gpu_only`` subclasses."""

  @pytest.mark.parametrize("impl,case", COMBOS, ids=lambda x: x if isinstance(x, str) else "-".join(map(str, x)))
  def test_kernels_match_reference(self, impl, case):
    q, c, pos, qp, ku, vu, f = _inputs(case)
    want = latent_decode_reference(q, c, pos, qp, ku, vu, f)
    got = latent_decode_attention(
      q, c, pos, qp, ku, vu, f, implementation=impl, block=case[-1], interpret=self.interpret(impl)
    )
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    win = latent_decode_attention(
      q, c, pos, qp, ku, vu, f, implementation=impl, block=case[-1], interpret=self.interpret(impl), window=40
    )
    np.testing.assert_allclose(
      np.asarray(win), np.asarray(latent_decode_reference(q, c, pos, qp, ku, vu, f, window=40)), rtol=1e-5, atol=1e-5
    )


@pytest.mark.tpu_only
class TestLatentDecodeTPU(TestLatentDecodeInterpret):
  COMPILED = ("xla", "pallas_tpu")


@pytest.mark.gpu_only
class TestLatentDecodeGPU(TestLatentDecodeInterpret):
  COMPILED = ("xla", "pallas_gpu")


def test_int8_latents():
  q, c, pos, qp, ku, vu, f = _inputs(CASES[0])
  lo, hi = c.min(-1), c.max(-1)
  scale = (hi - lo) / 255
  codes = jnp.round((c - lo[..., None]) / scale[..., None]) - 128
  deq = lo[..., None] + scale[..., None] * (codes + 128)
  got = latent_decode_attention(
    q, (codes).astype(jnp.int8), pos, qp, ku, vu, f, latent_scale=scale, latent_min=lo + 128 * scale
  )
  want = latent_decode_reference(q, deq, pos, qp, ku, vu, f)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  exact = latent_decode_reference(q, c, pos, qp, ku, vu, f)
  assert float(jnp.abs(got - exact).max()) < 0.05


def test_kernel_inside_latent_cache_equals_jnp_path():
  from jaxeff.config import ModelConfig
  from jaxeff.kvcache.commonkv import LatentCache, compress
  from jaxeff.models.decoder import forward, init_params

  cfg = ModelConfig.tiny(n_layers=4)
  _, pc, spec, _ = compress(cfg, init_params(cfg, jax.random.key(0), std=0.1), group_size=2, rank=32)
  toks = jax.random.randint(jax.random.key(1), (2, 40), 0, cfg.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(40), (2, 40))
  outs = {}
  for kernel in (None, "xla"):
    _, cache = forward(pc, toks[:, :32], pos[:, :32], LatentCache.init(cfg, spec, 2, 48, kernel=kernel), config=cfg)
    seq = []
    for t in range(32, 40):
      lg, cache = forward(pc, toks[:, t : t + 1], pos[:, t : t + 1], cache, config=cfg)
      seq.append(lg[:, -1])
    outs[kernel] = jnp.stack(seq, 1)
  np.testing.assert_allclose(np.asarray(outs["xla"]), np.asarray(outs[None]), rtol=1e-5, atol=1e-5)


def _abstract(B=1, N=8, K=2, H=128, r=256, S=4096):
  f32 = jnp.float32
  return (
    jax.ShapeDtypeStruct((B, N, H), f32),
    jax.ShapeDtypeStruct((B, S, r), jnp.bfloat16),
    jax.ShapeDtypeStruct((B, S), jnp.int32),
    jax.ShapeDtypeStruct((B,), jnp.int32),
    jax.ShapeDtypeStruct((K, H, r), f32),
    jax.ShapeDtypeStruct((K, H, r), f32),
    jax.ShapeDtypeStruct((H // 2,), f32),
  )


def test_tpu_kernel_lowers_for_tpu():
  f = lambda *a: latent_decode_attention(*a, implementation="pallas_tpu", block=512)
  assert "tpu_custom_call" in jax.jit(f).trace(*_abstract()).lower(lowering_platforms=("tpu",)).as_text()


def test_gpu_kernel_lowers_for_cuda():
  f = lambda *a: latent_decode_attention(*a, implementation="pallas_gpu", block=64)
  assert "triton" in jax.jit(f).trace(*_abstract(r=128, S=1024)).lower(lowering_platforms=("cuda",)).as_text()


@pytest.mark.tpu_aot
@pytest.mark.skipif(not has_libtpu(), reason="needs libtpu (pip install 'jax[tpu]'; .ci/run installs it)")
def test_tpu_kernel_compiles_ahead_of_time_for_v5e():
  compile_for_tpu(
    """
from kernels_pallas.latent_attention import latent_decode_attention
B, N, K, H, r, S = 1, 8, 2, 128, 256, 8192
specs = [((B, N, H), jnp.float32), ((B, S, r), jnp.bfloat16), ((B, S), jnp.int32), ((B,), jnp.int32),
         ((K, H, r), jnp.float32), ((K, H, r), jnp.float32), ((H // 2,), jnp.float32)]
f = lambda *a: latent_decode_attention(*a, implementation="pallas_tpu", block=512)
"""
  )


def test_block_sizes_choose_the_tile_and_are_validated():
  from kernels_pallas.latent_attention import BlockSizes

  q, c, pos, qp, ku, vu, f = _inputs(CASES[0])
  want = latent_decode_reference(q, c, pos, qp, ku, vu, f)
  for bs in (BlockSizes(), BlockSizes(slots=32)):
    got = latent_decode_attention(
      q, c, pos, qp, ku, vu, f, implementation="pallas_tpu", block_sizes=bs, interpret=True
    )
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  assert BlockSizes().for_implementation("pallas_gpu") == 64 and BlockSizes(slots=8).for_implementation("xla") == 8
  with pytest.raises(ValueError, match="slots must be"):
    BlockSizes(slots=0)


@pytest.mark.parametrize("impl", ["xla", "pallas_tpu", "pallas_gpu"])
def test_kernels_stop_at_the_last_filled_tile(impl):
  """A cache allocated for 1024 slots holding 40 (row 0) and 90 (row 1, with a hole at 10-19) tokens: the XLA
  loop and the TPU kernel's grid (per row) visit only the filled tiles and give the reference's result."""
  q, c, _, _, ku, vu, f = _inputs((2, 8, 2, 32, 64 if impl == "pallas_gpu" else 48, 1024, 64))  # Triton: 2^n
  s = jnp.arange(1024)[None]
  pos = jnp.where(s < jnp.array([[40], [90]]), s, -1).at[1, 10:20].set(-1)
  q_pos = jnp.array([39, 89])
  want = latent_decode_reference(q, c, pos, q_pos, ku, vu, f)
  got = latent_decode_attention(q, c, pos, q_pos, ku, vu, f, implementation=impl, block=64, interpret=True)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
