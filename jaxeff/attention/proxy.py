"""ProxyAttn: proxy-head block estimation with dynamic per-head budgets, for block-sparse prefill attention.

ProxyAttn (Wang et al., "ProxyAttn: Guided Sparse Attention via Representative Heads", arXiv 2509.24745,
ICLR 2026) ranks key blocks with a few pooled "proxy" heads and gives every real head its own budget:

1. Proxies: the heads are split into ``g`` groups aligned with the GQA kv groups; ``Qp_g`` is the mean of
   the group's query heads and ``Kp_g`` the mean of its kv heads (a mean over the head axis).
2. Stride: keep every ``s``-th token of ``Qp_g`` and ``Kp_g`` (a subsample).
3. Block scores: ``P_g = softmax(Qp_g[::s] Kp_g[::s]^T / sqrt(d))`` causal on original positions, in float32;
   ``A_g[m, n]`` = max of ``P_g`` over tile ``(m, n)`` of ``(bs/s) x (bs/s)`` strided entries.
4. Budgets: for each real head i, ``Ahat_i = softmax(Q_i[L-bs:L] K_i^T / sqrt(d))`` (the last query block,
   full resolution, causal); ``a_i[n]`` = key-block mass averaged over those queries, sorted descending;
   ``c_i = min{k >= 1 : sum_{j<k} a_sorted[j] >= gamma}``; ``K_i = max(c_i, ceil(mb / bs))``.
5. Mask: row m of head i keeps the top ``K_i`` causal candidates ``n <= m`` of ``A_{g(i)}[m, :]`` (all of them
   when there are at most ``K_i``); heads of one group share one ranking, so their masks are nested.

The (L/s)^2 map is never held whole: step 3 runs over chunks of query blocks (``lax.map``), and each chunk
holds full strided rows, so the row log-sum-exp and the tile maxima come from the same pass. Everything has
static shapes and runs under ``jit`` from traced q/k.

Readings the equations leave open (UNVERIFIED, the official code was not readable) are options; defaults are
the most literal reading: ``tile_reduce`` ("max2d" | "max_k_then_mean_q"), ``count_mode`` ("count" |
"literal": Alg. 1 with a 0-based k, i.e. ``c_i - 1``, floored at one block), ``row_mode`` ("absolute": the
same ``K_i`` in every row | "ratio": ``K_im = max(ceil(b_i (m+1)), ceil(mb/bs))`` with ``b_i = c_i / nb``),
``force_sink`` / ``force_diag`` (default off: the paper is silent; forced blocks come on top of ``K_i``).
Ties are broken towards the lower block index on every path. A length that is not a multiple of ``bs`` is
padded with masked keys and the padded query rows are dropped; per-row ``lengths`` (right padding) are
honoured the same way, and the budget's "last query block" is each row's own last ``bs`` real queries.

Peers on the same mask and kernel path (``XAttention``, ``FlexPrefill``, ``MeanPoolTopK``) live in
``jaxeff.attention.peers``; the mask type, the top-k step and the backend base they all share in
``jaxeff.attention.block_sparse``.
"""

from __future__ import annotations

import dataclasses
import math

import flax.struct
import jax
import jax.numpy as jnp

from jaxeff.attention.block_sparse import BlockSparseBackend as BlockSparseBackend
from jaxeff.attention.block_sparse import BlockSparseMask as BlockSparseMask
from jaxeff.attention.block_sparse import _check_qk, _chunk_blocks, _lengths
from jaxeff.attention.block_sparse import resolve_max_blocks as resolve_max_blocks
from jaxeff.attention.block_sparse import topk_mask_from_scores as topk_mask_from_scores
from kernels_pallas.block_sparse_attention import indices_to_mask

COUNT_MODES = ("count", "literal")
ROW_MODES = ("absolute", "ratio")
TILE_REDUCES = ("max2d", "max_k_then_mean_q")


