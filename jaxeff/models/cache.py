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


__all__ = ["KVCache", "CacheFactory", "extend_prompt", "after_prefill", "changes_prefill", "prefill_with"]
