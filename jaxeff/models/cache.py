"""The cache seam: what the decoder, the sampler and the evaluators need from a KV cache and a cache factory.

Declared here, below every user of a cache (``generation``, ``kvcache``, ``evals``, ``stack``), so no folder
reaches up to find out what a factory can do.

* A **cache** (``KVCache``) is a pytree the decoder writes and reads layer by layer: ``prefill`` (the prompt's
  keys and values, with per-layer extras such as the prefill queries a press scores with), ``append`` (decode
  steps), ``attend`` (queries over what is kept).
* A **cache factory** (``CacheFactory``) builds empty caches: ``init(config, batch, max_len, dtype)``. It may
  also change the prefill (``extend_prompt(params, tokens, positions)``: Judge Q appends its soft tokens) and
  post-process the filled cache once (``after_prefill(cache, max_new_tokens=)``: an eviction press compresses,
  CommonKV merges layers). Both hooks are optional; ``extend_prompt`` / ``after_prefill`` below apply them with
  identity defaults.
* ``prefill_with`` is the one recipe every caller uses: init -> extend_prompt -> forward (prefill) ->
  after_prefill.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxeff.config import ModelConfig
  >>> from jaxeff.kvcache import FullCache
  >>> from jaxeff.models import init_params
  >>> cfg = ModelConfig.tiny()
  >>> logits, cache = prefill_with(FullCache, init_params(cfg, jax.random.key(0)), jnp.ones((1, 5), jnp.int32),
  ...                              jnp.arange(5)[None], config=cfg, max_len=8)
  >>> logits.shape[:2]  # every prompt position (``logits_index`` picks one per row)
  (1, 5)
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax.numpy as jnp
from jaxtyping import Array

from jaxeff.config import ModelConfig


@runtime_checkable
class KVCache(Protocol):
  """Structural type of a jaxeff KV cache (a pytree; every method returns a new cache or an array)."""

  def prefill(self, layer: int, k_btkh: Array, v_btkh: Array, positions_bt: Array, **kw) -> KVCache: ...

  def append(self, layer: int, k_btkh: Array, v_btkh: Array, positions_bt: Array, **kw) -> KVCache: ...

  def attend(self, layer: int, q_btnh: Array, q_pos_bt: Array, *, window: int | None = None, **kw) -> Array: ...


@runtime_checkable
class CacheFactory(Protocol):
  """Builds empty caches; ``extend_prompt`` and ``after_prefill`` are optional hooks (see module docstring)."""

  def init(self, config: ModelConfig, batch: int, max_len: int, dtype: Any = ...) -> KVCache: ...


def extend_prompt(factory: Any, params: Any, tokens_bt: Array, positions_bt: Array):
  """``factory.extend_prompt(params, tokens, positions)`` if it has one, else the inputs unchanged."""
  hook = getattr(factory, "extend_prompt", None)
  return (params, tokens_bt, positions_bt) if hook is None else hook(params, tokens_bt, positions_bt)


def after_prefill(factory: Any, cache: Any, *, max_new_tokens: int):
  """``factory.after_prefill(cache, max_new_tokens=)`` if it has one, else the cache unchanged."""
  hook = getattr(factory, "after_prefill", None)
  return cache if hook is None else hook(cache, max_new_tokens=max_new_tokens)


def changes_prefill(factory: Any) -> bool:
  """Whether the factory changes the prefill itself (so a recorded dense prefill cannot stand in for it)."""
  return getattr(factory, "extend_prompt", None) is not None


def chunked_prefill(
  params: Any,
  tokens_bt: Array,
  positions_bt: Array,
  cache: Any,
  *,
  config: ModelConfig,
  chunk: int,
  attention: Any = None,
  logits_index: Array | None = None,
):
  """Prefill a ``FullCache`` ``chunk`` tokens at a time: chunk ``j`` attends over the cache's slots
  ``0 .. (j+1) chunk - 1`` (``forward(..., chunk_offset=j chunk)``), so attention memory is bounded by the chunk
  and a block-sparse backend stays sparse over the cache (``BlockSparseBackend``).

  Args:
    tokens_bt, positions_bt: [B, T] prompt in jaxeff's layout (real tokens in front, padding -1 after).
    cache: an empty ``FullCache`` with at least ``T`` slots; chunk: tokens per step (> 0).
    attention: the backend (default ``Dense()``); logits_index: [B] the one position per row whose logits
      are returned (default: the last chunk's logits).

  Returns:
    (logits [B, 1, V] at ``logits_index`` or the last chunk's [B, chunk', V], the filled cache).

  Example:
    >>> import jax
    >>> from jaxeff.kvcache import FullCache
    >>> from jaxeff.models.decoder import init_params
    >>> cfg = ModelConfig.tiny(); p = init_params(cfg, jax.random.key(0))
    >>> toks = jnp.zeros((1, 10), jnp.int32); pos = jnp.arange(10)[None]
    >>> lg, c = chunked_prefill(p, toks, pos, FullCache.init(cfg, 1, 16), config=cfg, chunk=4)
    >>> int(c.length[0]), lg.shape[1]
    (10, 2)
  """
  from jaxeff.attention.dense import Dense
  from jaxeff.models.decoder import forward

  if chunk < 1:
    raise ValueError(f"chunk must be >= 1, got {chunk}")
  attention = attention if attention is not None else Dense()
  T = tokens_bt.shape[1]
  picked = None
  for a in range(0, T, chunk):
    e = min(a + chunk, T)
    logits, cache = forward(
      params,
      tokens_bt[:, a:e],
      positions_bt[:, a:e],
      cache,
      config=config,
      attention=attention,
      is_prefill=True,
      chunk_offset=a,
    )
    if logits_index is not None:  # keep the rows whose wanted position falls in this chunk
      inside = (logits_index >= a) & (logits_index < e)
      row = jnp.take_along_axis(logits, jnp.clip(logits_index - a, 0, e - a - 1)[:, None, None], axis=1)
      picked = row if picked is None else jnp.where(inside[:, None, None], row, picked)
  return (picked if logits_index is not None else logits), cache


def prefill_with(
  factory: Any,
  params: Any,
  tokens_bt: Array,
  positions_bt: Array,
  *,
  config: ModelConfig,
  max_len: int,
  attention: Any = None,
  logits_index: Array | None = None,
  max_new_tokens: int | None = None,
  dtype: Any = None,
):
  """Prefill a fresh cache of ``factory``: init -> ``extend_prompt`` -> ``forward`` (prefill) -> ``after_prefill``.

  Args:
    factory: a cache factory (``init`` + optional hooks).
    tokens_bt, positions_bt: int32 [B, T] prompt (right padding at position -1).
    max_len: cache capacity in tokens (prompt + tokens to come).
    attention: prefill attention backend (default ``Dense()``).
    logits_index: int32 [B] the one position per row whose logits are returned (default: all positions).
    max_new_tokens: what ``after_prefill`` must leave room for (default ``max_len - T``).
    dtype: cache dtype (default: the factory's).

  Returns:
    (logits [B, 1 or T, V_padded], the filled cache).
  """
  from jaxeff.attention.dense import Dense
  from jaxeff.models.decoder import forward

  B, T = tokens_bt.shape
  cache = factory.init(config, B, max_len) if dtype is None else factory.init(config, B, max_len, dtype)
  p, tk, ps = extend_prompt(factory, params, tokens_bt, positions_bt)
  logits, cache = forward(
    p,
    tk,
    ps,
    cache,
    config=config,
    attention=attention if attention is not None else Dense(),
    is_prefill=True,
    logits_index=logits_index,
  )
  cache = after_prefill(factory, cache, max_new_tokens=max_len - T if max_new_tokens is None else max_new_tokens)
  return logits, cache


__all__ = [
  "KVCache",
  "CacheFactory",
  "extend_prompt",
  "after_prefill",
  "changes_prefill",
  "prefill_with",
  "chunked_prefill",
]