@flax.struct.dataclass
class ProxyEstimate(BlockSparseMask):
  """ProxyAttn's estimate: the mask plus what produced it.

  Attributes (beyond ``BlockSparseMask``):
    proxy_scores: float32 [B, g, nb, nb] tile scores ``A_g`` (zero above the causal diagonal).
    budget_blocks: int32 [B, Hq] per-head block budget ``K_i`` (after the minimum budget).
    budget_ratio: float32 [B, Hq] ``b_i = c_i / nb`` (before the minimum budget).
  """

  proxy_scores: jax.Array = None
  budget_blocks: jax.Array = None
  budget_ratio: jax.Array = None


def _check_options(*, block_size, stride, gamma, min_budget_tokens, num_proxies, count_mode, row_mode, tile_reduce):
  """Shape-independent checks of ProxyAttn's options (shared by ``estimate`` and ``ProxyAttention``)."""
  if block_size <= 0 or stride <= 0 or block_size % stride:
    raise ValueError(f"block_size {block_size} must be a positive multiple of stride {stride}")
  if num_proxies <= 0:
    raise ValueError(f"num_proxies must be positive, got {num_proxies}")
  if not 0.0 < gamma <= 1.0:
    raise ValueError(f"gamma must be in (0, 1], got {gamma}")
  if min_budget_tokens < 0:
    raise ValueError(f"min_budget_tokens must be >= 0, got {min_budget_tokens}")
  for name, val, allowed in (
    ("count_mode", count_mode, COUNT_MODES),
    ("row_mode", row_mode, ROW_MODES),
    ("tile_reduce", tile_reduce, TILE_REDUCES),
  ):
    if val not in allowed:
      raise ValueError(f"{name} must be one of {allowed}, got {val!r}")


def _group_mean(x: jax.Array, groups: int) -> jax.Array:
  """The mean of ``x [B, H, L, d]`` over each of ``groups`` contiguous runs of heads: ``[B, groups, L, d]``.

  Summed head by head in the token-major order ``[B, L, H, d]`` (the model's layout, of which the estimator's
  head-major input is usually a transposed view), an unrolled chain of adds: equal to ``mean`` up to rounding
  (bit-identical on the inputs checked). XLA:CPU reduces the head axis of ``[B, g, r, L, d]`` 60x slower than
  these adds (8 x 8192 x 128: 50 ms vs 0.8 ms here), which made the proxy mean half the estimator's time; summed
  head-major, the adds made XLA hold a transposed copy of q (4.5 GiB of temporaries instead of 3.5 for a whole
  ProxyAttn layer of Llama-3.1-8B at 128K); token-major they need 3.0 (0.6 with ``packing="assume_in_front"``,
  was 1.2)."""
  B, H, L, d = x.shape
  r = H // groups
  y = x.transpose(0, 2, 1, 3).reshape(B, L, groups, r, d)
  total = y[:, :, :, 0]
  for j in range(1, r):
    total = total + y[:, :, :, j]
  return (total / r).transpose(0, 2, 1, 3)


