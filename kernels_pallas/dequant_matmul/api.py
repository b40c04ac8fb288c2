"""Dequantizing matmul over bit-plane packed weights: one entry point over the reference, XLA and Pallas paths.

``dequant_matmul(x, planes, scale, zero, bits=, group=)`` checks shapes, picks the implementation by backend
(``default_implementation``) and the tile sizes from ``BlockSizes``. On CPU a Pallas implementation runs in
interpret mode (tests); on TPU it compiles.
"""

from __future__ import annotations

import dataclasses

import jax

from kernels_pallas.dequant_matmul.reference import dequant_matmul_reference
from kernels_pallas.dequant_matmul.tpu import dequant_matmul_pallas
from kernels_pallas.dequant_matmul.xla import dequant_matmul_xla

IMPLEMENTATIONS = ("reference", "xla", "pallas_tpu")


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Tile sizes of the Pallas kernel: ``rows`` output rows per grid step (must divide R; capped at R)."""

  rows: int = 128

  def __post_init__(self):
    if self.rows < 1:
      raise ValueError(f"BlockSizes.rows must be >= 1, got {self.rows}")


def default_implementation() -> str:
  """``pallas_tpu`` on TPU, ``xla`` elsewhere (the Pallas kernel is not yet checked on a GPU)."""
  return "pallas_tpu" if jax.default_backend() == "tpu" else "xla"


def dequant_matmul(
  x,
  planes,
  scale,
  zero,
  *,
  bits: int,
  group: int,
  implementation: str | None = None,
  block_sizes: BlockSizes = BlockSizes(),
  interpret: bool | None = None,
):
  r"""y = x \hat W^T with \hat W[r, c] = (code[r, c] - zero[r, c // group]) * scale[r, c // group] and the b-bit
  codes read from bit-planes, in float32.

  Args:
    x: [M, C]; planes: uint8 [b, R, C/8] (``jaxeff.moe.quant.pack_codes``); scale, zero: [R, C / group].
    bits: b in 1..8; group: quantization group, a multiple of 8 dividing C.
    implementation: 'reference' (unpack then one matmul; the oracle), 'xla' (eight matmuls in the packed layout,
      never materialising \hat W), 'pallas_tpu' (the same per tile of output rows); default by backend.
    block_sizes: Pallas tile sizes.
    interpret: run the Pallas kernel in interpret mode; default: on any backend but TPU.

  Returns:
    [M, R] float32.

  Example:
    >>> import jax.numpy as jnp, numpy as np
    >>> planes = jnp.asarray(np.packbits(np.ones((1, 16, 16), bool), axis=-1))  # 1-bit codes, all ones
    >>> s, z = jnp.ones((16, 2)), jnp.zeros((16, 2))
    >>> dequant_matmul(jnp.ones((2, 16)), planes, s, z, bits=1, group=8, implementation="pallas_tpu")[0, :3]
    Array([16., 16., 16.], dtype=float32)

  Reference: the CAMERA-Q storage of ``jaxeff.moe.quant`` (CAMERA, micro-expert mixed-precision quantization).
  """
  if implementation is None:
    implementation = default_implementation()
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
  M, C = x.shape
  if planes.ndim != 3 or planes.shape[0] != bits or planes.shape[2] * 8 != C:
    raise ValueError(f"planes must be [bits={bits}, R, C/8={C // 8}], got {planes.shape}")
  if group % 8 or C % group:
    raise ValueError(f"group ({group}) must be a multiple of 8 that divides C ({C})")
  R = planes.shape[1]
  if scale.shape != (R, C // group) or zero.shape != scale.shape:
    raise ValueError(f"scale and zero must be [R, C / group] = [{R}, {C // group}], got {scale.shape}, {zero.shape}")
  if implementation == "reference":
    return dequant_matmul_reference(x, planes, scale, zero, bits=bits, group=group)
  if implementation == "xla":
    return dequant_matmul_xla(x, planes, scale, zero, bits=bits, group=group)
  if interpret is None:
    interpret = jax.default_backend() != "tpu"
  return dequant_matmul_pallas(
    x, planes, scale, zero, bits=bits, group=group, block_r=block_sizes.rows, interpret=interpret
  )
