"""The float32 oracle of the dequantizing matmul and the storage contract.

Storage (``jaxeff.moe.quant.pack_codes``): ``planes [b, R, C/8]`` uint8 where bit (7 - j) of ``planes[k, r, i]``
is bit k of the code of column 8 i + j (numpy ``packbits`` order); ``scale``, ``zero`` ``[R, C / group]``
(group a multiple of 8); W_hat[r, c] = (code[r, c] - zero[r, c // group]) * scale[r, c // group].
"""

from __future__ import annotations

import jax.numpy as jnp


def unpack(planes, bits):
  """Codes [..., C] (int32) from bit-planes [b, ..., C/8] (numpy ``packbits`` order within a byte)."""
  shifts = jnp.arange(7, -1, -1, dtype=jnp.int32)
  p = jnp.asarray(planes).astype(jnp.int32)
  codes = sum(((p[k][..., None] >> shifts) & 1) << k for k in range(bits))  # [..., C/8, 8]
  return codes.reshape(*p.shape[1:-1], p.shape[-1] * 8)


def dequantize(planes, scale, zero, *, bits: int, group: int):
  """W_hat [R, C] in float32 from the packed planes."""
  q = unpack(planes, bits).astype(jnp.float32)
  R, C = q.shape
  return ((q.reshape(R, C // group, group) - zero[..., None]) * scale[..., None]).reshape(R, C)


def dequant_matmul_reference(x, planes, scale, zero, *, bits: int, group: int):
  """The float32 oracle: unpack to [R, C], dequantize, x @ W_hat^T."""
  return x.astype(jnp.float32) @ dequantize(planes, scale, zero, bits=bits, group=group).T


def packed_layout(x, scale, zero, group):
  """x [M, C] -> [8, M, C/8] (column 8 i + j at [j, :, i]); scale/zero [R, C/group] -> [R, C/8]."""
  M, C = x.shape
  xp = x.astype(jnp.float32).reshape(M, C // 8, 8).transpose(2, 0, 1)
  rep = group // 8
  return xp, jnp.repeat(scale, rep, axis=1), jnp.repeat(zero, rep, axis=1)
