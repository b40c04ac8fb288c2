"""The KV-cache protocol and the full-precision cache.

Protocol (every cache in jaxeff — full, quantized, latent, evicted — implements it, as a pytree):

* ``Cache.init(config, batch, max_len, dtype)``: an empty cache with ``max_len`` slots per row.
* ``cache.prefill(layer, k, v, positions)``: store a prompt chunk for ``layer`` (caches that compress
  or evict after prefill do it here or in a method of their own).
* ``cache.append(layer, k, v, positions)``: store newly decoded tokens for ``layer``.
* ``cache.attend(layer, q, q_positions, window=...)``: exact attention of queries over what the cache
  holds for ``layer``.

For latent (CommonKV) layers the model also passes ``latent=``, a typed ``jaxeff.models.latent.LatentKV``
record (the chunk's latents ``c = A x`` [B, T, r], ``B_k``/``B_v``, biases, k-norm, RoPE frequencies and its
``rebuild(c, positions) -> (k, v)``) to ``prefill``, ``append`` and ``attend``; caches that store k/v ignore it,
``LatentCache`` stores only the latents.

All methods return new values (no mutation under jit). Positions are stored per slot (``-1`` = empty or
padding) and attention masks by position (``jaxeff.attention.position_mask``), so a cache can be
compacted or reordered without breaking RoPE or causality. Writes go to slot ``length[b]`` onward in each
row; only tokens with position >= 0 advance ``length``, so right-padded prompts are overwritten by the first
decoded token.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxeff.attention.dense import masked_attention, position_mask
from jaxeff.config import ModelConfig
from jaxeff.models.cache import KVCache as KVCache  # the protocol lives at the seam, below every user


def _write_rows(buf_bs: Array, new_bt: Array, start_b: Array) -> Array:
  """buf[b, start[b] + t] = new[b, t] for every row b (dynamic per-row offsets)."""

  def one(buf, new, start):
    idx = (start,) + (0,) * (buf.ndim - 1)
    return jax.lax.dynamic_update_slice(buf, new.astype(buf.dtype), idx)

  return jax.vmap(one)(buf_bs, new_bt, start_b)


def _write_entries(layer: Any, positions_bt: Array, **new_bt: Array) -> Any:
  """A layer record (``pos``/``length`` plus per-slot arrays) with ``new_bt`` rows written at each row's fill and
  the positions recorded; only real tokens (position >= 0) advance ``length``."""
  rows = {k: _write_rows(getattr(layer, k), v, layer.length) for k, v in new_bt.items()}
  return layer.replace(
    pos=_write_rows(layer.pos, positions_bt.astype(jnp.int32), layer.length),
    length=layer.length + jnp.sum(positions_bt >= 0, axis=1).astype(jnp.int32),
    **rows,
  )


def _cache_tiles(pos_bs: Array, tile: int):
  """Read a cache ``tile`` slots at a time, up to its last filled slot: ``(read, n_tiles)`` with ``read(j) ->
  (slice, pos)``, ``slice(x)`` tile ``j`` of any ``[B, S, ...]`` array and ``pos [B, bt]`` its positions. The last
  tile is shifted back to end at slot ``S``; its slots already read are masked (position -1). ``n_tiles`` is
  traced (a loop bound for ``tiled_cache_attention``)."""
  S = pos_bs.shape[1]
  bt = min(tile, S)

  def read(j):
    start = jnp.minimum(j * bt, S - bt)
    sl = lambda x: jax.lax.dynamic_slice_in_dim(x, start, bt, axis=1)
    return sl, jnp.where(start + jnp.arange(bt) >= j * bt, sl(pos_bs), -1)

  filled = jnp.max(jnp.where(pos_bs >= 0, jnp.arange(S) + 1, 0))
  return read, (filled + bt - 1) // bt


class _SlotLayers:
  """``length`` and ``max_len`` of a cache whose ``layers`` each hold slot positions ``pos [B, S]`` and a fill
  ``length [B]`` (the latent and MLA caches)."""

  @property
  def length(self):
    return self.layers[0].length

  @property
  def max_len(self) -> int:
    return self.layers[0].pos.shape[1]


def _with_layer(cache: Any, i: int, new: Any) -> Any:
  """``cache`` with ``cache.layers[i]`` replaced by ``new``."""
  layers = list(cache.layers)
  layers[i] = new
  return cache.replace(layers=tuple(layers))


@flax.struct.dataclass
class LayerKV:
  """One layer's full-precision entries: k/v [B, S, K, H], slot positions [B, S], next slot [B]."""

  k: Float[Array, "B S K H"]
  v: Float[Array, "B S K H"]
  pos: Int[Array, "B S"]
  length: Int[Array, " B"]

  @property
  def max_len(self) -> int:
    return self.k.shape[1]

  def write(self, k_btkh, v_btkh, positions_bt) -> LayerKV:
    k = _write_rows(self.k, k_btkh, self.length)
    v = _write_rows(self.v, v_btkh, self.length)
    pos = _write_rows(self.pos, positions_bt.astype(jnp.int32), self.length)
    # Padding (position -1) is written but does not advance the row: the next write overwrites it.
    advance = jnp.sum(positions_bt >= 0, axis=1).astype(jnp.int32)
    return LayerKV(k=k, v=v, pos=pos, length=self.length + advance)


