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
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

_NEG = -1e30  # finite, so a row with no visible key gives a uniform (ignored) distribution, not NaN


def cap_scores(s: Array, softcap: float | None) -> Array:
  """Attention-logit soft-capping, c * tanh(s / c) on the scaled scores before masking (Gemma 2; Gemma 3's
  ``attn_logit_softcapping`` when set); ``s`` unchanged when ``softcap`` is ``None``."""
  return s if softcap is None else softcap * jnp.tanh(s / softcap)


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
  softcap: float | None = None,
) -> Float[Array, "B T N H"]:
  r"""softmax(q k^T / sqrt(H) + mask) v with grouped-query heads (query head n uses kv head n // G); with
  ``softcap`` c the scores are c * tanh(q k^T / (c sqrt(H))) before the mask (``cap_scores``).

  Scores and softmax are computed in float32; the value product in the value dtype.

  Args:
    q_btnh: queries [B, T, N, H].
    k_bskh: keys [B, S, K, H] with N % K == 0.
    v_bskh: values [B, S, K, H].
    mask_bts: boolean visibility [B, T, S].
    scale: score scale, default 1 / sqrt(H).
    softcap: attention-logit soft-cap c, ``None`` = off.

  Returns:
    [B, T, N, H] attention output in the query dtype.
  """
  B, T, N, H = q_btnh.shape
  K = k_bskh.shape[2]
  G = N // K
  scale = H**-0.5 if scale is None else scale
  q = q_btnh.reshape(B, T, K, G, H)
  s = cap_scores(jnp.einsum("btkgh,bskh->bkgts", q, k_bskh, preferred_element_type=jnp.float32) * scale, softcap)
  s = jnp.where(mask_bts[:, None, None, :, :], s, _NEG)
  p = jax.nn.softmax(s, axis=-1).astype(v_bskh.dtype)
  o = jnp.einsum("bkgts,bskh->btkgh", p, v_bskh)
  return o.reshape(B, T, N, H).astype(q_btnh.dtype)


