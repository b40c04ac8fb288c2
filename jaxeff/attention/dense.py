"""Dense (exact) causal attention with GQA, position masks and sliding windows.

An attention backend is a value: the model calls ``backend(q, k, v, q_pos, k_pos, window=...)`` during
prefill and never asks which backend it holds. ``Dense`` is exact attention; ProxyAttn and other
block-sparse backends implement the same call.

Masking is by positions, not by index: key s is visible to query t iff

  k_pos[s] >= 0  and  k_pos[s] <= q_pos[t]  and  (window is None or q_pos[t] - k_pos[s] < window),

so padding (position -1), per-row offsets, compacted (evicted) caches and sliding windows share one rule.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

_NEG = -1e30  # finite, so a row with no visible key gives a uniform (ignored) distribution, not NaN


def position_mask(q_pos_bt: Int[Array, "B T"], k_pos_bs: Int[Array, "B S"], window: int | None = None) -> jax.Array:
  """Boolean [B, T, S] visibility mask from positions (see module docstring)."""
  qp = q_pos_bt[:, :, None]
  kp = k_pos_bs[:, None, :]
  mask = (kp >= 0) & (kp <= qp)
  if window is not None:
    mask &= qp - kp < window
  return mask


def masked_attention(
  q_btnh: Float[Array, "B T N H"],
  k_bskh: Float[Array, "B S K H"],
  v_bskh: Float[Array, "B S K H"],
  mask_bts: jax.Array,
  *,
  scale: float | None = None,
) -> Float[Array, "B T N H"]:
  r"""softmax(q k^T / sqrt(H) + mask) v with grouped-query heads (query head n uses kv head n // G).

  Scores and softmax are computed in float32; the value product in the value dtype.

  Args:
    q_btnh: queries [B, T, N, H].
    k_bskh: keys [B, S, K, H] with N % K == 0.
    v_bskh: values [B, S, K, H].
    mask_bts: boolean visibility [B, T, S].
    scale: score scale, default 1 / sqrt(H).

  Returns:
    [B, T, N, H] attention output in the query dtype.
  """
  B, T, N, H = q_btnh.shape
  K = k_bskh.shape[2]
  G = N // K
  scale = H**-0.5 if scale is None else scale
  q = q_btnh.reshape(B, T, K, G, H)
  s = jnp.einsum("btkgh,bskh->bkgts", q, k_bskh, preferred_element_type=jnp.float32) * scale
  s = jnp.where(mask_bts[:, None, None, :, :], s, _NEG)
  p = jax.nn.softmax(s, axis=-1).astype(v_bskh.dtype)
  o = jnp.einsum("bkgts,bskh->btkgh", p, v_bskh)
  return o.reshape(B, T, N, H).astype(q_btnh.dtype)


def reference_attention(q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, window=None):
  """Plain float32 oracle: exact attention under the position mask (used by tests and kernels)."""
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  mask = position_mask(q_pos_bt, k_pos_bs, window)
  return masked_attention(f32(q_btnh), f32(k_bskh), f32(v_bskh), mask)


@dataclasses.dataclass(frozen=True)
class Dense:
  """Exact attention backend.

  Args:
    block_q: when set and the query chunk is the key chunk (prefill), process queries in blocks of
      ``block_q`` and give each block only the keys it can see: ``[0, end)`` causally, and from
      ``start - window + 1`` with a sliding window. This skips the upper triangle (about half the FLOPs and
      memory) but assumes positions increase with the index in every row, padding (-1) last: true for
      every prompt jaxeff's sampler builds. ``None`` computes the full [T, T] score matrix.

  Example:
    >>> import jax.numpy as jnp
    >>> q = k = v = jnp.ones((1, 4, 2, 8)); pos = jnp.arange(4)[None]
    >>> Dense()(q, k, v, pos, pos).shape
    (1, 4, 2, 8)
  """

  block_q: int | None = 512

  def __call__(self, q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, *, window: int | None = None, layer: int = 0):
    T, S = q_btnh.shape[1], k_bskh.shape[1]
    if self.block_q is None or T != S or T <= self.block_q:
      return masked_attention(q_btnh, k_bskh, v_bskh, position_mask(q_pos_bt, k_pos_bs, window))
    outs = []
    for t0 in range(0, T, self.block_q):
      t1 = min(T, t0 + self.block_q)
      s0 = 0 if window is None else max(0, t0 - window + 1)
      mask = position_mask(q_pos_bt[:, t0:t1], k_pos_bs[:, s0:t1], window)
      outs.append(masked_attention(q_btnh[:, t0:t1], k_bskh[:, s0:t1], v_bskh[:, s0:t1], mask))
    return jnp.concatenate(outs, axis=1)