@flax.struct.dataclass
class RingLayerKV:
  """A sliding-window layer's entries in a ring of ``S >= window`` slots: k/v [B, S, K, H], slot positions
  [B, S], tokens written so far [B] (token number n lives in slot n mod S). Attention masks by position, so the
  slot order does not matter; an append of T tokens keeps the window of every one of its queries as long as
  ``S >= window + T - 1`` (``FullCache.append`` checks it, statically). A prefill longer than the ring keeps its
  last S tokens (the prefill itself attends over its own k/v, not the cache)."""

  k: Float[Array, "B S K H"]
  v: Float[Array, "B S K H"]
  pos: Int[Array, "B S"]
  length: Int[Array, " B"]
  window: int = flax.struct.field(pytree_node=False, default=0)

  @property
  def max_len(self) -> int:
    return self.k.shape[1]

  def write(self, k_btkh, v_btkh, positions_bt) -> RingLayerKV:
    S = self.k.shape[1]
    valid = positions_bt >= 0
    n = jnp.sum(valid, axis=1).astype(jnp.int32)
    rank = jnp.cumsum(valid, axis=1) - 1  # index of each token among the row's valid ones
    keep = valid & (rank >= n[:, None] - S)  # of a long prompt only the last S tokens can be attended again
    idx = jnp.where(keep, (self.length[:, None] + rank) % S, S)  # S: dropped (padding, overwritten tokens)
    put = jax.vmap(lambda buf, i, new: buf.at[i].set(new.astype(buf.dtype), mode="drop"))
    return RingLayerKV(
      k=put(self.k, idx, k_btkh),
      v=put(self.v, idx, v_btkh),
      pos=put(self.pos, idx, positions_bt.astype(jnp.int32)),
      length=self.length + n,
      window=self.window,
    )


