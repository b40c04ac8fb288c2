"""Compress a context once, then ask it questions: kvpress's question-agnostic protocol as an API.

  ctx = compress_context(params, context_tokens, config=config, press=Press("snapkv", budget=0.1))
  ctx.nbytes                                   # what the compressed cache holds
  answer(params, ctx, question_tokens)          # greedy answer tokens; ctx is unchanged, ask again

The context is prefilled through the press's cache (any cache factory: an eviction ``Press``, Judge Q's
``JudgeQPress``, ``Quantized``, ``CommonKV``, ``FullCache``) *before* the question is seen, so the press cannot
use it (the setting Judge Q targets); the question is then appended through the compressed cache and the answer
decoded greedily. Functional: ``answer`` never changes ``ctx``, so one compression serves many questions.

Reference: kvpress (NVIDIA, https://github.com/NVIDIA/kvpress), its "compress the context, then ask" pipeline;
Judge Q (arXiv 2509.10798) for the question-agnostic setting.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxeff.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class CompressedContext:
  """A context prefilled into a (compressed) cache: ``cache`` holds it, ``length`` tokens long, with room for
  ``room`` more (question + answer). ``nbytes``: the cache's bytes (``cache.nbytes()``); ``full_nbytes``: what
  a full float32 cache of the same context would hold (the saving is ``1 - nbytes / full_nbytes`` at the same
  capacity)."""

  cache: Any
  config: ModelConfig
  length: int
  room: int
  nbytes: int
  full_nbytes: int


def _as_tokens(tokens, what: str) -> np.ndarray:
  arr = np.asarray(tokens)
  if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"{what} must be a non-empty 1-D sequence of token ids, got shape {arr.shape} ({arr.dtype})")
  return arr.astype(np.int32)


def compress_context(
  params: Any,
  context_tokens: Sequence[int],
  *,
  config: ModelConfig,
  press: Any = None,
  room: int = 256,
  attention: Any = None,
) -> CompressedContext:
  """Prefill ``context_tokens`` [T] through ``press``'s cache (default: the full cache) and return it.

  Args:
    params: the model's parameter table.
    context_tokens: the context, token ids [T] (e.g. ``tokenizer.encode(document)``).
    config: the model config.
    press: a cache factory (``Press("snapkv", budget=0.1)``, ``JudgeQPress(...)``, ``Quantized(bits=4)``, ...).
    room: cache slots left for the question and the answer (their total must fit).
    attention: the prefill attention backend (default ``Dense()``; e.g. ``ProxyAttention()``).

  Returns:
    ``CompressedContext``.

  Example:
    >>> from jaxeff.models import load
    >>> from jaxeff.kvcache import Press
    >>> config, params, tok = load("tiny-recall")  # doctest: +SKIP
    >>> ctx = compress_context(params, tok.encode("the key is 4242. " * 20), config=config, press=Press("snapkv", budget=0.25))  # doctest: +SKIP
    >>> tok.decode(answer(params, ctx, tok.encode("the key is "), max_new_tokens=4))  # doctest: +SKIP
  """
  from jaxeff.kvcache import FullCache
  from jaxeff.models.cache import prefill_with

  toks = _as_tokens(context_tokens, "context_tokens")
  if room < 1:
    raise ValueError(f"room must be >= 1 slot for the question and answer, got {room}")
  T = len(toks)
  if T + room > config.max_position_embeddings:
    raise ValueError(f"context ({T}) + room ({room}) exceeds the model's {config.max_position_embeddings} positions")
  factory = FullCache if press is None else press
  _, cache = prefill_with(
    factory,
    params,
    jnp.asarray(toks[None]),
    jnp.arange(T, dtype=jnp.int32)[None],
    config=config,
    max_len=T + room,
    attention=attention,
    logits_index=jnp.array([T - 1], jnp.int32),
  )
  full = jax.eval_shape(lambda: FullCache.init(config, 1, T + room))  # shapes only: nothing allocated
  full_nbytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(full))
  return CompressedContext(cache, config, T, room, int(cache.nbytes()), int(full_nbytes))


@functools.lru_cache(maxsize=32)
def _answerer(config: ModelConfig, Q: int, new: int):
  from jaxeff.models.decoder import forward

  @jax.jit
  def run(params, cache, question, start):
    pos = (start + jnp.arange(Q, dtype=jnp.int32))[None]
    logits, cache = forward(params, question[None], pos, cache, config=config, is_prefill=False)
    first = jnp.argmax(logits[0, -1, : config.vocab_size]).astype(jnp.int32)

    def step(carry, t):
      cache, prev = carry
      lg, cache = forward(
        params, prev[None, None], (start + Q + t)[None, None], cache, config=config, is_prefill=False
      )
      nxt = jnp.argmax(lg[0, 0, : config.vocab_size]).astype(jnp.int32)
      return (cache, nxt), nxt

    (_, _), rest = jax.lax.scan(step, (cache, first), jnp.arange(new - 1, dtype=jnp.int32))
    return jnp.concatenate([first[None], rest])

  return run


def answer(
  params: Any,
  context: CompressedContext,
  question_tokens: Sequence[int],
  *,
  max_new_tokens: int = 32,
  stop_tokens: Sequence[int] = (),
) -> list[int]:
  """Append ``question_tokens`` [Q] to the compressed context and decode ``max_new_tokens`` greedily.

  Returns the answer's token ids, cut before the first of ``stop_tokens``. ``context`` is not modified.

  Shapes: question [Q]; Q + max_new_tokens <= ``context.room``. Example: see ``compress_context``.
  """
  q = _as_tokens(question_tokens, "question_tokens")
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  if len(q) + max_new_tokens > context.room:
    raise ValueError(
      f"question ({len(q)}) + max_new_tokens ({max_new_tokens}) exceeds the context's room ({context.room}): "
      "compress_context(..., room=...) larger"
    )
  out = _answerer(context.config, len(q), max_new_tokens)(
    params, context.cache, jnp.asarray(q), jnp.int32(context.length)
  )
  out = [int(t) for t in np.asarray(out)]
  stops = set(int(s) for s in stop_tokens)
  for i, t in enumerate(out):
    if t in stops:
      return out[:i]
  return out
