"""Quality of a compressed KV cache, measured through the cache (not through a fresh prefill).

The context is prefilled into the cache (the compression step — merge, eviction — runs right after, via the
factory's ``after_prefill``), then the query and answer tokens are fed one decode step at a time with teacher
forcing, so every prediction reads the compressed context (kvpress's setting: compress the context without
the question). Both helpers run one jitted ``lax.scan`` over the decode steps per batch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxeff.config import ModelConfig
from jaxeff.models.cache import prefill_with
from jaxeff.models.decoder import forward


@functools.lru_cache(maxsize=32)
def _runner(config: ModelConfig, factory: Any, B: int, C: int, F: int, attention: Any = None):
  @jax.jit
  def run(p, ctx, fol):
    pos = jnp.broadcast_to(jnp.arange(C), (B, C))
    logits, cache = prefill_with(
      factory, p, ctx, pos, config=config, max_len=C + F, attention=attention, logits_index=jnp.full((B,), C - 1)
    )
    logits = logits[..., : config.vocab_size]

    def step(cache, t):
      tok = jax.lax.dynamic_slice_in_dim(fol, t, 1, axis=1)
      lg, cache = forward(p, tok, jnp.full((B, 1), C + t), cache, config=config, is_prefill=False)
      return cache, lg[:, 0]

    _, lgs = jax.lax.scan(step, cache, jnp.arange(F))  # lgs[t] predicts follow[:, t + 1]
    lgs = jnp.concatenate([logits[:, :1], lgs.transpose(1, 0, 2)[:, :-1]], axis=1)  # [:, t] predicts follow[:, t]
    lp = jax.nn.log_softmax(lgs, -1)
    return jnp.take_along_axis(lp, fol[..., None], -1)[..., 0], lgs.argmax(-1)

  return run


def teacher_forced(params, config: ModelConfig, factory: Any, context, follow, attention: Any = None):
  """Log-probs [B, F] of every ``follow`` token given ``context`` [B, C] (prefilled into the cache with the
  ``attention`` backend, dense by default) and the follow tokens before it (decoded through the cache), plus the
  argmax predictions [B, F]."""
  B, C = context.shape
  run = _runner(config, factory, B, C, follow.shape[1], attention)
  return run(params, jnp.asarray(context, jnp.int32), jnp.asarray(follow, jnp.int32))


def cached_needle_accuracy(
  params,
  config: ModelConfig,
  factory: Any,
  lengths: Sequence[int],
  *,
  n: int = 16,
  seed: int = 0,
  batch_size: int = 4,
  return_per_digit: bool = False,
  attention: Any = None,
):
  """Pass-key accuracy with the context (filler + needle) compressed in the cache and the question + answer
  decoded through it: an example counts when all 5 answer digits are the argmax under teacher forcing.
  ``attention``: the prefill backend (e.g. ``ProxyAttention``; dense by default)."""
  from jaxeff.training import data as data_lib
  from jaxeff.training.probes import _byte_tok

  if config.vocab_size < data_lib.PASSKEY_VOCAB:
    raise ValueError(f"the needle probe needs a model vocab >= {data_lib.PASSKEY_VOCAB}")
  filler = np.concatenate(data_lib.tokenize_corpus("python", "validation", _byte_tok()))
  q_len = len(_byte_tok().encode(data_lib.PASSKEY_PROMPT, add_bos=False)) + 1 + 5
  out, per_digit = {}, {}
  for L in lengths:
    rng = np.random.default_rng([seed, L, 99])
    hits = []
    for start in range(0, n, batch_size):
      m = min(batch_size, n - start)
      rows = np.stack([data_lib.passkey_example(filler, L, rng)[0] for _ in range(m)])
      ctx, fol = rows[:, : L + 1 - q_len], rows[:, L + 1 - q_len :]
      _, pred = teacher_forced(params, config, factory, ctx, fol, attention)
      hits.append(np.asarray(pred)[:, -5:] == fol[:, -5:])
    hits = np.concatenate(hits)
    out[int(L)] = float(hits.all(1).mean())
    per_digit[int(L)] = hits.mean(0).round(4).tolist()
  return (out, per_digit) if return_per_digit else out


def cached_bits_per_byte(
  params,
  config: ModelConfig,
  factory: Any,
  *,
  context: int = 1024,
  score: int = 64,
  n_seqs: int = 4,
  attention: Any = None,
  tokenizer: Any = None,
) -> float:
  """Bits per byte of held-out stdlib code on ``score`` tokens decoded after a ``context``-token prefill (with
  the ``attention`` prefill backend; dense by default): ``-sum log2 p / (UTF-8 bytes of the scored tokens)``.
  ``tokenizer``: the model's (default: the byte-level tokenizer of the embedded models; pass the BPE tokenizer
  of a model such as ``tiny-moe``)."""
  from jaxeff.tokenizer import ByteTokenizer
  from jaxeff.training import data as data_lib

  tokenizer = tokenizer if tokenizer is not None else ByteTokenizer()
  stream = np.concatenate(data_lib.tokenize_corpus("python", "validation", tokenizer))
  W = context + score
  if len(stream) < n_seqs * W:
    raise ValueError(f"the validation corpus has {len(stream)} tokens, fewer than n_seqs x (context + score)")
  rows = np.stack([stream[i * W : (i + 1) * W] for i in range(n_seqs)]).astype(np.int32)
  lp, _ = teacher_forced(params, config, factory, rows[:, :context], rows[:, context:], attention)
  nbytes = data_lib.token_byte_lengths(tokenizer, config.vocab_size)[rows[:, context:]].sum()
  return float(-np.asarray(lp).sum() / np.log(2) / nbytes)
