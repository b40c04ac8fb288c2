"""The XLA path: never materialises W_hat in column order; x is permuted to the packed layout once and the eight
bit positions j are eight [M, C/8] x [C/8, R] matmuls."""

from __future__ import annotations

import jax.numpy as jnp

from kernels_pallas.dequant_matmul.reference import packed_layout


def dequant_matmul_xla(x, planes, scale, zero, *, bits: int, group: int):
  """Packed-layout path: sum_j x[:, 8i + j] . W_hat[:, 8i + j] as eight matmuls over the C/8 axis."""
  if group % 8:
    raise ValueError(f"group ({group}) must be a multiple of 8")
  xp, s, z = packed_layout(x, scale, zero, group)
  p = planes.astype(jnp.int32)
  y = 0.0
  for j in range(8):
    code = sum(((p[k] >> (7 - j)) & 1) << k for k in range(bits)).astype(jnp.float32)  # [R, C/8]
    y = y + xp[j] @ ((code - z) * s).T
  return y
