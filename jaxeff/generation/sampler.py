"""The one batched sampler: n samples per prompt sharing one prefill, a fixed-size cache, ``lax.while_loop``.

Every method that samples (SeerSC, self-consistency, code translation, GradS) goes through ``Sampler``.

Flow for B prompts of different lengths and n samples each:

1. Right-pad prompts to P (a multiple of ``pad_multiple``, to bound recompiles); padding gets position -1.
2. Prefill the B prompts once into a cache of P + max_new_tokens slots; gather the logits of each prompt's
   last token.
3. Gather every prompt's cache row once per sample (B -> R rows; prompts may ask for different numbers of
   samples, e.g. SeerSC's per-query budgets); sample token 0 of each row from the prefill logits.
4. ``lax.while_loop``: feed the previous token at its position, sample the next, record the raw log-softmax
   and the sampling-distribution log-probability, stop a row at a stop token; leave the loop when every row
   stopped or max_new_tokens tokens exist (max_new_tokens - 1 decode calls).

Randomness is per row: sample s of a prompt with id p draws step t from
``fold_in(fold_in(fold_in(key, p), s), t)``, so a sample's tokens do not depend on which other prompts or
samples share the batch. Asking for samples ``first_sample .. first_sample + n - 1`` of prompt p in a later
call continues the same stream: sequential methods (ESC, ASC) see exactly the samples a parallel SC call
draws, up to float rounding of batched matmuls.

Prefill and decode are two compiled executables, timed separately (compile time reported apart), so the
``Accounting`` record holds honest wall times.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxeff.attention.dense import Dense
from jaxeff.config import ModelConfig
from jaxeff.kvcache.base import Windowed
from jaxeff.models.cache import prefill_with
from jaxeff.models.decoder import forward

DEFAULT_CACHE = Windowed()  # full cache; sliding-window layers in rings of window + 128 slots


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How to sample.

  Attributes:
    max_new_tokens: tokens generated per sample (the stop token included), >= 1.
    temperature: 0 = greedy (argmax); otherwise logits are divided by it.
    top_k: keep the k most likely tokens (0 = off).
    top_p: nucleus: keep the smallest set of most likely tokens whose mass reaches top_p (1.0 = off).
    n_samples: samples per prompt, sharing the prompt's prefill.
    stop_tokens: a row stops after emitting one of these.
    pad_id: written after a row stops.
  """

  max_new_tokens: int = 32
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  n_samples: int = 1
  stop_tokens: tuple[int, ...] = ()
  pad_id: int = 0

  def __post_init__(self):
    errors = []
    if self.max_new_tokens < 1:
      errors.append(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
    if not (self.temperature >= 0 and math.isfinite(self.temperature)):  # NaN fails every comparison
      errors.append(f"temperature must be a finite number >= 0, got {self.temperature}")
    if self.top_k < 0:
      errors.append(f"top_k must be >= 0, got {self.top_k}")
    if not 0.0 < self.top_p <= 1.0:  # also refuses NaN
      errors.append(f"top_p must be in (0, 1], got {self.top_p}")
    if self.n_samples < 1:
      errors.append(f"n_samples must be >= 1, got {self.n_samples}")
    if errors:
      raise ValueError("invalid SamplingParams: " + "; ".join(errors))
    object.__setattr__(self, "stop_tokens", tuple(int(t) for t in self.stop_tokens))


@dataclasses.dataclass
class Accounting:
  """Token and time accounting of one ``generate`` call.

  ``prompt_tokens`` counts each prompt once (its prefill is shared by its n samples); ``generated_tokens``
  counts every sampled token up to and including a stop token; ``decode_calls`` is the number of sequential
  model calls after prefill; times are wall seconds after compilation (``compile_s`` apart); ``cache_bytes`` is
  the size of the cache the prefill leaves (one row per prompt, after any compression at prefill: eviction,
  latents, quantization, merging), before it is copied per sample.
  """

  prompt_tokens: int
  generated_tokens: int
  prefill_s: float
  decode_s: float
  compile_s: float
  decode_calls: int
  cache_bytes: int = 0

  @property
  def total_s(self) -> float:
    return self.prefill_s + self.decode_s

  @property
  def decode_tokens_per_s(self) -> float:
    return self.generated_tokens / self.decode_s if self.decode_s > 0 else float("inf")


@dataclasses.dataclass
class GenerationResult:
  """Outputs, shaped [B, n, max_new_tokens] (B prompts, n samples each).

  tokens: sampled ids (``pad_id`` after a stop). logprobs: log p_model(token) from the raw log-softmax.
  sample_logprobs: log-probability under the sampling distribution (temperature / top-k / top-p applied;
  0 under greedy). lengths [B, n]: tokens generated (stop token included). stopped [B, n]: ended at a stop
  token.
  """

  tokens: np.ndarray
  logprobs: np.ndarray
  sample_logprobs: np.ndarray
  lengths: np.ndarray
  stopped: np.ndarray
  accounting: Accounting

  def sequences(self) -> list[list[list[int]]]:
    """Token lists per prompt and sample, cut at their lengths."""
    return [
      [self.tokens[b, s, : self.lengths[b, s]].tolist() for s in range(self.tokens.shape[1])]
      for b in range(self.tokens.shape[0])
    ]


def sample_logits(
  logits_bv: Float[Array, "B V"], key: jax.Array, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> tuple[Array, Array, Array]:
  r"""Sample one token per row; return (tokens [B], raw log-probs [B], sampling log-probs [B]).

  The sampling distribution is softmax(l / T) restricted to the top-k logits and to the nucleus
  {i : sum_{j ranked before i} p_j < top_p}; raw log-probs are log_softmax(l) of the chosen token.
  ``temperature == 0`` is greedy (argmax; sampling log-prob 0). ``key`` is one key for the batch or a key
  array of shape [B] (one per row: row b draws argmax(l_b + Gumbel(key_b)), independent of the other rows).

  Example:
    >>> tok, lp, slp = sample_logits(jnp.array([[0.0, 5.0, 1.0]]), jax.random.key(0), temperature=0.0)
    >>> int(tok[0])
    1
  """
  logits_bv = logits_bv.astype(jnp.float32)
  raw = jax.nn.log_softmax(logits_bv, axis=-1)
  if temperature == 0.0:
    tok = jnp.argmax(logits_bv, axis=-1)
    return tok, jnp.take_along_axis(raw, tok[:, None], -1)[:, 0], jnp.zeros(tok.shape, jnp.float32)
  l = logits_bv / temperature
  neg = jnp.float32(-jnp.inf)
  V = l.shape[-1]
  if 0 < top_k < V:
    kth = jax.lax.top_k(l, top_k)[0][:, -1:]
    l = jnp.where(l < kth, neg, l)
  if top_p < 1.0:
    sorted_l = jnp.sort(l, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_l, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs
    keep = before < top_p
    threshold = jnp.min(jnp.where(keep, sorted_l, jnp.inf), axis=-1, keepdims=True)
    l = jnp.where(l < threshold, neg, l)
  if _is_typed(key) and key.ndim == 1 or not _is_typed(key) and key.ndim == 2:  # one key per row
    gumbel = jax.vmap(lambda k: jax.random.gumbel(k, (V,), jnp.float32))(key)
    tok = jnp.argmax(l + gumbel, axis=-1)
  else:
    tok = jax.random.categorical(key, l, axis=-1)
  slp = jnp.take_along_axis(jax.nn.log_softmax(l, axis=-1), tok[:, None], -1)[:, 0]
  return tok, jnp.take_along_axis(raw, tok[:, None], -1)[:, 0], slp


def _is_typed(key) -> bool:
  return jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)


def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def _row_bucket(rows: int) -> int:
  """Decode rows for ``rows`` live (prompt, sample) pairs: 1, 2, 4, 8, then multiples of 8."""
  return 1 << max(rows - 1, 0).bit_length() if rows <= 8 else _round_up(rows, 8)


class Sampler:
  """Batched sampler bound to a model (config + params), an attention backend and a cache type.

  Args:
    config: the model config.
    params: the parameter pytree.
    attention: prefill attention backend (default ``Dense()``).
    cache: a cache factory (``jaxeff.models.cache.CacheFactory``: ``init(config, batch, max_len, dtype)``, default
      ``Windowed()``: the full cache, with sliding-window layers held in a ring of their window, so Gemma 3's
      local layers cost their window whatever the context) and its optional hooks ``after_prefill(cache, max_new_tokens=)`` (run once after the prompt
      is cached) and ``extend_prompt(params, tokens, positions)`` (extra prefill inputs, e.g. Judge Q's soft
      tokens). ``cache_cls=`` is the deprecated name (one release).
    pad_multiple: prompts are right-padded to a multiple of this (fewer recompiles).

  Example:
    >>> cfg = ModelConfig.tiny(); from jaxeff.models import init_params
    >>> s = Sampler(cfg, init_params(cfg, jax.random.key(0)))
    >>> r = s.generate([[1, 2, 3], [4, 5]], SamplingParams(max_new_tokens=4, n_samples=2), jax.random.key(1))
    >>> r.tokens.shape
    (2, 2, 4)
  """

  def __init__(
    self,
    config: ModelConfig,
    params: Any,
    *,
    attention: Any = None,
    cache: Any = DEFAULT_CACHE,
    pad_multiple: int = 16,
    cache_cls: Any = None,
  ):
    if cache_cls is not None:
      warnings.warn("Sampler(cache_cls=...) is renamed Sampler(cache=...)", DeprecationWarning, stacklevel=2)
      cache = cache_cls
    self.config = config
    self.params = params
    self.attention = attention if attention is not None else Dense()
    self.cache = cache
    self.pad_multiple = pad_multiple
    self._compiled: dict[Any, Any] = {}
    self.dtype = jax.tree.leaves(params)[0].dtype

  # ----------------------------------------------------------------- pure pieces (jitted)
  def _prefill(self, params, tokens_bp, positions_bp, last_b, *, max_len: int):
    logits, cache = prefill_with(
      self.cache,
      params,
      tokens_bp,
      positions_bp,
      config=self.config,
      max_len=max_len,
      attention=self.attention,
      logits_index=last_b,
      dtype=self.dtype,
    )
    return logits[:, 0, : self.config.vocab_size], cache

  def _decode(self, params, cache, last_bv, lengths_b, key, row_src, row_pid, row_sid, row_live, sp: SamplingParams):
    M = sp.max_new_tokens
    logits = last_bv[row_src]
    pos = lengths_b[row_src].astype(jnp.int32)
    R = logits.shape[0]
    stop = jnp.asarray(sp.stop_tokens or (-1,), jnp.int32)
    fold = jax.vmap(jax.random.fold_in, in_axes=(0, 0))
    key = key if _is_typed(key) else jax.random.wrap_key_data(key)  # legacy uint32 keys
    row_keys = fold(fold(jnp.broadcast_to(key, (R,)), row_pid), row_sid)
    step_keys = lambda t: jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, t)
    sample = lambda lg, k: sample_logits(lg, k, temperature=sp.temperature, top_k=sp.top_k, top_p=sp.top_p)

    tok, lp, slp = sample(logits, step_keys(0))
    tok = jnp.where(row_live, tok.astype(jnp.int32), sp.pad_id)
    out_tok = jnp.full((R, M), sp.pad_id, jnp.int32).at[:, 0].set(tok)
    out_lp = jnp.zeros((R, M), jnp.float32).at[:, 0].set(jnp.where(row_live, lp, 0.0))
    out_slp = jnp.zeros((R, M), jnp.float32).at[:, 0].set(jnp.where(row_live, slp, 0.0))
    done = ~row_live | jnp.isin(tok, stop)
    gen_len = row_live.astype(jnp.int32)
    if M == 1:  # one token per sample (e.g. SeerSC's System 1): the prefill logits suffice, no cache copies
      return out_tok, out_lp, out_slp, gen_len, done & row_live, jnp.int32(0)
    cache = jax.tree.map(lambda x: x[row_src], cache)

    def cond(state):
      step, _, _, _, done, *_ = state
      return (step < M) & ~jnp.all(done)

    def body(state):
      step, cache, tok, pos, done, out_tok, out_lp, out_slp, gen_len = state
      feed_pos = jnp.where(done, -1, pos)[:, None]
      logits, cache = forward(
        params, tok[:, None], feed_pos, cache, config=self.config, attention=self.attention, is_prefill=False
      )
      new, lp, slp = sample(logits[:, 0], step_keys(step))
      new = jnp.where(done, sp.pad_id, new.astype(jnp.int32))
      live = ~done
      out_tok = out_tok.at[:, step].set(new)
      out_lp = out_lp.at[:, step].set(jnp.where(live, lp, 0.0))
      out_slp = out_slp.at[:, step].set(jnp.where(live, slp, 0.0))
      gen_len = gen_len + live.astype(jnp.int32)
      done = done | jnp.isin(new, stop)
      return step + 1, cache, new, pos + 1, done, out_tok, out_lp, out_slp, gen_len

    state = (jnp.int32(1), cache, tok, pos, done, out_tok, out_lp, out_slp, gen_len)
    state = jax.lax.while_loop(cond, body, state)
    step, _, _, _, done, out_tok, out_lp, out_slp, gen_len = state
    return out_tok, out_lp, out_slp, gen_len, done & row_live, step - 1

  # ----------------------------------------------------------------- driver
  def _validate(self, prompts, sp: SamplingParams):
    if not prompts:
      raise ValueError("no prompts given")
    V = self.config.vocab_size
    limit = self.config.max_position_embeddings
    for i, p in enumerate(prompts):
      if len(p) == 0:
        raise ValueError(f"prompt {i} is empty")
      if len(p) + sp.max_new_tokens > limit:
        raise ValueError(
          f"prompt {i} has {len(p)} tokens; with max_new_tokens={sp.max_new_tokens} it exceeds the model's "
          f"maximum of {limit} positions"
        )
      bad = [t for t in p if not 0 <= int(t) < V]
      if bad:
        raise ValueError(f"prompt {i} has token ids outside [0, {V}): {bad[:5]}")

  def generate(
    self,
    prompts: Sequence[Sequence[int]],
    sampling: SamplingParams,
    key: jax.Array,
    *,
    n: Sequence[int] | None = None,
    prompt_ids: Sequence[int] | None = None,
    first_sample: Sequence[int] | None = None,
  ) -> GenerationResult:
    """Sample continuations of each prompt (lists of token ids). Deterministic in ``key``.

    Args:
      prompts: B token lists.
      sampling: how to sample; ``sampling.n_samples`` samples per prompt unless ``n`` is given.
      key: the PRNG key.
      n: samples per prompt (B ints >= 0, not all 0): prompts may ask for different numbers; the outputs are
        shaped [B, max(n), M] and the absent samples have length 0.
      prompt_ids: the id folded into each prompt's sample keys (default 0..B-1). Give stable ids (e.g. query
        ids) when the same prompt is sampled again in another batch.
      first_sample: index of each prompt's first sample in its stream (default 0): sample s of this call is
        sample first_sample + s of the prompt, whatever else is in the batch.
    """
    self._validate(prompts, sampling)
    B = len(prompts)
    counts = np.full(B, sampling.n_samples, np.int64) if n is None else np.asarray(n, np.int64).reshape(-1)
    ids = np.arange(B) if prompt_ids is None else np.asarray(prompt_ids, np.int64).reshape(-1)
    first = np.zeros(B, np.int64) if first_sample is None else np.asarray(first_sample, np.int64).reshape(-1)
    errors = [
      f"{name} has {len(a)} entries for {B} prompts"
      for name, a in (("n", counts), ("prompt_ids", ids), ("first_sample", first))
      if len(a) != B
    ]
    if not errors:
      if np.any(counts < 0) or counts.sum() == 0:
        errors.append(f"n must be >= 0 per prompt with a positive total, got {counts.tolist()}")
      if np.any(ids < 0) or np.any(ids >= 2**31) or np.any(first < 0) or np.any(first + counts >= 2**31):
        errors.append("prompt_ids and first_sample + n must lie in [0, 2**31)")
    if errors:
      raise ValueError("invalid generate arguments: " + "; ".join(errors))
    active = np.flatnonzero(counts > 0)  # prompts with no samples are not prefilled
    lens = np.array([len(prompts[b]) for b in active], np.int32)
    P = _round_up(int(lens.max()), self.pad_multiple)
    P = min(P, self.config.max_position_embeddings)
    tokens = np.zeros((len(active), P), np.int32)
    positions = np.full((len(active), P), -1, np.int32)
    for i, b in enumerate(active):
      p = prompts[b]
      tokens[i, : len(p)] = p
      positions[i, : len(p)] = np.arange(len(p))
    # rows: (prompt, sample) pairs, padded with dead rows to a power of two up to 8, then to a multiple of 8
    # (few shapes, so few recompiles; a batch-1 decode runs one row, not eight: 2.7x faster per step here)
    row_b = np.repeat(np.arange(len(active)), counts[active])
    row_s = np.concatenate([np.arange(counts[b]) for b in active])
    total = len(row_b)
    R = _row_bucket(total)
    row_src = np.zeros(R, np.int32)
    row_src[:total] = row_b
    row_pid = np.zeros(R, np.int32)
    row_pid[:total] = ids[active][row_b]
    row_sid = np.zeros(R, np.int32)
    row_sid[:total] = first[active][row_b] + row_s
    row_live = np.arange(R) < total

    ck = (len(active), P, R, sampling)
    compile_s = 0.0
    pre, dec = self._compiled.get(ck, (None, None))
    if pre is None:
      t0 = time.perf_counter()
      prefill = functools.partial(self._prefill, max_len=P + sampling.max_new_tokens)
      pre = jax.jit(prefill).lower(self.params, tokens, positions, lens - 1).compile()
      compile_s += time.perf_counter() - t0

    t0 = time.perf_counter()
    last, cache = jax.block_until_ready(pre(self.params, tokens, positions, lens - 1))
    prefill_s = time.perf_counter() - t0
    args = (self.params, cache, last, lens, key, row_src, row_pid, row_sid, row_live)
    if dec is None:
      # Lowered against the real prefill outputs so that their (possibly sharded) layouts are what it expects.
      t0 = time.perf_counter()
      dec = jax.jit(self._decode, static_argnums=9).lower(*args, sampling).compile()
      compile_s += time.perf_counter() - t0
      self._compiled[ck] = (pre, dec)
    t1 = time.perf_counter()
    out = jax.block_until_ready(dec(*args))
    decode_s = time.perf_counter() - t1
    out_tok, out_lp, out_slp, gen_len, done, calls = (np.asarray(x) for x in out)
    M = sampling.max_new_tokens
    S = int(counts.max())
    tok = np.full((B, S, M), sampling.pad_id, np.int32)
    lp = np.zeros((B, S, M), np.float32)
    slp = np.zeros((B, S, M), np.float32)
    length = np.zeros((B, S), np.int32)
    stopped = np.zeros((B, S), bool)
    dst_b, dst_s = active[row_b], row_s
    tok[dst_b, dst_s] = out_tok[:total]
    lp[dst_b, dst_s] = out_lp[:total]
    slp[dst_b, dst_s] = out_slp[:total]
    length[dst_b, dst_s] = gen_len[:total]
    stopped[dst_b, dst_s] = done[:total]
    acct = Accounting(
      prompt_tokens=int(lens.sum()),
      generated_tokens=int(gen_len[:total].sum()),
      prefill_s=prefill_s,
      decode_s=decode_s,
      compile_s=compile_s,
      decode_calls=int(calls),
      cache_bytes=int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(cache))),
    )
    return GenerationResult(
      tokens=tok, logprobs=lp, sample_logprobs=slp, lengths=length, stopped=stopped, accounting=acct
    )


def generate(
  params: Any,
  prompts: Sequence[Sequence[int]],
  *,
  config: ModelConfig,
  key: jax.Array,
  attention: Any = None,
  **sampling: Any,
) -> GenerationResult:
  """One-shot convenience: ``Sampler(config, params, attention=...).generate(prompts, SamplingParams(**sampling), key)``."""
  return Sampler(config, params, attention=attention).generate(prompts, SamplingParams(**sampling), key)