@flax.struct.dataclass
class FullCache:
  """Full-precision KV cache: one ``LayerKV`` per layer (per-layer shapes may differ).

  Example:
    >>> cfg = ModelConfig.tiny()
    >>> cache = FullCache.init(cfg, batch=2, max_len=16)
    >>> cache.layers[0].k.shape
    (2, 16, 2, 16)
  """

  layers: tuple[LayerKV | RingLayerKV, ...]

  @classmethod
  def init(
    cls,
    config: ModelConfig,
    batch: int,
    max_len: int,
    dtype: Any = jnp.float32,
    *,
    window_slack: int | None = None,
  ) -> FullCache:
    """An empty cache of ``max_len`` slots per layer; with ``window_slack`` (``Windowed``), each
    sliding-window layer holds only ``window + window_slack`` slots (a ring, ``RingLayerKV``) when that is
    fewer: Gemma 3's local layers then cost ``window`` tokens of memory whatever the context (not with chunked
    prefill, which reads earlier chunks' k/v back by slot)."""
    if batch <= 0 or max_len <= 0:
      raise ValueError(f"cache needs batch > 0 and max_len > 0, got batch={batch}, max_len={max_len}")
    if window_slack is not None and window_slack < 0:
      raise ValueError(f"window_slack must be >= 0, got {window_slack}")

    def layer(i):
      w = config.layer_window(i)
      ring = window_slack is not None and w is not None and w + window_slack < max_len
      S = w + window_slack if ring else max_len
      shape = (batch, S, config.n_kv_heads, config.head_dim)
      arrays = dict(
        k=jnp.zeros(shape, dtype),
        v=jnp.zeros(shape, dtype),
        pos=jnp.full((batch, S), -1, jnp.int32),
        length=jnp.zeros((batch,), jnp.int32),
      )
      return RingLayerKV(**arrays, window=w) if ring else LayerKV(**arrays)

    return cls(layers=tuple(layer(i) for i in range(config.n_layers)))

  @property
  def batch(self) -> int:
    return self.layers[0].k.shape[0]

  @property
  def max_len(self) -> int:
    """Tokens the cache can hold (its largest layer: sliding-window rings are smaller)."""
    return max(e.max_len for e in self.layers)

  @property
  def bounded(self) -> bool:
    """Whether some layer is a window-bounded ring (slots no longer follow token order)."""
    return any(isinstance(e, RingLayerKV) for e in self.layers)

  @property
  def length(self) -> Array:
    """[B] number of stored (valid) tokens per row, from layer 0."""
    return self.layers[0].length

  def _replace_layer(self, layer: int, new: LayerKV) -> FullCache:
    layers = list(self.layers)
    layers[layer] = new
    return self.replace(layers=tuple(layers))

  def prefill(self, layer, k_btkh, v_btkh, positions_bt, **_) -> FullCache:
    return self._replace_layer(layer, self.layers[layer].write(k_btkh, v_btkh, positions_bt))

  def append(self, layer, k_btkh, v_btkh, positions_bt, **_) -> FullCache:
    e, T = self.layers[layer], k_btkh.shape[1]
    if isinstance(e, RingLayerKV) and e.max_len < e.window + T - 1:  # each query of the chunk needs its window
      raise ValueError(
        f"appending {T} tokens at once to a sliding-window layer (window {e.window}) needs a ring of at least "
        f"{e.window + T - 1} slots, the cache has {e.max_len}: give it more slack (Windowed(slack={T - 1}))"
      )
    return self._replace_layer(layer, self.layers[layer].write(k_btkh, v_btkh, positions_bt))

  supports_softcap = True  # attend honours ``softcap=`` (Gemma's attention-logit cap)

  def attend(self, layer, q_btnh, q_pos_bt, *, window=None, softcap=None, **_) -> Array:
    entry = self.layers[layer]
    mask = position_mask(q_pos_bt, entry.pos, window)
    return masked_attention(q_btnh, entry.k, entry.v, mask, softcap=softcap)

  def repeat(self, n: int) -> FullCache:
    """Repeat every row ``n`` times (row b -> rows b*n ... b*n+n-1): n samples share one prefill."""
    return jax.tree.map(lambda x: jnp.repeat(x, n, axis=0), self)

  def nbytes(self) -> int:
    """Bytes held by the cache arrays."""
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self))


@dataclasses.dataclass(frozen=True)
class Windowed:
  """Cache factory (the sampler's default): a ``FullCache`` whose sliding-window layers keep a ring of
  ``window + slack`` slots instead of the whole context (``RingLayerKV``), so on Gemma 3 the local layers' memory
  stays at their window (512 tokens for Gemma 3 270M) at any context length; global layers and models without
  windows get the plain full cache. ``slack``: the longest chunk appended at once after prefill is ``slack + 1``
  tokens (decoding appends 1; an agnostic-protocol question is appended as one chunk). Exactly the full cache's
  attention (tested against it).

  Example:
    >>> cfg = ModelConfig.tiny(model_type="mistral", sliding_window=8)
    >>> Windowed(slack=4).init(cfg, 1, 100).layers[0].k.shape
    (1, 12, 2, 16)
  """

  slack: int = 128

  def init(self, config: ModelConfig, batch: int, max_len: int, dtype: Any = jnp.float32) -> FullCache:
    return FullCache.init(config, batch, max_len, dtype, window_slack=self.slack)
