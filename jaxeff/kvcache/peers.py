"""Peers of CommonKV behind the same cache protocol, so users compare in one library.

* Palu-style per-layer low rank (Chang et al., ICLR 2025): ``palu_compress`` = CommonKV's SVD with groups of one
  layer (no cross-layer sharing); the latent cache is the same ``LatentCache``.
* MiniCache-style cross-layer merge (Liu et al., NeurIPS 2024): ``minicache_merge`` merges the full K/V caches
  of adjacent layer pairs after prefill: per token, one shared direction by SLERP of the two layers'
  normalised vectors (``t = 0.6``), each layer keeping its own magnitude; the least similar tokens (a
  ``keep_ratio`` share by angle, plus sinks and the recent window) stay unmerged. The merged direction is
  stored once per pair, magnitudes per layer, unmerged tokens in a static-capacity buffer per layer. On a model
  with local and global layers (Gemma 3) a pair never mixes the two (``MiniCacheMerge.for_model``: consecutive
  layers of one type, as CommonKV's groups).
  ``MiniCacheMerge()`` is the cache factory (a full prefill, then the merge), for the sampler and the evaluators.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from jaxeff.attention.dense import masked_attention, position_mask
from jaxeff.kvcache.base import FullCache, _write_rows
from jaxeff.kvcache.commonkv import append_bookkeeping, compress, layer_groups, scatter_own


def palu_compress(config, params, *, rank=None, ratio=None, layer_scores=None, multiple=8):
  """Palu-style per-layer low-rank K/V (CommonKV's surgery with ``group_size=1``)."""
  return compress(config, params, group_size=1, rank=rank, ratio=ratio, layer_scores=layer_scores, multiple=multiple)


def slerp(a, b, t: float):
  """Spherical interpolation of unit vectors ``a``, ``b`` [..., H] (linear when nearly parallel)."""
  dot = jnp.clip((a * b).sum(-1, keepdims=True), -1.0, 1.0)
  theta = jnp.arccos(dot)
  s = jnp.sin(theta)
  w_a = jnp.where(s > 1e-6, jnp.sin((1 - t) * theta) / jnp.where(s > 1e-6, s, 1.0), 1 - t)
  w_b = jnp.where(s > 1e-6, jnp.sin(t * theta) / jnp.where(s > 1e-6, s, 1.0), t)
  out = w_a * a + w_b * b
  return out / (jnp.linalg.norm(out, axis=-1, keepdims=True) + 1e-12)


@flax.struct.dataclass
class MiniMergedCache:
  """Each pair of layers (``pair_of[layer]``; by default (2i, 2i+1)) shares ``k_dir/v_dir [B, S, K, H]``; per layer
  ``k_mag/v_mag [B, S, K]``; unmerged tokens per layer in ``own_k/own_v [B, U, K, H]`` at slots ``own_slot [B, U]``
  (per pair); decode tokens are appended unmerged. A layer alone in its pair keeps its full cache in pair form."""

  k_dir: tuple
  v_dir: tuple
  k_mag: tuple
  v_mag: tuple
  own_k: tuple
  own_v: tuple
  own_slot: tuple
  own_len: jax.Array
  pos: jax.Array
  length: jax.Array
  merged_share: jax.Array
  pair_of: tuple[int, ...] = flax.struct.field(pytree_node=False, default=())
  pair_end: tuple[bool, ...] = flax.struct.field(pytree_node=False, default=())  # the last layer of its pair

  @property
  def max_len(self):
    return self.pos.shape[1]

  def _full(self, layer):
    p = self.pair_of[layer]
    k = self.k_dir[p] * self.k_mag[layer][..., None]
    v = self.v_dir[p] * self.v_mag[layer][..., None]
    slot = self.own_slot[p]
    return scatter_own(k, slot, self.own_len, self.own_k[layer]), scatter_own(v, slot, self.own_len, self.own_v[layer])

  def prefill(self, *a, **k):
    raise ValueError("MiniCache merging happens after prefill; prefill into a FullCache, then merge")

  def append(self, layer, k_btkh, v_btkh, positions_bt, **_):
    own_k, own_v = list(self.own_k), list(self.own_v)
    own_k[layer] = _write_rows(own_k[layer], k_btkh, self.own_len)
    own_v[layer] = _write_rows(own_v[layer], v_btkh, self.own_len)
    last = layer == len(self.own_k) - 1
    out = self.replace(own_k=tuple(own_k), own_v=tuple(own_v))
    return append_bookkeeping(out, self.pair_of[layer], self.pair_end[layer], last, positions_bt)

  def attend(self, layer, q_btnh, q_pos_bt, *, window=None, **_):
    k, v = self._full(layer)
    pos, length = self.pos, self.length
    if layer != len(self.own_k) - 1:
      # The shared counters advance at the last layer: earlier layers place this step's tokens explicitly.
      T = q_btnh.shape[1]
      new = lambda o: jax.vmap(lambda x, s: jax.lax.dynamic_slice_in_dim(x, s, T, 0))(o, self.own_len)
      k = _write_rows(k, new(self.own_k[layer]), length)
      v = _write_rows(v, new(self.own_v[layer]), length)
      pos = _write_rows(pos, q_pos_bt.astype(jnp.int32), length)
    return masked_attention(
      q_btnh, k.astype(q_btnh.dtype), v.astype(q_btnh.dtype), position_mask(q_pos_bt, pos, window)
    )

  def repeat(self, n):
    return jax.tree.map(lambda x: jnp.repeat(x, n, axis=0), self)

  def nbytes(self):
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self))


