"""Latent decode attention for CommonKV caches: one entry over the reference, XLA and Pallas TPU/GPU paths.

``latent_decode_attention`` pads the cache length to the tile size (padded slots get position -1), optionally
dequantizes int8 latents, and dispatches. See ``reference.py`` for the exact contract.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from kernels_pallas.latent_attention.gpu import latent_decode_gpu
from kernels_pallas.latent_attention.reference import dequantize_latent, latent_decode_reference
from kernels_pallas.latent_attention.tpu import latent_decode_tpu
from kernels_pallas.latent_attention.xla import latent_decode_xla

IMPLEMENTATIONS = ("reference", "xla", "pallas_tpu", "pallas_gpu")


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Tile sizes: ``slots`` cache slots per tile (default by implementation: 64 for the GPU kernel, whose
  registers hold a tile of rebuilt keys, 512 otherwise; the XLA path caps it at the cache length)."""

  slots: int | None = None

  def __post_init__(self):
    if self.slots is not None and self.slots < 1:
      raise ValueError(f"BlockSizes.slots must be >= 1, got {self.slots}")

  def for_implementation(self, implementation: str) -> int:
    return self.slots or (64 if implementation == "pallas_gpu" else 512)


def default_implementation() -> str:
  """``pallas_tpu`` on TPU, ``pallas_gpu`` on GPU, ``xla`` elsewhere."""
  return {"tpu": "pallas_tpu", "gpu": "pallas_gpu"}.get(jax.default_backend(), "xla")


def latent_decode_attention(
  q,
  latent,
  pos,
  q_pos,
  k_up,
  v_up,
  inv_freq,
  *,
  window=None,
  scale=None,
  implementation=None,
  block=None,
  block_sizes: BlockSizes = BlockSizes(),
  interpret=False,
  latent_scale=None,
  latent_min=None,
):
  r"""Decode attention of one query per row over CommonKV latents, keys rebuilt with RoPE in the loop:

    k_t = RoPE_{pos_t}(Bk c_t),  o = Bv \sum_t softmax_t(q . k_t / sqrt(H)) c_t.

  Args:
    q: [B, N, H] (RoPE applied); latent: [B, S, r] float, or int8 codes with ``latent_scale``/``latent_min``
      [B, S] (per-token quantization); pos: [B, S] slot positions (-1 empty); q_pos: [B].
    k_up, v_up: [K, H, r]; inv_freq: [H/2].
    implementation: 'reference' | 'xla' | 'pallas_tpu' | 'pallas_gpu'; default by backend
      (``default_implementation``); block_sizes: tile sizes (``block``: the same as
      ``BlockSizes(slots=block)``).

  Returns:
    [B, N, H] float32.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> q = jnp.ones((1, 4, 8)); c = jnp.ones((1, 16, 6)); pos = jnp.arange(16)[None]
    >>> up = jnp.ones((2, 8, 6)) / 8; f = 1.0 / (10000 ** (jnp.arange(4) / 4))
    >>> latent_decode_attention(q, c, pos, jnp.array([15]), up, up, f, block=16).shape
    (1, 4, 8)

  Reference: CommonKV (arXiv 2508.16134); kernel shape after DeepSeek-V3 MLA absorbed decoding.
  """
  B, N, H = q.shape
  if latent.ndim != 3 or latent.shape[0] != B or pos.shape != latent.shape[:2]:
    raise ValueError(f"latent must be [B, S, r] with pos [B, S]; got {latent.shape} and {pos.shape}")
  if k_up.shape != v_up.shape or k_up.shape[1:] != (H, latent.shape[2]) or N % k_up.shape[0]:
    raise ValueError(f"k_up/v_up must be [K, H, r] = [K, {H}, {latent.shape[2]}] with N % K == 0; got {k_up.shape}")
  implementation = implementation or default_implementation()
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
  if latent.dtype == jnp.int8 or latent_scale is not None:
    latent = dequantize_latent(latent, latent_scale, latent_min)
  if implementation == "reference":
    return latent_decode_reference(q, latent, pos, q_pos, k_up, v_up, inv_freq, window=window, scale=scale)
  S = latent.shape[1]
  block = block or block_sizes.for_implementation(implementation)
  block = min(block, -(-S // 16) * 16) if implementation == "xla" else block
  Sp = -(-S // block) * block
  if Sp != S:
    latent = jnp.pad(latent, ((0, 0), (0, Sp - S), (0, 0)))
    pos = jnp.pad(pos, ((0, 0), (0, Sp - S)), constant_values=-1)
  kw = dict(block=block, window=window, scale=scale)
  if implementation == "xla":
    return latent_decode_xla(q, latent, pos, q_pos, k_up, v_up, inv_freq, **kw)
  if implementation == "pallas_tpu":
    return latent_decode_tpu(q, latent, pos, q_pos, k_up, v_up, inv_freq, interpret=interpret, **kw)
  return latent_decode_gpu(q, latent, pos, q_pos, k_up, v_up, inv_freq, interpret=interpret, **kw)
