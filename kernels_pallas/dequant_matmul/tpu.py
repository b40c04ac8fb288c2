"""The Pallas kernel: the XLA path's computation per tile of output rows (grid over R tiles; each tile unpacks its
planes in registers). Written for Mosaic TPU (runs in interpret mode on CPU); its BlockSpecs are plain, so the same
``pallas_call`` is what a GPU build would lower through Triton (UNVERIFIED on a GPU: not run there yet)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from kernels_pallas.dequant_matmul.reference import packed_layout


def _kernel(x_ref, p_ref, s_ref, z_ref, o_ref, *, bits):
  s, z = s_ref[...], z_ref[...]
  acc = jnp.zeros(o_ref.shape, jnp.float32)
  for j in range(8):
    code = jnp.zeros(s.shape, jnp.int32)
    for k in range(bits):
      code = code + (((p_ref[k].astype(jnp.int32)) >> (7 - j)) & 1) * (1 << k)
    w = (code.astype(jnp.float32) - z) * s  # [br, C/8]
    acc += jax.lax.dot_general(x_ref[j], w, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
  o_ref[...] = acc


@functools.partial(jax.jit, static_argnames=("bits", "group", "block_r", "interpret"))
def dequant_matmul_pallas(x, planes, scale, zero, *, bits: int, group: int, block_r: int = 128, interpret=False):
  """Pallas kernel: grid over tiles of ``block_r`` output rows; each tile unpacks its planes in registers."""
  if group % 8:
    raise ValueError(f"group ({group}) must be a multiple of 8")
  M, C = x.shape
  R = planes.shape[1]
  br = min(block_r, R)
  if R % br:
    raise ValueError(f"block_r ({br}) must divide the rows ({R})")
  xp, s, z = packed_layout(x, scale, zero, group)
  C8 = C // 8
  return pl.pallas_call(
    functools.partial(_kernel, bits=bits),
    grid=(R // br,),
    in_specs=[
      pl.BlockSpec((8, M, C8), lambda r: (0, 0, 0)),
      pl.BlockSpec((bits, br, C8), lambda r: (0, r, 0)),
      pl.BlockSpec((br, C8), lambda r: (r, 0)),
      pl.BlockSpec((br, C8), lambda r: (r, 0)),
    ],
    out_specs=pl.BlockSpec((M, br), lambda r: (0, r)),
    out_shape=jax.ShapeDtypeStruct((M, R), jnp.float32),
    interpret=interpret,
  )(xp, planes, s.astype(jnp.float32), z.astype(jnp.float32))