def tiled_cache_attention(
  q_btnh: Float[Array, "B T N H"],
  load_tile,
  n_tiles,
  q_pos_bt: Int[Array, "B T"],
  *,
  window: int | None = None,
  scale: float | None = None,
  softcap: float | None = None,
) -> Float[Array, "B T N H"]:
  r"""Attention over a cache read one tile at a time: ``load_tile(j) -> (k [B, bt, K, H], v [B, bt, K, H],
  pos [B, bt])`` gives tile ``j`` (dequantized there, so a quantized cache is never expanded whole), and an
  online softmax folds ``n_tiles`` tiles (may be traced: a loop bounded by the filled length),

    m' = max(m, max_s s_s),  l' = l e^{m - m'} + \sum_s e^{s_s - m'},  acc' = acc e^{m - m'} + \sum_s e^{s_s - m'} v_s,

  with the visibility rule of ``position_mask``. Scores in float32.

  A tile may also come as interleaved channel parts: ``k = (k_0, ..., k_{P-1})`` with ``k_p [B, bt, K, H/P]``
  holding channels ``p, p + P, ...`` (likewise ``v``), e.g. the low and high nibbles of an int4 cache. The
  scores are then ``sum_p q[..., p::P] . k_p`` and the value sums are kept per part and interleaved once at
  the end, so the parts are never stitched back into a tile (on XLA:CPU that interleave costs more than the
  attention itself).

  Args:
    q_btnh: [B, T, N, H]; q_pos_bt: [B, T]; n_tiles: int or traced int.
    softcap: attention-logit soft-cap c (scores c * tanh(s / c), ``cap_scores``), ``None`` = off.

  Values may be wider or narrower than the keys (``v [B, bt, K, Hv]``, e.g. a latent attended with its
  up-projection absorbed): the output is then ``[B, T, N, Hv]``.

  Returns:
    [B, T, N, Hv] in the query dtype (zeros for a query that sees nothing); Hv = H for ordinary values.

  Example:
    >>> k = v = jnp.ones((1, 8, 1, 4)); pos = jnp.arange(8)[None]
    >>> load = lambda j: (jax.lax.dynamic_slice_in_dim(k, j * 4, 4, 1), jax.lax.dynamic_slice_in_dim(v, j * 4, 4, 1),
    ...                   jax.lax.dynamic_slice_in_dim(pos, j * 4, 4, 1))
    >>> tiled_cache_attention(jnp.ones((1, 1, 2, 4)), load, 2, jnp.array([[7]])).shape
    (1, 1, 2, 4)

  Reference: the online softmax of FlashAttention (Dao et al. 2022) applied to decode over a cache.
  """
  B, T, N, H = q_btnh.shape
  scale = H**-0.5 if scale is None else scale
  k_shape, v_shape = jax.eval_shape(load_tile, 0)[:2]
  parts = isinstance(k_shape, (tuple, list))
  P = len(k_shape) if parts else 1
  K = (k_shape[0] if parts else k_shape).shape[2]
  Hv = (v_shape[0] if parts else v_shape).shape[-1] * P  # the value width (may differ from H: latent values)
  G = N // K
  q = q_btnh.reshape(B, T, K, G, H).astype(jnp.float32) * scale
  q_parts = [q[..., p::P] for p in range(P)]

  def step(j, carry):
    m, l, acc = carry
    k, v, pos = load_tile(j)
    k, v = (k, v) if parts else ((k,), (v,))
    s = cap_scores(
      sum(jnp.einsum("btkgh,bskh->bkgts", qp, kp.astype(jnp.float32)) for qp, kp in zip(q_parts, k)), softcap
    )
    ok = position_mask(q_pos_bt, pos, window)[:, None, None]  # [B, 1, 1, T, bt]
    s = jnp.where(ok, s, _NEG)
    m_new = jnp.maximum(m, s.max(-1))
    p = jnp.where(ok, jnp.exp(s - m_new[..., None]), 0.0)
    corr = jnp.exp(m - m_new)[..., None]
    acc = tuple(a * corr + jnp.einsum("bkgts,bskh->bkgth", p, vp.astype(jnp.float32)) for a, vp in zip(acc, v))
    return m_new, l * corr[..., 0] + p.sum(-1), acc

  init = (
    jnp.full((B, K, G, T), _NEG),
    jnp.zeros((B, K, G, T)),
    tuple(jnp.zeros((B, K, G, T, Hv // P)) for _ in range(P)),
  )
  m, l, acc = jax.lax.fori_loop(0, n_tiles, step, init)
  acc = jnp.stack(acc, axis=-1).reshape(B, K, G, T, Hv)  # interleave the parts: channel h = part h % P
  o = acc / jnp.where(l > 0, l, 1.0)[..., None]
  return o.transpose(0, 3, 1, 2, 4).reshape(B, T, N, Hv).astype(q_btnh.dtype)


def reference_attention(q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, window=None, softcap=None):
  """Plain float32 oracle: exact attention under the position mask (used by tests and kernels)."""
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  mask = position_mask(q_pos_bt, k_pos_bs, window)
  return masked_attention(f32(q_btnh), f32(k_bskh), f32(v_bskh), mask, softcap=softcap)


def blockwise_attention(
  q_btnh: Float[Array, "B T N H"],
  k_bskh: Float[Array, "B S K H"],
  v_bskh: Float[Array, "B S K H"],
  q_pos_bt: Int[Array, "B T"],
  k_pos_bs: Int[Array, "B S"],
  *,
  window: int | None = None,
  block_q: int = 512,
  block_k: int = 512,
  skip_blocks: bool = True,
  softcap: float | None = None,
) -> Float[Array, "B T N H"]:
  r"""Exact attention tiled over query and key blocks with an online softmax (flash-attention in jnp).

  For each query block, key blocks are visited in order keeping the running max m, normaliser l and
  accumulator a:  m' = max(m, rowmax(s)),  l' = l e^{m - m'} + rowsum(e^{s - m'}),
  a' = a e^{m - m'} + e^{s - m'} V;  the output is a / l. Scores never exist beyond one [block_q, block_k]
  tile per head, which keeps the work in cache on CPU (about 4x faster than materialising [T, S] at 2k
  tokens) and bounds memory everywhere.

  With ``skip_blocks`` the key loop of query block i runs only over blocks that can hold visible keys:
  up to the block containing index ``(i + 1) * block_q - 1`` and, with a sliding window, from
  ``i * block_q - window + 1``. That assumes positions increase with the index within each row, as in every
  prompt chunk (padding, position -1, may sit anywhere: it is masked by position). Masking itself is always
  by position, so the result equals ``masked_attention`` under ``position_mask``.

  Args:
    q_btnh, k_bskh, v_bskh: queries [B, T, N, H], keys/values [B, S, K, H] (GQA: N % K == 0).
    q_pos_bt, k_pos_bs: positions, -1 = padding.
    window: sliding window (``None`` = full causal).
    block_q, block_k: tile sizes.
    skip_blocks: skip key blocks that the index-causal structure makes invisible.
    softcap: attention-logit soft-cap c (each tile's scores c * tanh(s / c), ``cap_scores``), ``None`` = off.

  Returns:
    [B, T, N, H] in the query dtype (accumulation in float32).
  """
  B, T, N, H = q_btnh.shape
  K = k_bskh.shape[2]
  G = N // K
  q_bkgth, k_bksh, v_bksh, qpos, kpos = _tile_layout(q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, block_q, block_k)
  nq, nk = q_bkgth.shape[3] // block_q, k_bksh.shape[2] // block_k

  def one_query_block(i):
    qi = jax.lax.dynamic_slice_in_dim(q_bkgth, i * block_q, block_q, axis=3)
    qp = jax.lax.dynamic_slice_in_dim(qpos, i * block_q, block_q, axis=1)
    body = lambda j, carry: _online_softmax_tile(qi, qp, k_bksh, v_bksh, kpos, j, block_k, window, softcap, carry)
    init = _online_softmax_init(B, K, G, block_q, H)
    if not skip_blocks:
      m, l, acc = jax.lax.fori_loop(0, nk, body, init)
    else:
      lo, hi = _key_block_range(i, block_q, block_k, nk, window)

      # A scan over every key block with a cond (not a fori_loop with traced bounds) stays differentiable;
      # skipped blocks run the identity branch.
      def step(carry, j):
        return jax.lax.cond((j >= lo) & (j < hi), lambda c: body(j, c), lambda c: c, carry), None

      (m, l, acc), _ = jax.lax.scan(step, init, jnp.arange(nk))
    return acc / l[..., None]

  out = jax.lax.map(one_query_block, jnp.arange(nq))  # [nq, B, K, G, block_q, H]
  return _merge_query_blocks(out, T).astype(q_btnh.dtype)


def _pad_rows(x, n):
  """Pad axis 1 by n rows: positions ([B, T]) with -1 (padding), tensors with 0."""
  return jnp.pad(x, ((0, 0), (0, n)) + ((0, 0),) * (x.ndim - 2), constant_values=-1 if x.ndim == 2 else 0)


def _query_layout(x_btnh, K, Tp):
  """[B, T, N, H] -> [B, K, G, Tp, H] (GQA groups split out, rows padded with zeros to Tp)."""
  B, T, N, H = x_btnh.shape
  return _pad_rows(x_btnh, Tp - T).reshape(B, Tp, K, N // K, H).transpose(0, 2, 3, 1, 4)


def _tile_layout(q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, block_q, block_k):
  """Pad T and S to whole tiles (padding at position -1); q as [B, K, G, Tp, H] scaled by 1 / sqrt(H), k and v
  as [B, K, Sp, H]."""
  T, H = q_btnh.shape[1], q_btnh.shape[3]
  S, K = k_bskh.shape[1], k_bskh.shape[2]
  Tp, Sp = -(-T // block_q) * block_q, -(-S // block_k) * block_k
  q = _query_layout(q_btnh * jnp.asarray(H**-0.5, q_btnh.dtype), K, Tp)
  k = _pad_rows(k_bskh, Sp - S).transpose(0, 2, 1, 3)
  v = _pad_rows(v_bskh, Sp - S).transpose(0, 2, 1, 3)
  return q, k, v, _pad_rows(q_pos_bt, Tp - T), _pad_rows(k_pos_bs, Sp - S)


def _merge_query_blocks(out, T):
  """[nq, B, K, G, block_q, H] (one entry per query block) -> [B, T, N, H]."""
  nq, B, K, G, bq, H = out.shape
  return out.transpose(1, 0, 4, 2, 3, 5).reshape(B, nq * bq, K * G, H)[:, :T]


def _key_block_range(i, block_q, block_k, nk, window):
  """Key blocks [lo, hi) that query block i can see when positions increase with the index."""
  hi = jnp.minimum(((i + 1) * block_q + block_k - 1) // block_k, nk)
  lo = 0 if window is None else jnp.maximum(0, (i * block_q - window + 1) // block_k)
  return lo, hi


def _online_softmax_init(B, K, G, block_q, H):
  return (
    jnp.full((B, K, G, block_q), _NEG, jnp.float32),
    jnp.zeros((B, K, G, block_q), jnp.float32),
    jnp.zeros((B, K, G, block_q, H), jnp.float32),
  )


def _online_softmax_tile(qi, qp, k_bksh, v_bksh, kpos, j, block_k, window, softcap, carry):
  """One key tile j of the online softmax: (m, l, acc) -> (m', l', acc') (``blockwise_attention``'s formula)."""
  m, l, acc = carry
  kj = jax.lax.dynamic_slice_in_dim(k_bksh, j * block_k, block_k, axis=2)
  vj = jax.lax.dynamic_slice_in_dim(v_bksh, j * block_k, block_k, axis=2)
  kp = jax.lax.dynamic_slice_in_dim(kpos, j * block_k, block_k, axis=1)
  s = cap_scores(jnp.einsum("bkgth,bksh->bkgts", qi, kj, preferred_element_type=jnp.float32), softcap)
  s = jnp.where(position_mask(qp, kp, window)[:, None, None], s, _NEG)
  m_new = jnp.maximum(m, s.max(-1))
  p = jnp.exp(s - m_new[..., None])
  corr = jnp.exp(m - m_new)
  pv = jnp.einsum("bkgts,bksh->bkgth", p.astype(vj.dtype), vj, preferred_element_type=jnp.float32)
  return m_new, l * corr + p.sum(-1), acc * corr[..., None] + pv


def _default_flash_block(B: int, T: int, N: int, H: int) -> int:
  """``flash_attention``'s default tile (see its ``block`` argument)."""
  b = 2 ** math.floor(math.log2(math.sqrt(2**13 * H / (B * N))) + 0.5)
  if T >= 2048:  # long rows: 256 was the fastest at every 2K-4K shape measured, whatever the batch and heads
    b = max(b, 256)
  return min(max(b, 32), 512, -(-T // 8) * 8)


def _flash_forward(q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, window, block, softcap):
  """Output [B, T, N, H] and log-sum-exp [B, K, G, Tp] (Tp = T padded to whole blocks); rows with no visible
  key output 0 (a NaN score stays NaN: ``m <= ...`` is False for NaN)."""
  B, T, N, H = q_btnh.shape
  K = k_bskh.shape[2]
  q, k, v, qpos, kpos = _tile_layout(q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, block, block)
  n = q.shape[3] // block

  def one_query_block(i):
    qi = jax.lax.dynamic_slice_in_dim(q, i * block, block, axis=3)
    qp = jax.lax.dynamic_slice_in_dim(qpos, i * block, block, axis=1)
    body = lambda j, carry: _online_softmax_tile(qi, qp, k, v, kpos, j, block, window, softcap, carry)
    lo, hi = _key_block_range(i, block, block, n, window)
    m, l, acc = jax.lax.fori_loop(lo, hi, body, _online_softmax_init(B, K, N // K, block, H))
    return jnp.where((m <= _NEG / 2)[..., None], 0.0, acc / l[..., None]), m + jnp.log(l)

  o, lse = jax.lax.map(one_query_block, jnp.arange(n))
  return _merge_query_blocks(o, T).astype(q_btnh.dtype), lse.transpose(1, 2, 3, 0, 4).reshape(B, K, N // K, -1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _flash(q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, window, block, softcap):
  return _flash_forward(q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, window, block, softcap)[0]


def _flash_fwd(q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, window, block, softcap):
  out, lse = _flash_forward(q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, window, block, softcap)
  return out, (q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, out, lse)


def _flash_bwd(window, block, softcap, res, do_btnh):
  """Per query block i (a scan), per visible key block j (a loop with traced bounds): P = exp(S - L) rebuilt
  from the saved log-sum-exp; dQ_i accumulates in the loop, dK_j / dV_j into the carried full dK / dV."""
  q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, out, lse = res
  B, T, N, H = q_btnh.shape
  f32 = jnp.float32
  q, k, v, qpos, kpos = _tile_layout(
    q_btnh.astype(f32), k_bskh.astype(f32), v_bskh.astype(f32), q_pos_bt, k_pos_bs, block, block
  )
  Tp, K = q.shape[3], k_bskh.shape[2]
  do, o = _query_layout(do_btnh.astype(f32), K, Tp), _query_layout(out.astype(f32), K, Tp)
  delta = jnp.sum(o * do, axis=-1)  # rowsum(dO * O) [B, K, G, Tp]
  n = q.shape[3] // block
  cut = lambda x, i, axis: jax.lax.dynamic_slice_in_dim(x, i * block, block, axis=axis)

  def query_block(carry, i):
    qi, doi, li, di, qp = cut(q, i, 3), cut(do, i, 3), cut(lse, i, 3), cut(delta, i, 3), cut(qpos, i, 1)

    def body(j, c):
      dqi, dk, dv = c
      kj, vj = cut(k, j, 2), cut(v, j, 2)
      s = jnp.einsum("bkgth,bksh->bkgts", qi, kj)
      if softcap is not None:  # s_c = c tanh(s / c): ds = ds_c (1 - tanh^2)
        t = jnp.tanh(s / softcap)
        s = softcap * t
      p = jnp.where(position_mask(qp, cut(kpos, j, 1), window)[:, None, None], jnp.exp(s - li[..., None]), 0.0)
      dp = jnp.einsum("bkgth,bksh->bkgts", doi, vj)
      ds = p * (dp - di[..., None])
      if softcap is not None:
        ds = ds * (1.0 - t * t)
      dk = jax.lax.dynamic_update_slice_in_dim(
        dk, cut(dk, j, 2) + jnp.einsum("bkgts,bkgth->bksh", ds, qi), j * block, 2
      )
      dv = jax.lax.dynamic_update_slice_in_dim(
        dv, cut(dv, j, 2) + jnp.einsum("bkgts,bkgth->bksh", p, doi), j * block, 2
      )
      return dqi + jnp.einsum("bkgts,bksh->bkgth", ds, kj), dk, dv

    lo, hi = _key_block_range(i, block, block, n, window)
    dqi, dk, dv = jax.lax.fori_loop(lo, hi, body, (jnp.zeros_like(qi), *carry))
    return (dk, dv), dqi

  (dk, dv), dq = jax.lax.scan(query_block, (jnp.zeros_like(k), jnp.zeros_like(v)), jnp.arange(n))
  scale = H**-0.5
  zero_pos = lambda x: np.zeros(x.shape, jax.dtypes.float0)
  back = lambda x, like: x.transpose(0, 2, 1, 3)[:, :T].astype(like.dtype)
  return (
    (_merge_query_blocks(dq, T) * scale).astype(q_btnh.dtype),
    back(dk, k_bskh),
    back(dv, v_bskh),
    zero_pos(q_pos_bt),
    zero_pos(k_pos_bs),
  )


_flash.defvjp(_flash_fwd, _flash_bwd)


def flash_attention(
  q_btnh: Float[Array, "B T N H"],
  k_btkh: Float[Array, "B T K H"],
  v_btkh: Float[Array, "B T K H"],
  q_pos_bt: Int[Array, "B T"],
  k_pos_bt: Int[Array, "B T"],
  *,
  window: int | None = None,
  block: int | None = None,
  softcap: float | None = None,
) -> Float[Array, "B T N H"]:
  r"""Exact causal self-attention for training: causal block skipping forward, recomputing backward.

  Query block i visits only key blocks 0..i (from the window's first under a sliding window), i.e. the blocks
  above the diagonal are never computed; within them the position mask of ``masked_attention`` applies, so
  padding (position -1) anywhere is exact. The forward keeps only O and the log-sum-exp L = m + log l; the
  custom VJP recomputes P = exp(S - L) per block (flash-attention's backward, Dao et al. 2022):

    dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(dO * O)),  dQ = dS K / sqrt(H),  dK = dS^T Q / sqrt(H).

  With an attention-logit soft-cap c the scores are S_c = c tanh(S / c) (Gemma 2) and dS above is multiplied
  by dS_c / dS = 1 - tanh^2(S / c) (recomputed with P).

  It never stores the [T, T] probabilities. Both passes loop over query blocks and, inside, over the visible
  key blocks only (square tiles of ``block``), so XLA works on one tile at a time. On 2 CPU cores forward +
  backward is 1.2-1.3x faster than the earlier trace-time-unrolled version of the same formulas (which XLA
  scheduled breadth-first over all blocks; 256-2048 tokens), a model's train step at 2048 tokens compiles in
  3 s instead of 12, and the gradient is 2-4x faster than differentiating ``masked_attention`` or
  ``blockwise_attention``. Memory is O(T H) per head: XLA's temporaries for the gradient are 84 MB at
  2 x 4,096 tokens (8 / 4 heads of 64) and 144 MB at 16,384 (9 / 3 heads), where the unrolled version needed
  1.9 GB and 15 GB. PyTorch's fused CPU kernel (``scaled_dot_product_attention``) is still 1.5-2x
  faster (``benchmarks/bench_training.py`` prints both).

  Assumes queries and keys are the same chunk (T == S) with positions increasing with the index in each row.
  Rows with no visible key (padding queries) output zeros and pass no gradient (``masked_attention`` returns
  the mean of the values there); every other row matches it exactly.

  Args:
    q_btnh: queries [B, T, N, H].
    k_btkh, v_btkh: keys and values [B, T, K, H], N % K == 0.
    q_pos_bt, k_pos_bt: positions [B, T], -1 = padding.
    window: sliding window or ``None``.
    softcap: attention-logit soft-cap c (``cap_scores``), ``None`` = off.
    block: query and key tile size; default: the power of two nearest to sqrt(2^13 H / (B N)) within
      [32, 512], at least 256 from T = 2048 on, at most T rounded up to 8 (tiles of about 2^13 H scores over
      the batch and heads: the fastest gradient measured on 2 CPU cores at (B, T, N, H) = (16, 256, 4, 32) and
      (16, 256, 8, 32): 64, (4, 1024, 8, 32): 128, and 256 at (2, 2048, 8, 64), (2, 2048, 8, 32) (238 ms vs
      315 at 128 and 443 at 512), (1, 4096, 8, 32), (1, 2048, 9, 64) and (1, 4096, 9, 64)).

  Returns:
    [B, T, N, H] in the query dtype.

  Example:
    >>> q = k = v = jnp.ones((1, 8, 2, 4)); pos = jnp.arange(8)[None]
    >>> flash_attention(q, k, v, pos, pos, block=4).shape
    (1, 8, 2, 4)
  """
  B, T, N, H = q_btnh.shape
  if k_btkh.shape[1] != T or v_btkh.shape[1] != T:
    raise ValueError(f"flash_attention is self-attention: q has {T} tokens, k/v {k_btkh.shape[1]}")
  if N % k_btkh.shape[2]:
    raise ValueError(f"{N} query heads are not a multiple of {k_btkh.shape[2]} kv heads")
  if block is None:
    block = _default_flash_block(B, T, N, H)
  if block <= 0:
    raise ValueError(f"block must be positive, got {block}")
  return _flash(q_btnh, k_btkh, v_btkh, q_pos_bt, k_pos_bt, window, block, softcap)


@dataclasses.dataclass(frozen=True)
class Dense:
  """Exact attention backend.

  Queries over a different key set (or chunks of at most 16 tokens) use one masked softmax; prefill chunks
  (queries = keys) use ``blockwise_attention``: tiles of ``block_q`` x ``block_k`` with an online
  softmax, skipping key blocks above the causal diagonal (and outside a sliding window) when
  ``skip_blocks`` (positions must increase with the index in each row, padding anywhere; true for every
  prompt jaxeff's sampler builds).

  Example:
    >>> import jax.numpy as jnp
    >>> q = k = v = jnp.ones((1, 4, 2, 8)); pos = jnp.arange(4)[None]
    >>> Dense()(q, k, v, pos, pos).shape
    (1, 4, 2, 8)
  """

  block_q: int = 512
  block_k: int = 512
  skip_blocks: bool = True
  supports_softcap = True  # class constant: the decoder passes ``softcap=`` (Gemma's attention-logit cap)

  def __post_init__(self):
    if self.block_q <= 0 or self.block_k <= 0:
      raise ValueError(f"block sizes must be positive, got block_q={self.block_q}, block_k={self.block_k}")

  def __call__(
    self, q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, *, window: int | None = None, layer: int = 0, softcap=None
  ):
    T, S = q_btnh.shape[1], k_bskh.shape[1]
    if T != S or T <= 16:
      return masked_attention(q_btnh, k_bskh, v_bskh, position_mask(q_pos_bt, k_pos_bs, window), softcap=softcap)
    # Tiles never larger than the (8-rounded) chunk: short prompts do not pay for padding to a full block.
    round8 = -(-T // 8) * 8
    return blockwise_attention(
      q_btnh,
      k_bskh,
      v_bskh,
      q_pos_bt,
      k_pos_bs,
      window=window,
      block_q=min(self.block_q, round8),
      block_k=min(self.block_k, round8),
      skip_blocks=self.skip_blocks,
      softcap=softcap,
    )


@dataclasses.dataclass(frozen=True)
class TrainingAttention:
  """The backend the trainer differentiates: ``flash_attention`` for a chunk attending to itself (T == S),
  ``Dense`` otherwise. Same results as ``Dense`` (padding query rows output zeros instead of a value mean),
  attention-logit soft-cap included.

  Example:
    >>> q = k = v = jnp.ones((1, 8, 2, 4)); pos = jnp.arange(8)[None]
    >>> TrainingAttention()(q, k, v, pos, pos).shape
    (1, 8, 2, 4)
  """

  block: int | None = None
  supports_softcap = True

  def __call__(
    self, q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, *, window: int | None = None, layer: int = 0, softcap=None
  ):
    if q_btnh.shape[1] != k_bskh.shape[1] or q_btnh.shape[1] <= 16:
      return Dense()(q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, window=window, layer=layer, softcap=softcap)
    return flash_attention(
      q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, window=window, block=self.block, softcap=softcap
    )