def minicache_merge(
  cache: FullCache,
  *,
  t: float = 0.6,
  keep_ratio: float = 0.05,
  n_sink: int = 4,
  n_recent: int = 128,
  capacity: int,
  pairs: tuple[tuple[int, ...], ...] | None = None,
) -> MiniMergedCache:
  """Merge a prefilled ``FullCache`` pairwise across layers (module docstring). ``capacity`` (static) is the
  per-layer room for unmerged prompt tokens plus decoded tokens. ``pairs``: the layer pairs (a layer may stand
  alone), each layer in exactly one; default adjacent layers (2i, 2i+1)."""
  L = len(cache.layers)
  pairs = (
    tuple((2 * p, 2 * p + 1) if 2 * p + 1 < L else (2 * p,) for p in range((L + 1) // 2)) if pairs is None else pairs
  )
  flat = sorted(i for pr in pairs for i in pr)
  if flat != list(range(L)) or not all(1 <= len(pr) <= 2 for pr in pairs):
    raise ValueError(f"pairs must hold every one of the {L} layers exactly once, in groups of 1 or 2; got {pairs}")
  e0 = cache.layers[0]
  B, S = e0.pos.shape
  length = e0.length
  slots = jnp.arange(S)
  valid = slots[None] < length[:, None]
  protected = (slots[None] < n_sink) | (slots[None] >= length[:, None] - n_recent)
  out = {n: [] for n in ("k_dir", "v_dir", "own_slot")}
  k_mag, v_mag, own_k, own_v = [None] * L, [None] * L, [None] * L, [None] * L
  merged_tokens = jnp.zeros((), jnp.float32)
  for pr in pairs:
    a, b = min(pr), max(pr)
    ka, kb = cache.layers[a].k.astype(jnp.float32), cache.layers[b].k.astype(jnp.float32)
    va, vb = cache.layers[a].v.astype(jnp.float32), cache.layers[b].v.astype(jnp.float32)
    norm = lambda x: x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)
    cos = ((norm(ka) * norm(kb)).sum(-1) + (norm(va) * norm(vb)).sum(-1)).mean(-1) / 2  # [B, S]
    n_keep = jnp.ceil(keep_ratio * valid.sum(1)).astype(jnp.int32)
    key = jnp.where(valid, jnp.where(protected, -jnp.inf, cos), jnp.inf)
    order = jnp.argsort(key, axis=1, stable=True)
    rank = jnp.argsort(order, axis=1)
    unmerged = valid & ((rank < n_keep[:, None]) | protected)
    if a == b:  # a layer alone: stored whole as direction x magnitude (exact), nothing in the capacity-bound buffer
      unmerged = jnp.zeros_like(valid)
    count = jnp.minimum(unmerged.sum(1), capacity).astype(jnp.int32)
    key2 = jnp.where(unmerged, jnp.where(protected, -jnp.inf, cos), jnp.inf)
    order2 = jnp.argsort(key2, axis=1, stable=True)[:, :capacity]
    keep = jnp.arange(capacity)[None] < count[:, None]
    kept = jnp.zeros((B, S), bool).at[jnp.arange(B)[:, None], jnp.where(keep, order2, S)].set(True, mode="drop")
    merged = valid & ~kept
    merged_tokens = merged_tokens + (merged.sum() if a != b else 0)
    out["k_dir"].append(jnp.where(merged[..., None, None], slerp(norm(ka), norm(kb), t), 0.0))
    out["v_dir"].append(jnp.where(merged[..., None, None], slerp(norm(va), norm(vb), t), 0.0))
    out["own_slot"].append(jnp.where(keep, order2, -1).astype(jnp.int32))

    def take(x, keep=keep, order2=order2):
      return jnp.where(keep[..., None, None], jnp.take_along_axis(x, order2[..., None, None], 1), 0.0)

    for layer, kk, vv in ((a, ka, va), (b, kb, vb)):
      k_mag[layer] = jnp.linalg.norm(kk, axis=-1)
      v_mag[layer] = jnp.linalg.norm(vv, axis=-1)
      own_k[layer], own_v[layer] = take(kk), take(vv)
  counts = jnp.stack([(s >= 0).sum(1) for s in out["own_slot"]])
  return MiniMergedCache(
    k_dir=tuple(out["k_dir"]),
    v_dir=tuple(out["v_dir"]),
    k_mag=tuple(k_mag),
    v_mag=tuple(v_mag),
    own_k=tuple(own_k),
    own_v=tuple(own_v),
    own_slot=tuple(out["own_slot"]),
    own_len=counts.max(0).astype(jnp.int32),
    pos=e0.pos,
    length=length,
    merged_share=merged_tokens / (valid.sum() * len(pairs)),
    pair_of=tuple(next(p for p, pr in enumerate(pairs) if i in pr) for i in range(L)),
    pair_end=tuple(i == max(next(pr for pr in pairs if i in pr)) for i in range(L)),
  )


@dataclasses.dataclass(frozen=True)
class MiniCacheMerge:
  """Cache factory: a ``FullCache`` prefill, then ``minicache_merge`` (keep ``keep_ratio`` least similar tokens,
  ``n_sink`` sinks and ``n_recent`` recent ones unmerged; room for ``keep_ratio x 2`` of the prompt plus the
  tokens to come).

  Example:
    >>> from jaxeff.generation import Sampler
    >>> # Sampler(config, params, cache=MiniCacheMerge.for_model(config))  # pairs of one layer type
    >>> MiniCacheMerge().keep_ratio
    0.05
  """

  t: float = 0.6
  keep_ratio: float = 0.05
  n_sink: int = 4
  n_recent: int = 64
  pairs: tuple[tuple[int, ...], ...] | None = None

  @classmethod
  def for_model(cls, config, **kw) -> MiniCacheMerge:
    """The factory with pairs of consecutive layers of one attention type (``layer_groups(config, 2)``): on Gemma 3
    a local layer is never merged with a global one (their keys cover different spans with different RoPE bases).
    """
    return cls(pairs=layer_groups(config, 2) if config.mixed_layer_types else None, **kw)

  def init(self, config, batch, max_len, dtype=jnp.float32):
    if self.pairs is None and config.mixed_layer_types:
      raise ValueError(
        "MiniCacheMerge on a model with local and global layers would pair them by index: use "
        "MiniCacheMerge.for_model(config) (pairs of one layer type) or give pairs=..."
      )
    return FullCache.init(config, batch, max_len, dtype)

  def after_prefill(self, cache, *, max_new_tokens):
    S = cache.max_len
    cap = min(S, int(2 * self.keep_ratio * (S - max_new_tokens)) + self.n_sink + self.n_recent + max_new_tokens)
    return minicache_merge(
      cache,
      t=self.t,
      keep_ratio=self.keep_ratio,
      n_sink=self.n_sink,
      n_recent=self.n_recent,
      capacity=cap,
      pairs=self.pairs,
    )
