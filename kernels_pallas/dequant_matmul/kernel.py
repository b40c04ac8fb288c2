"""y = x W_hat^T with W_hat dequantized from b bit-planes, in float32.

Storage contract (``jaxeff.moe.quant.pack_codes``): ``planes [b, R, C/8]`` uint8 where bit (7 - j) of
``planes[k, r, i]`` is bit k of the code of column 8 i + j (numpy ``packbits`` order); ``scale``, ``zero``
``[R, C / group]`` (group a multiple of 8); W_hat[r, c] = (code[r, c] - zero[r, c // group]) * scale[r, c // group].

Three paths with one contract: ``dequant_matmul_reference`` (unpack, dequantize, one matmul; the f32 oracle),
``dequant_matmul_xla`` (never materialises W_hat in column order: x is permuted to the packed layout once and
the eight bit positions j are eight [M, C/8] x [C/8, R] matmuls) and ``dequant_matmul_pallas`` (the same
computation per output tile in a Pallas kernel: grid over R tiles; runs in interpret mode on CPU).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl


def _unpack(planes, bits):
  shifts = jnp.arange(7, -1, -1, dtype=jnp.int32)
  p = planes.astype(jnp.int32)
  codes = sum(((p[k][..., None] >> shifts) & 1) << k for k in range(bits))  # [R, C/8, 8]
  return codes.reshape(p.shape[1], -1)


def dequantize(planes, scale, zero, *, bits: int, group: int):
  """W_hat [R, C] in float32 from the packed planes."""
  q = _unpack(planes, bits).astype(jnp.float32)
  R, C = q.shape
  return ((q.reshape(R, C // group, group) - zero[..., None]) * scale[..., None]).reshape(R, C)


def dequant_matmul_reference(x, planes, scale, zero, *, bits: int, group: int):
  """The float32 oracle: unpack to [R, C], dequantize, x @ W_hat^T."""
  return x.astype(jnp.float32) @ dequantize(planes, scale, zero, bits=bits, group=group).T


def _packed_layout(x, scale, zero, group):
  """x [M, C] -> [8, M, C/8] (column 8 i + j at [j, :, i]); scale/zero [R, C/group] -> [R, C/8]."""
  M, C = x.shape
  xp = x.astype(jnp.float32).reshape(M, C // 8, 8).transpose(2, 0, 1)
  rep = group // 8
  return xp, jnp.repeat(scale, rep, axis=1), jnp.repeat(zero, rep, axis=1)


def dequant_matmul_xla(x, planes, scale, zero, *, bits: int, group: int):
  """Packed-layout path: sum_j x[:, 8i + j] . W_hat[:, 8i + j] as eight matmuls over the C/8 axis."""
  if group % 8:
    raise ValueError(f"group ({group}) must be a multiple of 8")
  xp, s, z = _packed_layout(x, scale, zero, group)
  p = planes.astype(jnp.int32)
  y = 0.0
  for j in range(8):
    code = sum(((p[k] >> (7 - j)) & 1) << k for k in range(bits)).astype(jnp.float32)  # [R, C/8]
    y = y + xp[j] @ ((code - z) * s).T
  return y


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
  xp, s, z = _packed_layout(x, scale, zero, group)
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