def strided_block_scores(
  qp: jax.Array,
  kp: jax.Array,
  lengths: jax.Array,
  *,
  block_size: int,
  stride: int,
  scale: float,
  tile_reduce: str = "max2d",
) -> jax.Array:
  r"""Step 3: tile scores of the strided causal softmax, chunked over query blocks.

  ``P = softmax(qp[::s] kp[::s]^T * scale)`` (query ``s a`` sees key ``s b`` iff ``b <= a`` and ``s b < len``),
  ``A[m, n] = max_{(a, b) in tile (m, n)} P[a, b]`` ("max2d"), or the mean over the tile's rows of the per-row
  max ("max_k_then_mean_q"); padded query rows (``s a >= len``) are left out.

  Args:
    qp, kp: float32 [B, G, Lp, d] proxy queries / keys, Lp a multiple of ``block_size``.
    lengths: int32 [B] real tokens per row.

  Returns:
    float32 [B, G, nb, nb].
  """
  B, G, Lp, d = qp.shape
  t = block_size // stride
  nb = Lp // block_size
  qs = qp[:, :, ::stride]
  ks = kp[:, :, ::stride]
  Ls = nb * t
  cb = _chunk_blocks(nb, t, Ls, B * G)
  nchunks = -(-nb // cb)
  qs = jnp.pad(qs, ((0, 0), (0, 0), (0, nchunks * cb * t - Ls), (0, 0)))
  key_ok = (jnp.arange(Ls) * stride)[None, :] < lengths[:, None]  # [B, Ls]

  def chunk(c):
    qc = jax.lax.dynamic_slice_in_dim(qs, c * cb * t, cb * t, axis=2)  # [B, G, cb*t, d]
    a = c * cb * t + jnp.arange(cb * t)
    s = jnp.einsum("bgad,bgkd->bgak", qc, ks, preferred_element_type=jnp.float32) * scale
    ok = key_ok[:, None, None, :] & (jnp.arange(Ls)[None, :] <= a[:, None])[None, None]
    s = jnp.where(ok, s, -jnp.inf)
    lse = jax.nn.logsumexp(s, axis=-1, keepdims=True)  # key 0 is always visible: finite
    tile_max = s.reshape(B, G, cb * t, nb, t).max(-1)  # [B, G, rows, nb]
    p = jnp.exp(tile_max - lse)  # softmax is monotone in a row: max of P over the tile row
    row_ok = (a * stride)[None, :] < lengths[:, None]  # [B, rows]
    p = jnp.where(row_ok[:, None, :, None], p, 0.0).reshape(B, G, cb, t, nb)
    if tile_reduce == "max2d":
      return p.max(3)
    n_rows = row_ok.reshape(B, 1, cb, t, 1).sum(3)
    return p.sum(3) / jnp.maximum(n_rows, 1)

  out = jax.lax.map(chunk, jnp.arange(nchunks))  # [nchunks, B, G, cb, nb]
  return out.transpose(1, 2, 0, 3, 4).reshape(B, G, nchunks * cb, nb)[:, :, :nb]


def last_block_mass(
  q: jax.Array, k: jax.Array, lengths: jax.Array, *, block_size: int, scale: float, key_chunk_blocks: int | None = None
) -> jax.Array:
  r"""Step 4.1-4.2: key-block attention mass of each head's last ``bs`` real queries.

  ``Ahat_i = softmax(Q_i[len-bs:len] K_i^T * scale)`` (causal, keys < len); ``a_i[n]`` = the mass of key block
  n summed over its keys and averaged over the (real) queries.

  Computed over key chunks of ``key_chunk_blocks`` blocks (default: a chunk's scores hold ~2M floats), each
  contributing its row max and per-block exp-sums, so memory is O(bs nb) per head at any length.

  Args:
    q: [B, Hq, Lp, d]; k: [B, Hkv, Lp, d] (contiguous GQA); lengths [B].

  Returns:
    float32 [B, Hq, nb].
  """
  B, Hq, Lp, d = q.shape
  Hkv = k.shape[1]
  r = Hq // Hkv
  bs = block_size
  nb = Lp // bs
  start = jnp.maximum(lengths - bs, 0)
  q_last = jax.vmap(lambda qb, s0: jax.lax.dynamic_slice_in_dim(qb, s0, bs, axis=1))(q, start)  # [B,Hq,bs,d]
  q_last = q_last.reshape(B, Hkv, r, bs, d).astype(jnp.float32)
  q_tok = start[:, None] + jnp.arange(bs)[None, :]  # [B, bs]
  # Key chunks of ``cb`` blocks: each gives its per-row max and, per key block, the sum of exp(s - that max);
  # the softmax over all keys is assembled from those (memory O(bs nb) per head, never [bs, L] scores).
  cb = key_chunk_blocks or max(1, (1 << 21) // max(1, B * Hq * bs * bs))
  cb = min(cb, nb)
  nchunks = -(-nb // cb)
  kc = jnp.pad(k, ((0, 0), (0, 0), (0, nchunks * cb * bs - Lp), (0, 0)))

  def chunk(c):
    kj = jax.lax.dynamic_slice_in_dim(kc, c * cb * bs, cb * bs, axis=2).astype(jnp.float32)  # [B,Hkv,cb*bs,d]
    s = jnp.einsum("bkrqd,bksd->bkrqs", q_last, kj).reshape(B, Hq, bs, cb * bs) * scale
    kpos = c * cb * bs + jnp.arange(cb * bs)
    ok = (kpos[None, None, :] <= q_tok[:, :, None]) & (kpos[None, None, :] < lengths[:, None, None])
    s = jnp.where(ok[:, None], s, -jnp.inf)
    m = s.max(-1)  # [B, Hq, bs]
    e = jnp.where(ok[:, None], jnp.exp(s - jnp.where(jnp.isfinite(m), m, 0.0)[..., None]), 0.0)
    return m, e.reshape(B, Hq, bs, cb, bs).sum(-1)  # [B, Hq, bs], [B, Hq, bs, cb]

  m_c, e_c = jax.lax.map(chunk, jnp.arange(nchunks))  # [n, B, Hq, bs], [n, B, Hq, bs, cb]
  top = m_c.max(0)  # the row max over all keys (key 0 is always visible: finite)
  w = jnp.where(jnp.isfinite(m_c), jnp.exp(m_c - top), 0.0)  # [n, B, Hq, bs]
  e = (e_c * w[..., None]).transpose(1, 2, 3, 0, 4).reshape(B, Hq, bs, nchunks * cb)[..., :nb]
  p = e / e.sum(-1, keepdims=True)  # per row: the softmax mass of each key block
  row_ok = q_tok < lengths[:, None]  # [B, bs]
  p = jnp.where(row_ok[:, None, :, None], p, 0.0)
  mass = p.sum(2) / row_ok.sum(-1)[:, None, None]
  return mass


def budget_counts(mass: jax.Array, gamma: float, count_mode: str = "count") -> jax.Array:
  r"""Step 4.3-4.4: ``c = min{k >= 1 : sum_{j<k} a_sorted[j] >= gamma}`` on the normalised, sorted mass.

  "literal" returns ``c - 1`` floored at 1 (Alg. 1 read with a 0-based k). Entries of zero mass (padding
  blocks) sort last; c never exceeds the number of blocks with any mass.

  Args:
    mass: [..., nb] non-negative.

  Returns:
    int32 [...].
  """
  a = -jnp.sort(-mass, axis=-1)
  a = a / jnp.maximum(a.sum(-1, keepdims=True), 1e-30)
  csum = jnp.cumsum(a, axis=-1)
  nonzero = (mass > 0).sum(-1)
  c = jnp.minimum((csum < gamma).sum(-1) + 1, jnp.maximum(nonzero, 1))
  if count_mode == "literal":
    c = jnp.maximum(c - 1, 1)
  return c.astype(jnp.int32)


def estimate(
  q: jax.Array,
  k: jax.Array,
  *,
  block_size: int = 128,
  stride: int = 4,
  num_proxies: int = 1,
  gamma: float = 0.95,
  min_budget_tokens: int = 2048,
  force_sink: bool = False,
  force_diag: bool = False,
  count_mode: str = "count",
  row_mode: str = "absolute",
  tile_reduce: str = "max2d",
  lengths: jax.Array | None = None,
  max_blocks: int | str | None = "auto",
  scale: float | None = None,
) -> ProxyEstimate:
  r"""ProxyAttn block estimation (module docstring, steps 1-5).

  Args:
    q: [B, Hq, L, d] queries after RoPE; k: [B, Hkv, L, d] keys after RoPE (query head h reads kv head
      ``h // (Hq // Hkv)``).
    block_size: tile edge ``bs`` (a multiple of ``stride``).
    stride: subsampling stride ``s``.
    num_proxies: proxy heads ``g`` (a divisor of Hkv); group j holds kv heads ``[j Hkv/g, (j+1) Hkv/g)`` and
      their query heads.
    gamma: cumulative-mass threshold in (0, 1].
    min_budget_tokens: minimum budget ``mb`` in tokens (rounded up to blocks).
    force_sink, force_diag: always keep block 0 / the diagonal block (on top of the budget).
    count_mode: "count" (default) or "literal" (``c - 1``).
    row_mode: "absolute" (default, ``K_i`` in every row) or "ratio" (``ceil(b_i (m+1))``, floored at mb).
    tile_reduce: "max2d" (default) or "max_k_then_mean_q".
    lengths: optional int32 [B] real tokens per row (right padding).
    max_blocks: the index-list width ``Kmax`` (``resolve_max_blocks``): ``"auto"`` (default) the largest row
      budget rounded up to 16 blocks when called eagerly (lists of ``nb x Kmax`` ids per head, not ``nb x nb``),
      ``nb`` under ``jit`` (budgets are traced; pass an int to bound it there); ``None``: ``nb``.
    scale: score scale, default 1/sqrt(d).

  Returns:
    ProxyEstimate with ``proxy_scores [B, g, nb, nb]``, ``budget_blocks [B, Hq]``, ``budget_ratio``,
    ``block_mask [B, Hq, nb, nb]``, ``block_idx [B, Hq, nb, Kmax]``, ``block_cnt [B, Hq, nb]``.

  Example:
    >>> import jax
    >>> q = jax.random.normal(jax.random.key(0), (1, 8, 1024, 64)); k = q[:, ::4]
    >>> est = estimate(q, k, block_size=128, gamma=0.9, min_budget_tokens=256)
    >>> est.block_mask.shape, est.budget_blocks.shape
    ((1, 8, 8, 8), (1, 8))

  Reference: ProxyAttn, arXiv 2509.24745, Eq. 1-2 and Alg. 1.
  """
  _check_qk(q, k, block_size, stride)
  B, Hq, L, d = q.shape
  Hkv = k.shape[1]
  _check_options(
    block_size=block_size,
    stride=stride,
    gamma=gamma,
    min_budget_tokens=min_budget_tokens,
    num_proxies=num_proxies,
    count_mode=count_mode,
    row_mode=row_mode,
    tile_reduce=tile_reduce,
  )
  if Hkv % num_proxies:
    raise ValueError(f"num_proxies {num_proxies} must divide the kv heads {Hkv} (proxy groups = kv groups)")
  scale = d**-0.5 if scale is None else scale
  g = num_proxies
  nb = -(-L // block_size)
  Lp = nb * block_size
  lengths = _lengths(lengths, B, L)
  pad = ((0, 0), (0, 0), (0, Lp - L), (0, 0))
  qf, kf = jnp.pad(q.astype(jnp.float32), pad), jnp.pad(k.astype(jnp.float32), pad)

  # Steps 1-3: proxies (mean over the group's heads), strided map, tile scores.
  qp = _group_mean(qf, g)
  kp = _group_mean(kf, g)
  scores = strided_block_scores(
    qp, kp, lengths, block_size=block_size, stride=stride, scale=scale, tile_reduce=tile_reduce
  )
  # Step 4: per-head budgets.
  mass = last_block_mass(qf, kf, lengths, block_size=block_size, scale=scale)
  c = budget_counts(mass, gamma, count_mode)  # [B, Hq]
  nvalid = -(-lengths // block_size)
  ratio = c / nvalid[:, None]
  floor = -(-min_budget_tokens // block_size)
  K = jnp.maximum(c, floor).astype(jnp.int32)
  if row_mode == "absolute":
    row_budget = jnp.broadcast_to(K[..., None], (B, Hq, nb))
  else:
    # ceil(c / nvalid * (m + 1)) in exact integer arithmetic (a float product lands on either side of n).
    per_row = -(-(c[..., None] * (jnp.arange(nb) + 1)) // nvalid[:, None, None])
    row_budget = jnp.maximum(per_row, max(floor, 1))
  # Step 5: top-K per row over the group's ranking.
  head_group = jnp.arange(Hq) // (Hq // g)
  m = topk_mask_from_scores(
    scores,
    row_budget,
    lengths,
    block_size=block_size,
    head_group=head_group,
    force_sink=force_sink,
    force_diag=force_diag,
    max_blocks=max_blocks,
  )
  return ProxyEstimate(
    m.block_idx,
    m.block_cnt,
    m.block_mask,
    block_size_hint=block_size,
    proxy_scores=scores,
    budget_blocks=K,
    budget_ratio=ratio.astype(jnp.float32),
  )


def default_num_proxies(config) -> int:
  """The paper's per-model choice: 4 proxies for Qwen2-family models (Qwen2.5-7B-1M), 1 otherwise
  (Llama-3.1-8B); always a divisor of the kv heads."""
  want = 4 if config.model_type.startswith("qwen") else 1
  return math.gcd(want, config.n_kv_heads)


# ------------------------------------------------------------------------------------------------ backends
@dataclasses.dataclass(frozen=True)
class ProxyAttention(BlockSparseBackend):
  """ProxyAttn prefill backend: ``forward(..., attention=ProxyAttention(gamma=0.95))``; decode stays dense.

  Fields are ``estimate``'s options (defaults: the paper's experiments, block 128, stride 4, mb 2048 tokens)
  plus the kernel choice (``implementation`` None = by backend: XLA on CPU, Pallas on TPU/GPU).

  Example:
    >>> from jaxeff.config import ModelConfig
    >>> from jaxeff.models.decoder import init_params, forward
    >>> import jax, jax.numpy as jnp
    >>> cfg = ModelConfig.tiny(); p = init_params(cfg, jax.random.key(0))
    >>> toks = jnp.zeros((1, 512), jnp.int32); pos = jnp.arange(512)[None]
    >>> att = ProxyAttention(gamma=0.9, block_size=64, min_budget_tokens=128)
    >>> forward(p, toks, pos, config=cfg, attention=att)[0].shape
    (1, 512, 272)
  """

  gamma: float = 0.95
  stride: int = 4
  num_proxies: int = 1
  min_budget_tokens: int = 2048
  force_sink: bool = False
  force_diag: bool = False
  count_mode: str = "count"
  row_mode: str = "absolute"
  tile_reduce: str = "max2d"
  max_blocks: int | str | None = "auto"

  def __post_init__(self):
    # Validate eagerly: a clear error when the backend is built, before any model runs.
    super().__post_init__()
    if self.max_blocks is not None and self.max_blocks != "auto" and not isinstance(self.max_blocks, int):
      raise ValueError(f"max_blocks must be an int, None or 'auto', got {self.max_blocks!r}")
    _check_options(
      block_size=self.block_size,
      stride=self.stride,
      gamma=self.gamma,
      min_budget_tokens=self.min_budget_tokens,
      num_proxies=self.num_proxies,
      count_mode=self.count_mode,
      row_mode=self.row_mode,
      tile_reduce=self.tile_reduce,
    )

  @classmethod
  def for_model(cls, config, **kw) -> ProxyAttention:
    """Per-model defaults (``default_num_proxies``), overridable by keyword."""
    kw.setdefault("num_proxies", default_num_proxies(config))
    return cls(**kw)

  def mask(self, q_bhld, k_bhld, lengths) -> ProxyEstimate:
    return estimate(
      q_bhld,
      k_bhld,
      block_size=self.block_size,
      stride=self.stride,
      num_proxies=self.num_proxies,
      gamma=self.gamma,
      min_budget_tokens=self.min_budget_tokens,
      force_sink=self.force_sink,
      force_diag=self.force_diag,
      count_mode=self.count_mode,
      row_mode=self.row_mode,
      tile_reduce=self.tile_reduce,
      lengths=lengths,
      max_blocks=self.max_blocks,
    )


__all__ = [
  "BlockSparseBackend",
  "BlockSparseMask",
  "ProxyAttention",
  "ProxyEstimate",
  "budget_counts",
  "default_num_proxies",
  "estimate",
  "indices_to_mask",
  "last_block_mass",
  "resolve_max_blocks",
  "strided_block_scores",
  "topk_mask_from_scores",
]
