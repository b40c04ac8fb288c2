"""Peers of ProxyAttn on the same mask and kernel path: XAttention, FlexPrefill, mean-pooled top-K (MInference's
block-sparse heads), plus the measurement helpers the benchmark and tests share (attention-mass recall,
synthetic structured q/k).

Every estimator returns a ``BlockSparseMask`` (bool mask + index lists) and runs through
``BlockSparseBackend.attend``, so users compare methods in one library at matched density.

* XAttention (Xu et al., arXiv 2503.16428; ``xattn_estimate`` / ``find_blocks_chunked``): antidiagonal
  scoring. Keys regrouped ``concat_t K[t::S]`` and queries ``concat_t Q[S-1-t::S]`` on the feature axis, so one
  dot product sums ``q.k`` along an antidiagonal of an ``S x S`` sub-tile; logits scaled ``1/(sqrt(d) S)``,
  causal, softmax, summed per ``(bs/S)^2`` tile; per head and query block, block 0 and the diagonal are
  forced, then blocks by descending score until the cumulative sum reaches ``threshold * row_total``
  (forced blocks count). No GQA pooling.
* FlexPrefill (Lai et al., ICLR 2025; ``get_active_blocks``): the last ``bs`` queries of each head against all
  keys; a square-root Jensen-Shannon test (``tau``) between the block distribution of mean-pooled q/k and
  the true one picks "query-aware" heads (softmax of mean-pooled Q x K blocks, top blocks per row to
  ``gamma`` cumulative) or "vertical-slash" heads (vertical and slash profiles of the last-block map, each
  kept to ``gamma`` cumulative, mapped onto blocks). First block and diagonal forced.
* ``MeanPoolTopK`` (MInference, ``minference_forward.py``): mean-pool Q and K over blocks, dot product without
  softmax, block-causal, a fixed top-K per row.
* Controls at a set density: ``RandomBlocks`` (random causal blocks) and ``LocalBlocks`` (sink + the most
  recent blocks); an estimator is worth its cost only where it beats both at its own density.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxeff.attention.block_sparse import (
  BlockSparseBackend,
  BlockSparseMask,
  _check_qk,
  _chunk_blocks,
  _lengths,
  resolve_max_blocks,
  topk_mask_from_scores,
)
from kernels_pallas.block_sparse_attention import mask_to_indices


def _pad_len(x, Lp):
  return jnp.pad(x.astype(jnp.float32), ((0, 0), (0, 0), (0, Lp - x.shape[2]), (0, 0)))


def _expand_kv(k, Hq):
  """[B, Hkv, L, d] -> [B, Hq, L, d] (a view for per-head estimators; the kernel never repeats K/V)."""
  return jnp.repeat(k, Hq // k.shape[1], axis=1)


def _block_mean(x, bs):
  B, H, Lp, d = x.shape
  return x.reshape(B, H, Lp // bs, bs, d).mean(3)


def _ranked_count_mask(scores, cnt_with_forced, lengths, bs, max_blocks="auto"):
  """Mask keeping, per row, the forced sink + diagonal and then the best blocks, ``cnt`` in all."""
  nb = scores.shape[-1]
  m = jnp.arange(nb)
  nforced = jnp.where(m == 0, 1, 2)
  budget = jnp.maximum(cnt_with_forced - nforced, 0)
  return topk_mask_from_scores(
    scores, budget, lengths, block_size=bs, force_sink=True, force_diag=True, max_blocks=max_blocks
  )


# ------------------------------------------------------------------------------------------------ XAttention
def xattention_block_scores(q, k, lengths, *, block_size: int, stride: int, scale: float):
  """Antidiagonal block scores [B, Hq, nb, nb] (summed softmax mass per tile; see module docstring)."""
  B, Hq, Lp, d = q.shape
  S = stride
  t = block_size // S
  nb = Lp // block_size
  n = Lp // S
  kr = _expand_kv(k, Hq).reshape(B, Hq, n, S * d)  # row j = k[jS], ..., k[jS+S-1]
  qr = jnp.flip(q.reshape(B, Hq, n, S, d), axis=3).reshape(B, Hq, n, S * d)  # q[jS+S-1], ..., q[jS]
  # at least 128 strided query rows a chunk: the budget alone left 16-32 rows at 32K+ (skinny matmuls: 19 s vs
  # 8.9 s for the scores of Llama-3.1-8B's layer at 32K, identical values); the tile grows to 128 x n per head
  cb = _chunk_blocks(nb, t, n, B * Hq, min_rows=128)
  nchunks = -(-nb // cb)
  qr = jnp.pad(qr, ((0, 0), (0, 0), (0, nchunks * cb * t - n), (0, 0)))
  key_ok = (jnp.arange(n) * S)[None, :] < lengths[:, None]

  def chunk(c):
    qc = jax.lax.dynamic_slice_in_dim(qr, c * cb * t, cb * t, axis=2)
    a = c * cb * t + jnp.arange(cb * t)
    s = jnp.einsum("bhad,bhkd->bhak", qc, kr) * (scale / S)
    ok = key_ok[:, None, None, :] & (jnp.arange(n)[None, :] <= a[:, None])[None, None]
    p = jax.nn.softmax(jnp.where(ok, s, -jnp.inf), axis=-1)
    row_ok = (a * S)[None, :] < lengths[:, None]
    p = jnp.where(row_ok[:, None, :, None], p, 0.0)
    return p.reshape(B, Hq, cb, t, nb, t).sum((3, 5))

  out = jax.lax.map(chunk, jnp.arange(nchunks))
  return out.transpose(1, 2, 0, 3, 4).reshape(B, Hq, nchunks * cb, nb)[:, :, :nb]


def xattention_estimate(
  q, k, *, block_size=128, stride=8, threshold=0.9, lengths=None, max_blocks="auto", scale=None
) -> BlockSparseMask:
  """XAttention's mask: forced sink + diagonal, then blocks by descending antidiagonal score until the
  cumulative score reaches ``threshold`` of the row total (forced blocks count). q [B,Hq,L,d], k [B,Hkv,L,d]."""
  _check_qk(q, k, block_size, stride)
  if not 0.0 < threshold <= 1.0:
    raise ValueError(f"threshold must be in (0, 1], got {threshold}")
  B, Hq, L, d = q.shape
  nb = -(-L // block_size)
  Lp = nb * block_size
  lengths = _lengths(lengths, B, L)
  scale = d**-0.5 if scale is None else scale
  sc = xattention_block_scores(
    _pad_len(q, Lp), _pad_len(k, Lp), lengths, block_size=block_size, stride=stride, scale=scale
  )
  m = jnp.arange(nb)
  nvalid = -(-lengths // block_size)
  cand = (m[None, :] <= m[:, None])[None] & (m[None, None, :] < nvalid[:, None, None])  # [B, nb, nb]
  forced = (m[None, :] == 0) | (m[None, :] == m[:, None])
  key = jnp.where(cand[:, None], jnp.where(forced, jnp.inf, sc), -jnp.inf)
  order = jnp.argsort(-key, axis=-1, stable=True)
  vals = jnp.take_along_axis(jnp.where(cand[:, None], sc, 0.0), order, axis=-1)
  csum = jnp.cumsum(vals, axis=-1)
  total = csum[..., -1:]
  cnt = (csum < threshold * total).sum(-1) + 1
  nforced = jnp.where(m == 0, 1, 2)
  cnt = jnp.clip(cnt, nforced, cand.sum(-1)[:, None])
  return _ranked_count_mask(sc, cnt, lengths, block_size, max_blocks)


# ------------------------------------------------------------------------------------------------ FlexPrefill
def _js_sqrt(p, q):
  m = 0.5 * (p + q)
  kl = lambda a, b: jnp.sum(
    jnp.where(a > 0, a * (jnp.log(jnp.maximum(a, 1e-30)) - jnp.log(jnp.maximum(b, 1e-30))), 0.0), -1
  )
  return jnp.sqrt(jnp.maximum(0.5 * kl(p, m) + 0.5 * kl(q, m), 0.0))


def _keep_to_gamma(weights, gamma, lo, hi):
  """Bool over the last axis: the largest entries whose sorted cumulative share stays <= gamma, plus one,
  clamped to [lo, hi] entries (FlexPrefill's budget rule)."""
  w = weights / jnp.maximum(weights.sum(-1, keepdims=True), 1e-30)
  order = jnp.argsort(-w, axis=-1, stable=True)
  cs = jnp.cumsum(jnp.take_along_axis(w, order, -1), -1)
  n = jnp.clip((cs <= gamma).sum(-1) + 1, lo, hi)
  rank = jnp.argsort(order, axis=-1)
  return rank < n[..., None]


def flexprefill_estimate(
  q,
  k,
  *,
  block_size=128,
  gamma=0.9,
  tau=0.1,
  min_budget_tokens=0,
  max_budget_tokens=None,
  lengths=None,
  max_blocks="auto",
  scale=None,
  return_pattern=False,
):
  """FlexPrefill's mask (module docstring). q [B,Hq,L,d], k [B,Hkv,L,d]. With ``return_pattern`` also
  returns the bool [B, Hq] of query-aware heads."""
  _check_qk(q, k, block_size)
  if not 0.0 < gamma <= 1.0:
    raise ValueError(f"gamma must be in (0, 1], got {gamma}")
  B, Hq, L, d = q.shape
  bs = block_size
  nb = -(-L // bs)
  Lp = nb * bs
  lengths = _lengths(lengths, B, L)
  scale = d**-0.5 if scale is None else scale
  qf, kf = _pad_len(q, Lp), _expand_kv(_pad_len(k, Lp), Hq)
  nvalid = -(-lengths // bs)
  # Last-block map at full resolution (each row's own last bs real queries).
  start = jnp.maximum(lengths - bs, 0)
  q_last = jax.vmap(lambda x, s0: jax.lax.dynamic_slice_in_dim(x, s0, bs, axis=1))(qf, start)
  q_tok = start[:, None] + jnp.arange(bs)
  kpos = jnp.arange(Lp)
  s = jnp.einsum("bhqd,bhsd->bhqs", q_last, kf) * scale
  ok = (kpos[None, None] <= q_tok[:, :, None]) & (kpos[None, None] < lengths[:, None, None])
  A = jax.nn.softmax(jnp.where(ok[:, None], s, -jnp.inf), -1)
  row_ok = q_tok < lengths[:, None]
  A = jnp.where(row_ok[:, None, :, None], A, 0.0)  # [B, Hq, bs, Lp]
  true_blocks = A.reshape(B, Hq, bs, nb, bs).sum((2, 4))
  true_blocks = true_blocks / jnp.maximum(true_blocks.sum(-1, keepdims=True), 1e-30)
  # Mean-pooled estimate of the same distribution.
  pk = _block_mean(kf, bs)  # [B, Hq, nb, d]
  pq_last = q_last.mean(2)  # [B, Hq, d]
  blk_ok = jnp.arange(nb)[None] < nvalid[:, None]
  est = jax.nn.softmax(jnp.where(blk_ok[:, None], jnp.einsum("bhd,bhnd->bhn", pq_last, pk) * scale, -jnp.inf), -1)
  query_aware = _js_sqrt(est, true_blocks) < tau  # [B, Hq]
  # Query-aware heads: pooled block scores, each row to gamma.
  pq = _block_mean(qf, bs)
  m = jnp.arange(nb)
  cand = (m[None, :] <= m[:, None])[None] & (m[None, None, :] < nvalid[:, None, None])
  ps = jnp.where(cand[:, None], jnp.einsum("bhmd,bhnd->bhmn", pq, pk) * scale, -jnp.inf)
  qa_keep = _keep_to_gamma(jax.nn.softmax(ps, -1), gamma, 1, nb) & cand[:, None]
  # Vertical-slash heads: vertical (per key) and slash (per offset t - s) profiles of the last-block map.
  vertical = A.sum(2)  # [B, Hq, Lp]
  off = jnp.clip(q_tok[:, :, None] - kpos[None, None, :], 0, Lp - 1)  # [B, bs, Lp]
  slash = jax.vmap(lambda a, o: jax.vmap(lambda ah: jnp.zeros(Lp).at[o.reshape(-1)].add(ah.reshape(-1)))(a))(
    jnp.where(ok[:, None], A, 0.0), off
  )
  lo = max(1, min_budget_tokens)
  hi = Lp if max_budget_tokens is None else max(1, max_budget_tokens)
  v_sel = _keep_to_gamma(vertical, gamma, lo, hi) & (kpos[None, None] < lengths[:, None, None])
  s_sel = _keep_to_gamma(slash, gamma, lo, hi)
  v_blk = v_sel.reshape(B, Hq, nb, bs).any(-1)  # [B, Hq, nb]
  cs = jnp.concatenate([jnp.zeros((B, Hq, 1), jnp.int32), jnp.cumsum(s_sel, -1).astype(jnp.int32)], -1)
  delta = jnp.arange(nb)
  lo_o = jnp.clip(delta * bs - bs + 1, 0, Lp)
  hi_o = jnp.clip(delta * bs + bs, 0, Lp)  # exclusive
  d_blk = (cs[..., hi_o] - cs[..., lo_o]) > 0  # [B, Hq, nb] by block offset m - n
  diff = jnp.clip(m[:, None] - m[None, :], 0, nb - 1)
  vs_keep = (v_blk[:, :, None, :] | d_blk[:, :, diff]) & cand[:, None]
  forced = ((m[None, :] == 0) | (m[None, :] == m[:, None]))[None, None] & cand[:, None]
  keep = jnp.where(query_aware[..., None, None], qa_keep, vs_keep) | forced
  idx, cnt = mask_to_indices(keep, resolve_max_blocks(max_blocks, keep.sum(-1), nb))
  out = BlockSparseMask(idx, cnt, keep, block_size_hint=bs)
  return (out, query_aware) if return_pattern else out


# ------------------------------------------------------------------------------------------------ mean-pool
def meanpool_block_scores(q, k, *, block_size: int, scale: float | None = None):
  """MInference block-sparse scores [B, Hq, nb, nb]: mean-pooled Q x mean-pooled K, no softmax."""
  B, Hq, L, d = q.shape
  nb = -(-L // block_size)
  Lp = nb * block_size
  scale = d**-0.5 if scale is None else scale
  pq = _block_mean(_pad_len(q, Lp), block_size)
  pk = _block_mean(_expand_kv(_pad_len(k, Lp), Hq), block_size)
  return jnp.einsum("bhmd,bhnd->bhmn", pq, pk) * scale


# ------------------------------------------------------------------------------------------------ backends
@dataclasses.dataclass(frozen=True)
class XAttention(BlockSparseBackend):
  """XAttention backend (antidiagonal scoring + threshold); defaults from the paper's RULER runs."""

  stride: int = 8
  threshold: float = 0.9

  def mask(self, q_bhld, k_bhld, lengths) -> BlockSparseMask:
    return xattention_estimate(
      q_bhld, k_bhld, block_size=self.block_size, stride=self.stride, threshold=self.threshold, lengths=lengths
    )


@dataclasses.dataclass(frozen=True)
class FlexPrefill(BlockSparseBackend):
  """FlexPrefill backend (query-aware / vertical-slash heads by a JS test); gamma 0.9, tau 0.1."""

  gamma: float = 0.9
  tau: float = 0.1
  min_budget_tokens: int = 0
  max_budget_tokens: int | None = None

  def mask(self, q_bhld, k_bhld, lengths) -> BlockSparseMask:
    return flexprefill_estimate(
      q_bhld,
      k_bhld,
      block_size=self.block_size,
      gamma=self.gamma,
      tau=self.tau,
      min_budget_tokens=self.min_budget_tokens,
      max_budget_tokens=self.max_budget_tokens,
      lengths=lengths,
    )


@dataclasses.dataclass(frozen=True)
class MeanPoolTopK(BlockSparseBackend):
  """MInference's block-sparse heads: mean-pooled scores, a fixed ``topk`` blocks per row (default 100)."""

  topk: int = 100

  def mask(self, q_bhld, k_bhld, lengths) -> BlockSparseMask:
    B, Hq, L, _ = q_bhld.shape
    nb = -(-L // self.block_size)
    return self.mask_with_budget(q_bhld, k_bhld, jnp.full((B, Hq, nb), self.topk, jnp.int32), lengths)

  def mask_with_budget(self, q_bhld, k_bhld, row_budget, lengths=None) -> BlockSparseMask:
    """Top ``row_budget[b, h, m]`` blocks of each row by mean-pooled score (budget-matched comparisons)."""
    B, Hq, L, _ = q_bhld.shape
    sc = meanpool_block_scores(q_bhld, k_bhld, block_size=self.block_size)
    return topk_mask_from_scores(sc, row_budget, _lengths(lengths, B, L), block_size=self.block_size)


def density_row_counts(nb: int, density: float) -> jax.Array:
  r"""Blocks kept per query-block row for a target density: ``clip(ceil(density (m + 1)), min(m + 1, 2), m + 1)``
  (row m has m + 1 causal blocks; the sink and the diagonal are always kept). int32 [nb]."""
  m = jnp.arange(nb)
  return jnp.clip(jnp.ceil(density * (m + 1)).astype(jnp.int32), jnp.minimum(m + 1, 2), m + 1)


@dataclasses.dataclass(frozen=True)
class _DensityControl(BlockSparseBackend):
  """A control at a set ``density``: sink + diagonal, then the best causal blocks by ``scores`` (subclasses)."""

  density: float = 0.5

  def __post_init__(self):
    super().__post_init__()
    if not 0.0 < self.density <= 1.0:
      raise ValueError(f"density must be in (0, 1], got {self.density}")

  def scores(self, B: int, Hq: int, nb: int) -> jax.Array:  # pragma: no cover - abstract
    raise NotImplementedError

  def mask(self, q_bhld, k_bhld, lengths) -> BlockSparseMask:
    B, Hq, L, _ = q_bhld.shape
    nb = -(-L // self.block_size)
    cnt = jnp.broadcast_to(density_row_counts(nb, self.density), (B, Hq, nb))
    return _ranked_count_mask(self.scores(B, Hq, nb), cnt, _lengths(lengths, B, L), self.block_size)


@dataclasses.dataclass(frozen=True)
class RandomBlocks(_DensityControl):
  """Control for block-sparse estimators: sink + diagonal, then uniformly random causal blocks, ``density`` of
  each row's causal blocks (``density_row_counts``). An estimator that cannot beat this at the same density has
  learned nothing about where attention goes. ``density=1`` is dense attention exactly.

  Example:
    >>> RandomBlocks(block_size=128, density=0.5).density
    0.5
  """

  seed: int = 0

  def scores(self, B: int, Hq: int, nb: int) -> jax.Array:
    return jax.random.uniform(jax.random.key(self.seed), (B, Hq, nb, nb))


@dataclasses.dataclass(frozen=True)
class LocalBlocks(_DensityControl):
  """Control: the sink block and the most recent causal blocks (StreamingLLM's "A-shape" mask, Xiao et al.
  2024), ``density`` of each row's causal blocks. ``density=1`` is dense attention exactly.

  Example:
    >>> LocalBlocks(block_size=128, density=0.5).density
    0.5
  """

  def scores(self, B: int, Hq: int, nb: int) -> jax.Array:
    return jnp.broadcast_to(jnp.arange(nb, dtype=jnp.float32), (B, Hq, nb, nb))  # more recent = higher


# ------------------------------------------------------------------------------------------------ measurement
def attention_mass_recall(
  q, k, block_mask, block_size: int, lengths=None, scale=None, query_blocks: int | None = None
) -> jax.Array:
  r"""Share of the dense causal attention mass that a block mask keeps, averaged over heads and real queries:
  ``mean_{h,t} sum_{s kept} softmax(q_t k^T)_s``. Chunked over query blocks (no [L, L] map).

  Each query block costs a full row of scores (``bs x L`` per head), so the exact recall costs about as much as
  dense attention itself. ``query_blocks = m`` (< nb) estimates it from ``m`` query blocks evenly spaced over
  ``[0, nb)`` (the first and last included; one block: the last; deterministic, so every method is scored on
  the same blocks): the ratio ``sum_{sampled i} kept_i / sum_{sampled i} rows_i``, at ``m / nb`` of the cost.
  Used by the speed benchmark at >= 32K, where the exact map took about a third of a run.

  Args:
    q: [B, Hq, L, d]; k: [B, Hkv, L, d]; block_mask: bool [B, Hq, nb, nb].
    query_blocks: ``None`` (every query block: exact) or the number of evenly spaced query blocks to score.

  Example:
    >>> q, k = structured_qk(jax.random.key(0), length=512, head_dim=32)
    >>> full = jnp.broadcast_to(jnp.tril(jnp.ones((8, 8), bool)), (1, 8, 8, 8))
    >>> round(float(attention_mass_recall(q, k, full, 64, query_blocks=3)), 5)
    1.0
  """
  B, Hq, L, d = q.shape
  bs = block_size
  nb = -(-L // bs)
  Lp = nb * bs
  if query_blocks is None or query_blocks >= nb:
    blocks = jnp.arange(nb)
  elif query_blocks < 1:
    raise ValueError(f"query_blocks must be >= 1 (or None for every block), got {query_blocks}")
  else:
    m = query_blocks - 1  # m = 0: the last block alone (the one that sees every key)
    blocks = jnp.asarray(sorted({round(j * (nb - 1) / m) if m else nb - 1 for j in range(query_blocks)}))
  lengths = _lengths(lengths, B, L)
  scale = d**-0.5 if scale is None else scale
  qf = _pad_len(q, Lp)
  kf = _pad_len(k, Lp)
  r = Hq // k.shape[1]
  kpos = jnp.arange(Lp)

  def one(i):
    qi = jax.lax.dynamic_slice_in_dim(qf, i * bs, bs, axis=2)
    s = jnp.einsum("bkrqd,bksd->bkrqs", qi.reshape(B, -1, r, bs, d), kf).reshape(B, Hq, bs, Lp) * scale
    tok = i * bs + jnp.arange(bs)
    ok = (kpos[None, None] <= tok[None, :, None]) & (kpos[None, None] < lengths[:, None, None])
    p = jax.nn.softmax(jnp.where(ok[:, None], s, -jnp.inf), -1)
    kept = (p.reshape(B, Hq, bs, nb, bs).sum(-1) * block_mask[:, :, i][:, :, None, :]).sum(-1)  # [B, Hq, bs]
    row_ok = tok[None] < lengths[:, None]
    return (kept * row_ok[:, None]).sum(), row_ok.sum() * Hq

  num, den = jax.lax.map(one, blocks)
  return num.sum() / den.sum()


def structured_qk(
  key,
  *,
  batch=1,
  q_heads=8,
  kv_heads=2,
  length=4096,
  head_dim=64,
  n_needles=8,
  needle_span=8,
  n_topics=6,
  dtype=jnp.float32,
):
  """Synthetic post-RoPE-like q [B,Hq,L,d], k [B,Hkv,L,d] with the structure sparse prefill exploits.

  Logits ``q.k / sqrt(d)`` are built from orthonormal directions: an attention sink (token 0, logit ~6),
  needle spans shared by every head (``n_needles`` spans of ``needle_span`` tokens, logit ~6: a relevant
  passage), "topic" stretches of one block's length that every query likes moderately (logit ~2.5: many
  tokens, little softmax mass), locality (a smooth component shared by q and k, logit up to ~2 for near
  tokens), unit-variance noise, and per-head sharpness (query scales from 0.5 to 2). Mean-pooled block scores
  favour the broad topic stretches; softmax mass sits on the sink and the needles.
  """
  ks = jax.random.split(key, 8)
  d = head_dim
  basis, _ = jnp.linalg.qr(jax.random.normal(ks[0], (d, d)))
  u_sink, u_needle, u_topic = basis[:, 0], basis[:, 1], basis[:, 2]
  proj = jnp.eye(d) - jnp.outer(u_sink, u_sink) - jnp.outer(u_needle, u_needle) - jnp.outer(u_topic, u_topic)
  kernel = jnp.exp(-0.5 * (jnp.arange(-24, 25) / 8.0) ** 2)
  white = jax.random.normal(ks[1], (batch, length + 48, d))
  local = jax.vmap(lambda w: jax.vmap(lambda c: jnp.convolve(c, kernel, mode="valid"), in_axes=1, out_axes=1)(w))(
    white
  )
  local = local @ proj
  local = 1.4 * local / (jnp.linalg.norm(local, axis=-1, keepdims=True) + 1e-6)
  t = jnp.arange(length)
  starts = jax.random.randint(ks[2], (batch, n_needles), 1, max(2, length - needle_span))
  needle = ((t[None, None] >= starts[..., None]) & (t[None, None] < starts[..., None] + needle_span)).any(1)
  span = max(1, min(64, length // 8))
  tstarts = jax.random.randint(ks[3], (batch, n_topics), 1, max(2, length - span))
  topic = ((t[None, None] >= tstarts[..., None]) & (t[None, None] < tstarts[..., None] + span)).any(1)
  noise = lambda k_, shape: jax.random.normal(k_, shape) * d**-0.25
  base_k = local + 3.0 * (t == 0)[None, :, None] * u_sink + 3.0 * needle[..., None] * u_needle
  base_k = base_k + 2.5 * topic[..., None] * u_topic
  base_q = local + 2.0 * u_sink + 2.0 * u_needle + 1.0 * u_topic
  # q.k / sqrt(d) = (base_q + n_q).(base_k + n_k): the designed logits plus unit-variance noise.
  k = (base_k[:, None] + noise(ks[4], (batch, kv_heads, length, d))) * d**0.25
  sharp = jnp.linspace(0.5, 2.0, q_heads)[None, :, None, None]
  q = sharp * (base_q[:, None] + noise(ks[5], (batch, q_heads, length, d))) * d**0.25
  return q.astype(dtype), k.astype(dtype)
