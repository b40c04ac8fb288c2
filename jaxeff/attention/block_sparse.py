"""What every block-sparse prefill backend shares: the mask type (``BlockSparseMask``: index lists + bool mask,
and its density), the top-k step that turns block scores and per-row budgets into a mask
(``topk_mask_from_scores``), and the backend base (``BlockSparseBackend``: estimate a mask, run the block-sparse
kernel of ``kernels_pallas.block_sparse_attention``, fall back to dense attention where blocks make no sense).
ProxyAttn (``jaxeff.attention.proxy``) and its peers (``jaxeff.attention.peers``) are estimators on top.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from kernels_pallas.block_sparse_attention import block_sparse_attention, index_dtype, pad_indices

_FORCED = float("inf")  # forced blocks rank first
_EXCLUDED = float("-inf")  # non-candidates rank last


@flax.struct.dataclass
class BlockSparseMask:
  """A per-head block mask in both forms (static shapes).

  Attributes:
    block_idx: [B, Hq, nb, Kmax] kept key-block ids per query block (``index_dtype(nb)``: int16 up to 32,767
      blocks), best first; slots ``>= cnt`` repeat the last kept id.
    block_cnt: int32 [B, Hq, nb] number of kept blocks per query block.
    block_mask: bool [B, Hq, nb, nb].
    block_size_hint: the block size (static), used by ``density`` with per-row lengths.
  """

  block_idx: jax.Array
  block_cnt: jax.Array
  block_mask: jax.Array
  block_size_hint: int = flax.struct.field(pytree_node=False, default=1)

  def _kept_over_causal(self, counts: jax.Array, lengths: jax.Array | None) -> jax.Array:
    """``counts [B, H, nb]`` summed over the real query blocks of each row, over the causal blocks there (x H)."""
    nb = self.block_mask.shape[-1]
    nvalid = jnp.full((self.block_mask.shape[0],), nb) if lengths is None else -(-lengths // self.block_size_hint)
    m = jnp.arange(nb)
    row_ok = m[None, :] < nvalid[:, None]  # [B, nb]
    causal = jnp.minimum(m[None, :] + 1, nvalid[:, None]) * row_ok
    kept = (counts * row_ok[:, None]).sum()
    return kept / (causal.sum() * counts.shape[1])

  def density(self, lengths: jax.Array | None = None) -> jax.Array:
    """Kept / causal blocks over the real query blocks of each row (a scalar)."""
    return self._kept_over_causal(self.block_cnt, lengths)

  def union_density(self, kv_heads: int, lengths: jax.Array | None = None) -> jax.Array:
    """Like ``density``, counting per kv head the union of its query heads' lists (a scalar): what the grouped
    XLA path's union walk does (``block_sparse_attention_xla_grouped``: every head of a group scores each union
    tile), so ``1 / union_density`` bounds that walk's speedup as ``1 / density`` bounds the per-head one. Lists
    that are nested (ProxyAttn's: prefixes of one ranking) take the ranked walk instead, whose work is ``density``.

    Example:
      >>> idx = jnp.array([[[[0], [0]], [[0], [1]]]])  # 2 heads x 2 query blocks; at block 1 they differ
      >>> m = BlockSparseMask(idx, jnp.ones((1, 2, 2), jnp.int32), jnp.zeros((1, 2, 2, 2), bool))
      >>> round(float(m.density()), 3), float(m.union_density(kv_heads=1))  # 4 of 6 per head; 3 of 3 as a union
      (0.667, 1.0)
    """
    from kernels_pallas.block_sparse_attention.xla import group_union

    nb = self.block_mask.shape[-1]
    _, n_union = group_union(self.block_idx, self.block_cnt, self.block_cnt.shape[1] // kv_heads, nb)
    return self._kept_over_causal(n_union, lengths)


def _check_qk(q, k, block_size, stride=1):
  if q.ndim != 4 or k.ndim != 4:
    raise ValueError(f"q must be [B, Hq, L, d] and k [B, Hkv, L, d], got {q.shape} and {k.shape}")
  B, Hq, L, d = q.shape
  if k.shape[0] != B or k.shape[2] != L or k.shape[3] != d:
    raise ValueError(f"k {k.shape} does not match q {q.shape} in batch, length or head_dim")
  if Hq % k.shape[1]:
    raise ValueError(f"query heads {Hq} must be a multiple of kv heads {k.shape[1]}")
  if block_size <= 0 or stride <= 0 or block_size % stride:
    raise ValueError(f"block_size {block_size} must be a positive multiple of stride {stride}")


def _lengths(lengths, B, L):
  if lengths is None:
    return jnp.full((B,), L, jnp.int32)
  return jnp.clip(jnp.asarray(lengths, jnp.int32), 1, L)


def _chunk_blocks(
  nb: int, rows_per_block: int, row_width: int, parallel: int, budget: int = 1 << 22, min_rows: int = 1
) -> int:
  """Query blocks per chunk so a chunk's score tile holds about ``budget`` floats, but at least ``min_rows``
  query rows (a floor on the matmul's height; the tile then exceeds the budget), at most ``nb`` blocks."""
  fit = budget // max(1, rows_per_block * row_width * parallel)
  return max(1, min(nb, max(fit, -(-min_rows // rows_per_block))))


def resolve_max_blocks(max_blocks, counts: jax.Array, nb: int, multiple: int = 16) -> int:
  """The index-list width ``Kmax`` (static): ``max_blocks`` an int: that, clipped to ``[1, nb]``; ``None``: ``nb``
  (no cap); ``"auto"``: the largest per-row count ``max(counts)`` rounded up to ``multiple`` (few distinct
  widths, so few compiles of the kernel that reads the lists), clipped to ``[1, nb]``, so the lists take
  ``nb x Kmax`` ids per head (O(L K)) rather than ``nb x nb``. ``"auto"`` needs concrete counts (an eager call);
  under ``jit`` the counts are traced and the width falls back to ``nb`` (pass an int there to bound it).
  No kept block is ever dropped by ``"auto"``: the width is at least every row's count.

  Example:
    >>> import jax.numpy as jnp
    >>> resolve_max_blocks("auto", jnp.array([3, 40, 7]), nb=1024), resolve_max_blocks(None, None, nb=1024)
    (48, 1024)
  """
  if max_blocks is None:
    return nb
  if isinstance(max_blocks, str):
    if max_blocks != "auto":
      raise ValueError(f"max_blocks must be an int, None or 'auto', got {max_blocks!r}")
    try:
      top = int(jnp.max(counts))
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError):
      return nb  # traced (under jit): no static bound is known
    return max(1, min(nb, -(-top // multiple) * multiple))
  if isinstance(max_blocks, bool) or not isinstance(max_blocks, int):
    raise ValueError(f"max_blocks must be an int, None or 'auto', got {max_blocks!r}")
  return max(1, min(int(max_blocks), nb))


def topk_mask_from_scores(
  scores: jax.Array,
  row_budget: jax.Array,
  lengths: jax.Array,
  *,
  block_size: int,
  head_group: jax.Array | None = None,
  force_sink: bool = False,
  force_diag: bool = False,
  max_blocks: int | str | None = "auto",
) -> BlockSparseMask:
  r"""Step 5: keep the top ``row_budget[b, h, m]`` causal candidates of ``scores[b, head_group[h], m, :]``.

  Candidates of row m are ``n <= m`` with ``n`` a real block; forced blocks (sink ``n = 0``, diagonal
  ``n = m``) rank first and come on top of the budget; ties go to the lower block index (a stable sort). A row
  with at most ``budget`` candidates keeps them all. Heads sharing a score row share one ranking, so their
  masks are nested in the budget.

  Args:
    scores: float32 [B, G, nb, nb] (any finite values; higher = more important).
    row_budget: int32 [B, Hq, nb].
    lengths: int32 [B] real tokens per row.
    head_group: int32 [Hq] score row of each head (default: identity, G == Hq).
    max_blocks: the index-list width ``Kmax`` (``resolve_max_blocks``): ``"auto"`` (default) the largest row
      count (forced blocks included) when the budgets are concrete, ``nb`` under ``jit``; an int caps it (rows
      with more blocks keep their best ``Kmax``); ``None``: ``nb``.

  Returns:
    BlockSparseMask (ids in ``index_dtype(nb)``: int16 up to nb = 32767, counts int32).
  """
  B, G, nb, _ = scores.shape
  Hq = row_budget.shape[1]
  head_group = jnp.arange(Hq) if head_group is None else head_group
  nvalid = -(-lengths // block_size)  # [B]
  m = jnp.arange(nb)[:, None]
  n = jnp.arange(nb)[None, :]
  cand = (n <= m)[None] & (n < nvalid[:, None, None])  # [B, nb, nb]
  forced = jnp.zeros((nb, nb), bool)
  if force_sink:
    forced |= n == 0
  if force_diag:
    forced |= n == m
  forced = forced[None] & cand
  key = jnp.where(cand[:, None], scores, _EXCLUDED)
  key = jnp.where(forced[:, None], _FORCED, key)
  ix = index_dtype(nb)  # compact ids: int16 up to nb = 32767
  order = jnp.argsort(-key, axis=-1, stable=True).astype(ix)  # [B, G, nb, nb]
  rank = jnp.argsort(order, axis=-1).astype(ix)
  ncand = cand.sum(-1)  # [B, nb]
  nforced = forced.sum(-1)
  cnt = jnp.minimum(row_budget + nforced[:, None], ncand[:, None])
  kmax = resolve_max_blocks(max_blocks, cnt, nb)
  cnt = jnp.minimum(cnt, kmax).astype(jnp.int32)
  order_h = order[:, head_group]  # [B, Hq, nb, nb]
  idx = pad_indices(order_h[..., :kmax], cnt)
  mask = rank[:, head_group] < cnt[..., None]
  return BlockSparseMask(idx, cnt, mask, block_size_hint=block_size)


@dataclasses.dataclass(frozen=True)
class BlockSparseBackend:
  """Base of block-sparse prefill backends: ``mask(q, k, lengths)`` is the estimator, the kernel is shared.

  Called like ``Dense``: ``backend(q [B,T,N,H], k [B,S,K,H], v, q_pos, k_pos, window=..., layer=...)``.
  It assumes the prefill layout jaxeff builds (positions ``0..n-1`` then padding ``-1`` on the right); the
  real length of each row is the count of non-negative key positions. Rows whose valid tokens are not all in
  front (a padded prompt followed by Judge Q's soft tokens) are packed to that layout and back (``lax.cond``:
  the common layout pays nothing). A sliding-window layer (``window`` shorter than the context) runs its exact
  window by default (``local_layers="window"``: the block-skipping ``Dense`` path, cost ~ T x window), so the
  method applies to the global layers; ``local_layers="sparse"`` intersects the window with the estimated mask
  instead. Measured on Gemma 3 270M (2K-token needle prompt, ProxyAttn with a 512-token floor): intersecting
  costs KL 4.6 nats on the next-token distribution (the estimator ranks the whole causal range, e.g. the sink
  block, and most of its budget falls outside the window), running local layers on their window 0.0015. A
  window at least the context's length is no window: plain sparse. A prefill chunk over a cache that holds the
  earlier chunks (``T < S``: the queries are the last ``T`` of the ``S`` keys, ``forward(..., chunk_offset=)``)
  runs sparse too: the queries are placed at their key indices (zeros before them), the estimator ranks as for
  a prompt of ``S`` tokens (its cost is that of the whole length; the budget comes from the chunk's last query
  block), and the query blocks before the chunk are skipped by the kernel; with ``packing="auto"`` a chunk
  whose keys are not in front goes to ``Dense``. Chunks shorter than a block and contexts of at most
  ``dense_below`` tokens go to ``Dense``.

  ``packing``: ``"auto"`` (default) checks the layout at run time and packs when needed; the packing branch
  counts in the compiled program's memory: it holds a packed copy of q and k for the estimator and one kv
  group's packed q, k, v and output at a time for the kernel (3.05 GiB of temporaries beyond q, k, v and the
  output at 128K tokens of Llama-3.1-8B's layer; whole copies of q, k, v and the output cost 8.0).
  ``"assume_in_front"`` skips the check and the branch (a long single prompt, or any batch jaxeff's sampler
  builds without soft tokens after the padding): 0.59 GiB there.
  """

  block_size: int = 128
  implementation: str | None = None
  interpret: Any = False
  blocks_per_step: int | None = None
  dense_below: int = 0
  packing: str = "auto"
  local_layers: str = "window"

  def __post_init__(self):
    if self.packing not in ("auto", "assume_in_front"):
      raise ValueError(f"packing must be 'auto' or 'assume_in_front', got {self.packing!r}")
    if self.local_layers not in ("window", "sparse"):
      raise ValueError(f"local_layers must be 'window' or 'sparse', got {self.local_layers!r}")

  def mask(self, q_bhld, k_bhld, lengths) -> BlockSparseMask:  # pragma: no cover - abstract
    raise NotImplementedError

  def attend(
    self, q_bhld, k_bhld, v_bhld, lengths, *, layout: str = "bhld", window: int | None = None, first_row: int = 0
  ):
    """Estimate, then run the block-sparse kernel; [B, Hq, L, d] in, [B, Hq, L, d] out, and the mask.
    ``layout="blhd"``: q, k, v and the output are [B, L, H, d] (the model's layout; the kernel reads it in place,
    the estimator sees transposed views). ``window``: a sliding-window layer's window, intersected with the
    estimated mask (the estimator ranks the whole causal range; blocks outside the window are then dropped).
    ``first_row``: query rows before it are not wanted (a prefill chunk's zero padding): the query blocks
    wholly before it get empty lists, so the kernel skips them (their outputs are zeros)."""
    t = (lambda x: x) if layout == "bhld" else (lambda x: x.transpose(0, 2, 1, 3))
    m = self.mask(t(q_bhld), t(k_bhld), lengths)
    cnt = m.block_cnt
    if first_row:
      cnt = jnp.where(jnp.arange(cnt.shape[-1]) < first_row // self.block_size, 0, cnt)
    out = block_sparse_attention(
      q_bhld,
      k_bhld,
      v_bhld,
      m.block_idx,
      cnt,
      block_size=self.block_size,
      kv_len=lengths,
      implementation=self.implementation,
      interpret=self.interpret,
      blocks_per_step=self.blocks_per_step,
      layout=layout,
      window=window,
    )
    return out, m

  def __call__(self, q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, *, window: int | None = None, layer: int = 0):
    from jaxeff.attention.dense import Dense

    T, S = q_btnh.shape[1], k_bskh.shape[1]
    if T > S or T < self.block_size or S <= max(self.block_size, self.dense_below):
      return Dense()(q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, window=window, layer=layer)
    if window is not None and window >= S:
      window = None  # wider than the context: no window
    if window is not None and self.local_layers == "window":  # a local layer: its exact window (class docstring)
      return Dense()(q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, window=window, layer=layer)
    valid = k_pos_bs >= 0
    lengths = jnp.maximum(valid.sum(-1), 1).astype(jnp.int32)
    off = S - T  # a prefill chunk over a cache: its queries are the last T of the S keys

    def run(q, k, v):  # in the model's [B, T, H, d] layout: no transposed copies of q, k, v or the output
      if off:  # the chunk's queries at their key indices; the query blocks before the chunk are skipped
        q = jnp.pad(q, ((0, 0), (off, 0), (0, 0), (0, 0)))
      return self.attend(q, k, v, lengths, layout="blhd", window=window, first_row=off)[0][:, off:]

    def packed(q, k, v):
      # Valid tokens not all in front (e.g. Judge Q's soft tokens after a padded prompt; T == S here): move them
      # to the front in order (a stable sort), estimate on the packed q / k, then run the kernel one kv group at
      # a time (its query heads and its one kv head gathered, attended, moved back into the output), so the
      # branch holds one group's copies instead of whole copies of q, k, v and the output (class docstring).
      # Per-group kernel calls are exact: the kernel treats each kv group independently (a group's query
      # heads walk the union of their own lists).
      order = jnp.argsort(~valid, axis=1, stable=True)
      back = jnp.argsort(order, axis=1)
      # (argsort indices are in bounds: the default fill mode's bounds select would cost one more full copy)
      gather = lambda x, idx: jnp.take_along_axis(x, idx[:, :, None, None], axis=1, mode="promise_in_bounds")
      to_bhld = lambda x: x.transpose(0, 2, 1, 3)
      m = self.mask(to_bhld(gather(q, order)), to_bhld(gather(k, order)), lengths)
      Hq, Hkv = q.shape[2], k.shape[2]
      r = Hq // Hkv

      def group(g, out):
        heads = lambda x, n: jax.lax.dynamic_slice_in_dim(x, g * n, n, axis=2)
        og = block_sparse_attention(
          gather(heads(q, r), order),
          gather(heads(k, 1), order),
          gather(heads(v, 1), order),
          jax.lax.dynamic_slice_in_dim(m.block_idx, g * r, r, axis=1),
          jax.lax.dynamic_slice_in_dim(m.block_cnt, g * r, r, axis=1),
          block_size=self.block_size,
          kv_len=lengths,
          implementation=self.implementation,
          interpret=self.interpret,
          blocks_per_step=self.blocks_per_step,
          layout="blhd",
          window=window,
        )
        return jax.lax.dynamic_update_slice_in_dim(out, gather(og.astype(out.dtype), back), g * r, axis=2)

      return jax.lax.fori_loop(0, Hkv, group, jnp.zeros_like(q))

    def dense(q, k, v):
      return Dense()(q, k, v, q_pos_bt, k_pos_bs, window=window, layer=layer).astype(q.dtype)

    if self.packing == "assume_in_front":
      return run(q_btnh, k_bskh, v_bskh)
    in_front = jnp.all(valid == (jnp.arange(S)[None] < valid.sum(-1, keepdims=True)))
    return jax.lax.cond(in_front, run, packed if T == S else dense, q_btnh, k_bskh, v_bskh)
