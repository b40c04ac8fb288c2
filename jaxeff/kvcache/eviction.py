"""KV eviction "presses" (one interface, many scoring rules) and the compacted cache they produce.

A press scores every prompt key of a layer right after that layer's prefill (kvpress's prefill hook), keeps
the top ``budget`` per kv head and writes only those into the cache, so memory is freed, not masked. The
original positions are kept per slot (RoPE untouched); decoding continues at the prompt length.

Scorers (``score [B, K, T]`` per kv head; ``jaxeff.kvcache.judgeq`` adds Judge Q's):

* ``snapkv``   (Li et al. 2024, ``SnapKVCluster.update_kv``): the last ``window_size`` prompt queries attend to
  all keys (fp32 softmax), summed over the window and averaged over the query heads of a group, then a
  1-D max/avg pool of width ``kernel_size`` (stride 1, same padding) over the keys before the window.
* ``pyramidkv`` (Cai et al. 2024): SnapKV scores with the layer budget schedule of ``pyramid_budgets``.
* ``h2o``      (Zhang et al. 2023): accumulated attention of every prompt query (column sums, computed in
  query chunks); ``h2o_normalize=True`` divides by the number of queries that see each key (kvpress's
  ``ObservedAttentionPress``).
* ``streaming`` (StreamingLLM, Xiao et al. 2024): the first ``sinks`` tokens and the most recent ones.
* ``recent``: the most recent tokens only; ``random``: a seeded random subset (floors).

Every press keeps the last ``window_size`` prompt tokens (the observation window, ``protect_window``) and the
first ``sinks`` tokens.

Example:
  >>> cfg = ModelConfig.tiny(); from jaxeff.models import init_params
  >>> from jaxeff.generation import Sampler, SamplingParams
  >>> s = Sampler(cfg, init_params(cfg, jax.random.key(0)), cache=Press("snapkv", budget=0.5))
  >>> s.generate([list(range(40))], SamplingParams(max_new_tokens=3), jax.random.key(0)).tokens.shape
  (1, 1, 3)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxeff.attention.dense import _NEG, cap_scores, position_mask
from jaxeff.config import ModelConfig
from jaxeff.kvcache.base import _write_rows

SCORERS = ("snapkv", "pyramidkv", "h2o", "streaming", "recent", "random", "judgeq")


# ------------------------------------------------------------------------------------------------ scores
def query_key_probs(
  q_bwnh: Float[Array, "B W N H"],
  q_pos_bw: Array,
  k_bskh: Float[Array, "B S K H"],
  k_pos_bs: Array,
  *,
  window: int | None = None,
  softcap: float | None = None,
) -> Float[Array, "B K G W S"]:
  """softmax(q k^T / sqrt(H)) in float32 under the position mask (``window``: a sliding-window layer's; ``softcap``:
  the model's attention-logit cap), per kv head k and group member g: the probabilities the model attends with."""
  B, W, N, H = q_bwnh.shape
  K = k_bskh.shape[2]
  q = q_bwnh.reshape(B, W, K, N // K, H).astype(jnp.float32)
  s = cap_scores(jnp.einsum("bwkgh,bskh->bkgws", q, k_bskh.astype(jnp.float32)) * H**-0.5, softcap)
  s = jnp.where(position_mask(q_pos_bw, k_pos_bs, window)[:, None, None], s, _NEG)
  return jax.nn.softmax(s, axis=-1)


def pool_keys(x_bks: Array, kernel_size: int, pooling: str) -> Array:
  """1-D pooling over the key axis, stride 1, same padding (zeros for avg as ``avg_pool1d``, -inf for max)."""
  if kernel_size <= 1:
    return x_bks
  pad = kernel_size // 2
  if pooling == "max":
    return jax.lax.reduce_window(
      x_bks, -jnp.inf, jax.lax.max, (1, 1, kernel_size), (1, 1, 1), ((0, 0), (0, 0), (pad, pad))
    )
  if pooling == "avg":
    s = jax.lax.reduce_window(x_bks, 0.0, jax.lax.add, (1, 1, kernel_size), (1, 1, 1), ((0, 0), (0, 0), (pad, pad)))
    return s / kernel_size
  raise ValueError(f"pooling must be 'max' or 'avg', got {pooling!r}")


def _last_queries(q_btnh, pos_bt, lengths_b, w):
  """The last ``w`` valid queries of each right-padded row: q [B, w, N, H] and positions (-1 where missing)."""
  idx = lengths_b[:, None] - w + jnp.arange(w)[None]  # [B, w]
  ok = idx >= 0
  idx = jnp.maximum(idx, 0)
  q = jnp.take_along_axis(q_btnh, idx[:, :, None, None], axis=1)
  pos = jnp.where(ok, jnp.take_along_axis(pos_bt, idx, axis=1), -1)
  return q, pos


def snapkv_scores(q_btnh, k_btkh, pos_bt, lengths_b, *, window_size=8, kernel_size=7, pooling="max"):
  r"""SnapKV: score_j = pool_k( mean_{g} sum_{i in last w queries} softmax(q_i K^T / sqrt(H))_j ) over the keys
  before the window (window keys score 0 before pooling; the press protects them). [B, K, T]."""
  q, qpos = _last_queries(q_btnh, pos_bt, lengths_b, window_size)
  p = query_key_probs(q, qpos, k_btkh, pos_bt)  # [B, K, G, w, T]
  p = p * (qpos >= 0)[:, None, None, :, None]
  s = p.sum(3).mean(2)  # [B, K, T]
  T = k_btkh.shape[1]
  before = (jnp.arange(T)[None] < (lengths_b[:, None] - window_size)) & (pos_bt >= 0)
  fill = -jnp.inf if pooling == "max" else 0.0
  s = pool_keys(jnp.where(before[:, None], s, fill), kernel_size, pooling)
  return jnp.where(before[:, None], s, 0.0)


def h2o_scores(q_btnh, k_btkh, pos_bt, *, normalize=False, chunk=512):
  r"""H2O: score_j = mean_g sum_i softmax(q_i K^T / sqrt(H))_j over every prompt query i (column sums, computed
  ``chunk`` queries at a time in a ``lax.scan``, so neither the [T, T] matrix nor more than one chunk's
  probabilities are ever live); ``normalize`` divides by the number of queries that see key j. [B, K, T]."""
  B, T = pos_bt.shape
  K = k_btkh.shape[2]
  c = min(chunk, T)
  n = -(-T // c)
  pad = n * c - T  # padded queries get position -1: they see no key and add nothing
  q = jnp.pad(q_btnh, ((0, 0), (0, pad), (0, 0), (0, 0)))
  qpos = jnp.pad(pos_bt, ((0, 0), (0, pad)), constant_values=-1)

  def body(carry, a):
    total, seen = carry
    qc = jax.lax.dynamic_slice_in_dim(q, a * c, c, axis=1)
    qp = jax.lax.dynamic_slice_in_dim(qpos, a * c, c, axis=1)
    p = query_key_probs(qc, qp, k_btkh, pos_bt) * (qp >= 0)[:, None, None, :, None]
    return (total + p.sum(3).mean(2), seen + position_mask(qp, pos_bt).sum(1) * 1.0), None

  init = (jnp.zeros((B, K, T), jnp.float32), jnp.zeros((B, T), jnp.float32))
  (total, seen), _ = jax.lax.scan(body, init, jnp.arange(n))
  return total / jnp.maximum(seen, 1.0)[:, None] if normalize else total


# ------------------------------------------------------------------------------------------------ budgets
def pyramid_budgets(capacity: int, window: int, n_layers: int, length: int, beta: float = 20.0) -> list[int]:
  r"""PyramidKV's per-layer budgets (tokens, window included) for an average budget ``capacity``, in the official
  integer arithmetic (``pyramidkv_utils.py``): min = (cap - w) // beta, max = 2(cap - w) - min; if max >= T - w:
  max = T - w, min = 2(cap - w) - max; step = (max - min) // (L - 1); layer l keeps w + max - l step.

  Example:
    >>> pyramid_budgets(64, 8, 4, 1000)
    [118, 82, 46, 10]
  """
  c = capacity - window
  if c <= 0 or n_layers == 1:
    return [capacity] * n_layers
  lo = int(c // beta)
  hi = 2 * c - lo
  if hi >= length - window:
    hi = length - window
    lo = 2 * c - hi
  step = (hi - lo) // (n_layers - 1)
  return [window + hi - layer * step for layer in range(n_layers)]


def _keep_count(budget: float | int, lengths_b: Array) -> Array:
  """Tokens kept per row: ceil(ratio * length) for a ratio in (0, 1], min(tokens, length) for an int."""
  if isinstance(budget, float):
    k = jnp.ceil(budget * lengths_b).astype(jnp.int32)
  else:
    k = jnp.full_like(lengths_b, budget)
  return jnp.clip(k, jnp.minimum(lengths_b, 1), lengths_b)


# ------------------------------------------------------------------------------------------------ cache
@flax.struct.dataclass
class EvictedLayer:
  """One layer's kept entries: k/v [B, S, K, H], per-head slot positions [B, S, K] (-1 = empty), next slot [B]."""

  k: Float[Array, "B S K H"]
  v: Float[Array, "B S K H"]
  pos: Int[Array, "B S K"]
  length: Int[Array, " B"]

  def write(self, k_btkh, v_btkh, positions_bt) -> EvictedLayer:
    K = self.k.shape[2]
    pos_btk = jnp.broadcast_to(positions_bt.astype(jnp.int32)[:, :, None], positions_bt.shape + (K,))
    advance = jnp.sum(positions_bt >= 0, axis=1).astype(jnp.int32)
    return EvictedLayer(
      k=_write_rows(self.k, k_btkh, self.length),
      v=_write_rows(self.v, v_btkh, self.length),
      pos=_write_rows(self.pos, pos_btk, self.length),
      length=self.length + advance,
    )


def select_keep(scores_bkt: Array, valid_bt: Array, keep_b: Array, capacity: int) -> tuple[Array, Array]:
  """Indices [B, K, capacity] of the ``keep_b`` best-scoring valid keys per (row, kv head), in index order,
  and a slot validity mask (slots past ``keep_b`` are empty)."""
  s = jnp.where(valid_bt[:, None], scores_bkt.astype(jnp.float32), -jnp.inf)
  _, top = jax.lax.top_k(s, capacity)  # [B, K, cap], best first (ties: lower index)
  keep = jnp.arange(capacity)[None, None] < keep_b[:, None, None]
  idx = jnp.where(keep, top, s.shape[-1])  # dropped slots sort last
  idx = jnp.sort(idx, axis=-1)
  ok = idx < s.shape[-1]
  return jnp.where(ok, idx, 0), ok


@flax.struct.dataclass
class EvictedCache:
  """KV cache compacted by a ``Press`` at prefill (one ``EvictedLayer`` per layer, ``None`` before prefill)."""

  layers: tuple[Any, ...]
  inner: Any  # with ``Press(inner=...)``: the composed cache (quantized / latent) holding the kept entries
  max_len: int = flax.struct.field(pytree_node=False)
  press: Any = flax.struct.field(pytree_node=False)
  config: ModelConfig = flax.struct.field(pytree_node=False)
  dtype: Any = flax.struct.field(pytree_node=False)

  def _replace_layer(self, layer: int, new: EvictedLayer) -> EvictedCache:
    layers = list(self.layers)
    layers[layer] = new
    return self.replace(layers=tuple(layers))

  def prefill(self, layer, k_btkh, v_btkh, positions_bt, *, q=None, **kw) -> EvictedCache:
    press = self.press
    n_extra = press.n_extra_tokens
    T = k_btkh.shape[1] - n_extra  # prompt keys (soft tokens, if any, sit after them and are dropped)
    pos = positions_bt[:, :T]
    lengths = jnp.sum(pos >= 0, axis=1).astype(jnp.int32)
    cap = press.capacity(layer, T, self.config.n_layers)
    keep = press.keep_counts(layer, lengths, T, self.config.n_layers)
    window = self.config.layer_window(layer)
    if cap == T and (press.budget == 1.0 or press.budget == T):
      idx = jnp.broadcast_to(jnp.arange(T), (k_btkh.shape[0], k_btkh.shape[2], T))  # full budget: keep all
      ok = jnp.broadcast_to((pos >= 0)[:, None], idx.shape)
    else:
      scores = press.scores(layer, q, k_btkh, positions_bt, lengths, T)  # [B, K, T]
      scores = press.protect(scores, pos, lengths)
      valid = pos >= 0
      if window is not None and window < T:
        # A sliding-window layer (Gemma 3's local layers, Mistral): keys before the last prompt query's window
        # are never attended again, so the budget goes to the window: at most `window` slots, chosen inside it
        # (a budget >= the window keeps it whole: the layer loses nothing).
        valid &= pos > jnp.max(pos, axis=1, keepdims=True) - window
        cap = min(cap, window)
        keep = jnp.minimum(keep, jnp.minimum(lengths, window))
      idx, ok = select_keep(scores, valid, keep, cap)  # [B, K, cap]
    idx_bck = idx.transpose(0, 2, 1)
    gather = lambda x: jnp.take_along_axis(x[:, :T], idx_bck[..., None], axis=1)
    kept_pos = jnp.where(ok, jnp.take_along_axis(jnp.broadcast_to(pos[:, None], idx.shape[:2] + (T,)), idx, -1), -1)
    free = self.max_len - T  # decode slots (the sampler sizes max_len = prompt + new tokens)
    if press.inner is not None:
      return self._prefill_inner(layer, T, idx[:, 0], kept_pos[:, 0], k_btkh, v_btkh, free, kw)
    B, K, H = k_btkh.shape[0], k_btkh.shape[2], k_btkh.shape[3]
    zeros = jnp.zeros((B, max(free, 0), K, H), self.dtype)
    entry = EvictedLayer(
      k=jnp.concatenate([gather(k_btkh).astype(self.dtype), zeros], axis=1),
      v=jnp.concatenate([gather(v_btkh).astype(self.dtype), zeros], axis=1),
      pos=jnp.concatenate([kept_pos.transpose(0, 2, 1), jnp.full((B, max(free, 0), K), -1, jnp.int32)], axis=1),
      length=jnp.full((B,), cap, jnp.int32),
    )
    return self._replace_layer(layer, entry)

  def _prefill_inner(self, layer, T, idx_bc, pos_bc, k_btkh, v_btkh, free, kw) -> EvictedCache:
    """Composition: the kept rows (one index set shared by all heads) go to the inner cache's prefill, latents
    (CommonKV) gathered alongside; the inner cache is created at the first layer with room for the largest
    layer budget plus the decode slots."""
    inner = self.inner
    if inner is None:
      cap_all = max(self.press.capacity(i, T, self.config.n_layers) for i in range(self.config.n_layers))
      inner = self.press.inner.init(self.config, k_btkh.shape[0], cap_all + max(free, 0), self.dtype)
    take = lambda x: jnp.take_along_axis(x[:, :T], idx_bc.reshape(idx_bc.shape + (1,) * (x.ndim - 2)), axis=1)
    if kw.get("latent") is not None:
      kw = dict(kw, latent=kw["latent"].with_latent(take(kw["latent"].c)))
    inner = inner.prefill(layer, take(k_btkh), take(v_btkh), pos_bc, **kw)
    return self.replace(inner=inner)

  def append(self, layer, k_btkh, v_btkh, positions_bt, **kw) -> EvictedCache:
    if self.inner is not None:
      return self.replace(inner=self.inner.append(layer, k_btkh, v_btkh, positions_bt, **kw))
    return self._replace_layer(layer, self.layers[layer].write(k_btkh, v_btkh, positions_bt))

  @property
  def supports_softcap(self) -> bool:
    """Whether ``attend`` honours ``softcap=``: always for the kept k/v, else as the wrapped cache does."""
    return self.inner is None or getattr(self.inner, "supports_softcap", False)

  def attend(self, layer, q_btnh, q_pos_bt, *, window=None, softcap=None, **kw) -> Array:
    if self.inner is not None:
      kw = kw if softcap is None else dict(kw, softcap=softcap)
      return self.inner.attend(layer, q_btnh, q_pos_bt, window=window, **kw)
    e = self.layers[layer]
    B, T, N, H = q_btnh.shape
    K = e.k.shape[2]
    qp = q_pos_bt[:, :, None, None]  # [B, T, 1, 1]
    kp = e.pos[:, None]  # [B, 1, S, K]
    mask = (kp >= 0) & (kp <= qp)
    if window is not None:
      mask &= qp - kp < window
    q = q_btnh.reshape(B, T, K, N // K, H)
    s = cap_scores(jnp.einsum("btkgh,bskh->bkgts", q, e.k, preferred_element_type=jnp.float32) * H**-0.5, softcap)
    s = jnp.where(mask.transpose(0, 3, 1, 2)[:, :, None], s, _NEG)
    p = jax.nn.softmax(s, axis=-1).astype(e.v.dtype)
    return jnp.einsum("bkgts,bskh->btkgh", p, e.v).reshape(B, T, N, H).astype(q_btnh.dtype)

  def kept_tokens(self, layer: int) -> Array:
    """[B, K] number of prompt/decoded entries the layer holds per kv head."""
    if self.inner is not None:
      return jnp.sum(self.inner.layers[layer].pos >= 0, axis=1)[:, None] * jnp.ones((1, self.config.n_kv_heads), int)
    return jnp.sum(self.layers[layer].pos >= 0, axis=1)

  def nbytes(self) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self))


# ------------------------------------------------------------------------------------------------ press
@dataclasses.dataclass(frozen=True)
class Press:
  """An eviction press and cache factory: ``Sampler(..., cache=Press('snapkv', budget=0.1))``.

  Args:
    scorer: one of ``SCORERS`` (Judge Q: use ``jaxeff.kvcache.judgeq.JudgeQPress``).
    budget: kept prompt tokens per layer and kv head: a float ratio in (0, 1] of each row's prompt length
      (ceil), or an int token count (at most the prompt length). PyramidKV treats it as the average.
    window_size: the observation window (SnapKV/PyramidKV/Judge Q) and the protected recent tokens.
    kernel_size, pooling: SnapKV's key pooling ('max' or 'avg').
    sinks: first tokens always kept (StreamingLLM's attention sinks; 4 for ``streaming`` when 0 is given).
    protect_window: keep the last ``window_size`` prompt tokens regardless of score (default True).
    per_head: each kv head keeps its own set (kvpress's default); False averages scores over heads first.
    beta: PyramidKV's min/max ratio.
    h2o_normalize: divide H2O's column sums by the number of queries seeing each key.
    seed: the random baseline's seed.
    inner: compose with another cache factory (``Quantized(bits=4)``, ``CommonKV(spec)``, ``FullCache``): the
      kept entries are written through it (quantized / as latents). Needs ``per_head=False`` (one kept set for
      all heads, since those caches share slot positions across heads).

  Sliding-window layers (``config.layer_window(i)``: Gemma 3's local layers) spend the budget inside their window
  only, on at most ``window`` slots: keys older than the window are never attended again (per layer type).

  Raises:
    ValueError: on an unknown scorer, a budget <= 0, a ratio > 1, or (at prefill) more tokens than the prompt.
  """

  scorer: str = "snapkv"
  budget: float | int = 0.2
  window_size: int = 8
  kernel_size: int = 7
  pooling: str = "max"
  sinks: int = 0
  protect_window: bool = True
  per_head: bool = True
  beta: float = 20.0
  h2o_normalize: bool = False
  seed: int = 0
  inner: Any = None

  def __post_init__(self):
    if self.inner is not None and self.per_head:
      raise ValueError("a composed press (inner=...) keeps one set for all heads: pass per_head=False")
    if self.scorer not in SCORERS:
      raise ValueError(f"unknown press scorer {self.scorer!r}; choose from {', '.join(SCORERS)}")
    if isinstance(self.budget, bool) or not isinstance(self.budget, (int, float)):
      raise ValueError(f"budget must be a ratio in (0, 1] or a positive token count, got {self.budget!r}")
    if isinstance(self.budget, float) and not 0.0 < self.budget <= 1.0:
      raise ValueError(f"budget ratio must be in (0, 1], got {self.budget}")
    if isinstance(self.budget, int) and self.budget < 1:
      raise ValueError(f"budget must be at least 1 token, got {self.budget}")
    if self.window_size < 0 or self.sinks < 0 or self.kernel_size < 1:
      raise ValueError("window_size and sinks must be >= 0 and kernel_size >= 1")
    if self.pooling not in ("max", "avg"):
      raise ValueError(f"pooling must be 'max' or 'avg', got {self.pooling!r}")

  # -- factory protocol
  def init(self, config: ModelConfig, batch: int, max_len: int, dtype: Any = jnp.float32) -> EvictedCache:
    if batch <= 0 or max_len <= 0:
      raise ValueError(f"cache needs batch > 0 and max_len > 0, got batch={batch}, max_len={max_len}")
    return EvictedCache(
      layers=(None,) * config.n_layers, inner=None, max_len=max_len, press=self, config=config, dtype=dtype
    )

  @property
  def n_extra_tokens(self) -> int:
    """Tokens the press appends after the prompt at prefill (Judge Q's soft tokens); dropped from the cache."""
    return 0

  # -- budgets
  def _tokens(self, T: int) -> int:
    if isinstance(self.budget, float):
      return max(1, math.ceil(self.budget * T))
    if self.budget > T:
      raise ValueError(f"budget of {self.budget} tokens exceeds the prompt length {T}")
    return self.budget

  def capacity(self, layer: int, T: int, n_layers: int) -> int:
    """Static slots for the prompt in ``layer`` (the largest per-row keep count)."""
    cap = self._tokens(T)
    if self.scorer == "pyramidkv":
      cap = pyramid_budgets(cap, min(self.window_size, cap), n_layers, T, self.beta)[layer]
    return int(min(max(cap, 1), T))

  def keep_counts(self, layer: int, lengths_b: Array, T: int, n_layers: int) -> Array:
    keep = _keep_count(self.budget, lengths_b)
    if self.scorer == "pyramidkv":
      c = self.capacity(layer, T, n_layers)
      base = self._tokens(T)
      # the layer's share of the average budget, applied to each row's own budget
      keep = jnp.clip(jnp.ceil(keep * (c / base)).astype(jnp.int32), jnp.minimum(lengths_b, 1), lengths_b)
    return keep

  # -- scores
  def scores(self, layer, q_btnh, k_btkh, positions_bt, lengths_b, T) -> Array:
    pos = positions_bt[:, :T]
    k = k_btkh[:, :T]
    B, K = k.shape[0], k.shape[2]
    if q_btnh is None and self.scorer in ("snapkv", "pyramidkv", "h2o"):
      raise ValueError("this press needs the prompt queries: the model passes q= to cache.prefill")
    if self.scorer in ("snapkv", "pyramidkv"):
      s = snapkv_scores(
        q_btnh[:, :T],
        k,
        pos,
        lengths_b,
        window_size=self.window_size,
        kernel_size=self.kernel_size,
        pooling=self.pooling,
      )
    elif self.scorer == "h2o":
      s = h2o_scores(q_btnh[:, :T], k, pos, normalize=self.h2o_normalize)
    elif self.scorer in ("streaming", "recent"):
      s = jnp.broadcast_to(pos[:, None].astype(jnp.float32), (B, K, T))
    elif self.scorer == "random":
      key = jax.random.fold_in(jax.random.key(self.seed), layer)
      s = jax.random.uniform(key, (B, K, T))
    else:
      raise ValueError(f"scorer {self.scorer!r} needs its own press class (jaxeff.kvcache.judgeq.JudgeQPress)")
    if not self.per_head:
      s = jnp.broadcast_to(s.mean(1, keepdims=True), s.shape)
    return s

  def protect(self, scores_bkt, pos_bt, lengths_b) -> Array:
    """Protected tokens (sinks, the recent window) score above every other key, the most recent highest."""
    T = pos_bt.shape[1]
    idx = jnp.arange(T)[None]
    prot = jnp.zeros(pos_bt.shape, bool)
    sinks = self.sinks or (4 if self.scorer == "streaming" else 0)
    if sinks:
      prot |= idx < sinks
    if self.protect_window and self.window_size:
      prot |= idx >= lengths_b[:, None] - self.window_size
    big = 1e6 + pos_bt.astype(jnp.float32)  # above any score (attention sums <= window, positions < 1e6)
    return jnp.where(prot[:, None], big[:, None], scores_bkt)
