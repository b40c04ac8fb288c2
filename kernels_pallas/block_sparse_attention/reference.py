"""Float32 oracle for block-sparse causal prefill attention: dense attention under the expanded mask.

Layout (shared by every implementation in this folder): ``q [B, Hq, L, d]``, ``k, v [B, Hkv, L, d]`` with
contiguous GQA (query head h reads kv head ``h // (Hq // Hkv)``); the block mask is given either as a bool
``block_mask [B, Hq, nb, nb]`` or as index lists ``block_idx [B, Hq, nb, Kmax]`` int32 with counts
``block_cnt [B, Hq, nb]`` (slots ``j >= cnt`` are padding and ignored, whatever id they hold). Key ``s`` is
visible to query ``t`` iff

  block (t // bs, s // bs) is kept  and  s <= t  and  s < kv_len[b]  (and t - s < window, if given),

and a query with no visible key returns zeros. A sliding window combines with the block mask by intersection.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def visible(k_tok, q_tok, window=None):
  """The token rule every implementation shares: key ``k_tok`` is visible to query ``q_tok`` if causal and,
  with a sliding window, ``q_tok - k_tok < window`` (broadcasting jnp ops: usable inside Pallas kernels)."""
  ok = k_tok <= q_tok
  return ok if window is None else ok & (q_tok - k_tok < window)


def index_dtype(num_blocks: int):
  """The compact dtype of block ids below ``num_blocks``: int16 where they fit (``num_blocks <= 32767``: 4M
  tokens at block 128), else int32. Index lists are ``[B, H, nb, Kmax]``: int16 halves them (64 MiB instead of
  128 at 128K tokens, 32 heads, Kmax = nb). Kernels widen a tile's ids to int32 before token arithmetic."""
  return jnp.int16 if num_blocks <= jnp.iinfo(jnp.int16).max else jnp.int32


def indices_to_mask(block_idx: jax.Array, block_cnt: jax.Array, num_key_blocks: int) -> jax.Array:
  """Bool ``[B, H, nq, nk]`` from index lists; padded slots (``j >= cnt``) and repeated ids add nothing."""
  kmax = block_idx.shape[-1]
  valid = jnp.arange(kmax) < block_cnt[..., None]
  onehot = jax.nn.one_hot(block_idx, num_key_blocks, dtype=jnp.int32) * valid[..., None]
  return onehot.sum(-2) > 0


def mask_to_indices(block_mask: jax.Array, kmax: int | None = None):
  """Index lists from a bool ``[..., nq, nk]`` mask: kept ids in ascending order, padded by repeating the last
  kept id (id 0 for an empty row); returns ``(block_idx [..., nq, kmax], block_cnt [..., nq])``, ids in
  ``index_dtype(nk)``, counts int32."""
  nk = block_mask.shape[-1]
  kmax = nk if kmax is None else kmax
  key = jnp.where(block_mask, jnp.arange(nk), nk + jnp.arange(nk))  # kept ids first, ascending
  order = jnp.argsort(key, axis=-1)[..., :kmax].astype(index_dtype(nk))
  cnt = jnp.minimum(block_mask.sum(-1), kmax).astype(jnp.int32)
  return pad_indices(order, cnt), cnt


def pad_indices(block_idx: jax.Array, block_cnt: jax.Array) -> jax.Array:
  """Replace padded slots (``j >= cnt``) by the last valid id, so a kernel's pipeline never fetches a new
  block for a skipped step (TPU) and a stray read stays in bounds. Keeps ``block_idx``'s dtype."""
  kmax = block_idx.shape[-1]
  last = jnp.take_along_axis(block_idx, jnp.maximum(block_cnt - 1, 0)[..., None], axis=-1)
  return jnp.where(jnp.arange(kmax) < block_cnt[..., None], block_idx, last)


def window_indices(block_idx: jax.Array, block_cnt: jax.Array, window: int, block_size: int):
  """Drop from each query block's list the key blocks wholly outside a sliding ``window`` (query block ``i``
  sees keys from token ``i bs - window + 1`` on): ``(block_idx, block_cnt)`` with the survivors first, in
  ascending order, padded as ``pad_indices`` does. O(nb Kmax) memory per head."""
  nq, kmax = block_idx.shape[-2:]
  lo = jnp.maximum(0, (jnp.arange(nq) * block_size - window + 1) // block_size)[:, None]  # [nq, 1]
  keep = (jnp.arange(kmax) < block_cnt[..., None]) & (block_idx >= lo)
  big = jnp.iinfo(block_idx.dtype).max
  ids = jnp.sort(jnp.where(keep, block_idx, big), axis=-1)
  cnt = keep.sum(-1).astype(jnp.int32)
  return pad_indices(jnp.where(ids == big, 0, ids), cnt), cnt


def token_mask(
  block_mask: jax.Array,
  length: int,
  block_size: int,
  kv_len: jax.Array | None = None,
  window: int | None = None,
) -> jax.Array:
  """Token-level bool ``[B, H, L, L]`` from a block mask: kept block, causal, key < kv_len, inside the window."""
  t = jnp.arange(length)
  blk = jnp.repeat(jnp.repeat(block_mask, block_size, axis=-2), block_size, axis=-1)[..., :length, :length]
  m = blk & visible(t[None, :], t[:, None], window)
  if kv_len is not None:
    m = m & (t[None, None, None, :] < kv_len[:, None, None, None])
  return m


def block_sparse_attention_reference(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  block_mask: jax.Array,
  *,
  block_size: int,
  kv_len: jax.Array | None = None,
  scale: float | None = None,
  window: int | None = None,
) -> jax.Array:
  """Dense float32 attention under the token mask of ``block_mask`` (see module docstring).

  Args:
    q: [B, Hq, L, d]; k, v: [B, Hkv, L, d] with Hq % Hkv == 0.
    block_mask: bool [B, Hq, nb, nb], nb = ceil(L / block_size).
    block_size: tile edge (query and key blocks are equal).
    kv_len: optional [B] number of real keys per row (right padding); default L.
    scale: score scale, default 1/sqrt(d).
    window: sliding window (key ``s`` visible to ``t`` only if ``t - s < window``); None = full causal.

  Returns:
    [B, Hq, L, d] float32.
  """
  B, Hq, L, d = q.shape
  Hkv = k.shape[1]
  r = Hq // Hkv
  scale = d**-0.5 if scale is None else scale
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  kr, vr = jnp.repeat(f32(k), r, axis=1), jnp.repeat(f32(v), r, axis=1)
  s = jnp.einsum("bhtd,bhsd->bhts", f32(q), kr) * scale
  m = token_mask(block_mask, L, block_size, kv_len, window)
  s = jnp.where(m, s, -jnp.inf)
  mx = jnp.max(s, axis=-1, keepdims=True)
  p = jnp.where(m, jnp.exp(s - jnp.where(jnp.isfinite(mx), mx, 0.0)), 0.0)
  denom = p.sum(-1, keepdims=True)
  return jnp.einsum("bhts,bhsd->bhtd", p / jnp.where(denom > 0, denom, 1.0), vr)
