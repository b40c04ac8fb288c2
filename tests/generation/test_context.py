"""Compress-then-ask: a full cache answers exactly like uncached greedy decoding of context + question; a full
budget press is the identity; compression shrinks the bytes; the compressed context is reusable; bad input fails
before any work."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.generation import answer, compress_context
from jaxeff.kvcache import Press, Quantized
from jaxeff.models import forward
from jaxeff.models.embedded import load_reference_model


@pytest.fixture(scope="module")
def model():
  return load_reference_model("tiny-recall")


def _greedy_uncached(params, config, tokens, new):
  seq = list(tokens)
  for _ in range(new):
    t = jnp.asarray([seq])
    logits, _ = forward(params, t, jnp.arange(len(seq))[None], config=config)
    seq.append(int(jnp.argmax(logits[0, -1, : config.vocab_size])))
  return seq[len(tokens) :]


def test_full_cache_answers_like_uncached_greedy_and_the_context_is_reusable(model):
  config, params, tok = model
  context = tok.encode("the pass key is 73105. remember it. " * 6)
  q1, q2 = tok.encode(" what is the pass key? the pass key is"), tok.encode(" repeat: the")
  ctx = compress_context(params, context, config=config, room=64)
  a1 = answer(params, ctx, q1, max_new_tokens=6)
  a2 = answer(params, ctx, q2, max_new_tokens=5)
  assert a1 == _greedy_uncached(params, config, context + q1, 6)
  assert a2 == _greedy_uncached(params, config, context + q2, 5)
  assert answer(params, ctx, q1, max_new_tokens=6) == a1  # asking again: ctx was not consumed
  # full budget = no compression (an identity); a 25 % budget holds fewer bytes
  full_press = compress_context(params, context, config=config, press=Press("snapkv", budget=1.0), room=64)
  assert answer(params, full_press, q1, max_new_tokens=6) == a1
  small = compress_context(params, context, config=config, press=Press("snapkv", budget=0.25), room=64)
  assert small.nbytes < ctx.nbytes == ctx.full_nbytes
  assert len(answer(params, small, q1, max_new_tokens=6)) == 6
  q4 = compress_context(params, context, config=config, press=Quantized(bits=4), room=64)
  assert q4.nbytes < ctx.nbytes
  # stop tokens cut the answer before the first stop
  assert answer(params, ctx, q1, max_new_tokens=6, stop_tokens=[a1[2]]) == a1[: a1.index(a1[2])]


def test_bad_input_fails_before_any_work(model):
  config, params, tok = model
  with pytest.raises(ValueError, match="non-empty 1-D"):
    compress_context(params, [], config=config)
  with pytest.raises(ValueError, match="room"):
    compress_context(params, [1, 2, 3], config=config, room=0)
  with pytest.raises(ValueError, match="positions"):
    compress_context(params, np.ones(10, np.int32), config=config, room=config.max_position_embeddings)
  ctx = compress_context(params, [1, 2, 3], config=config, room=8)
  with pytest.raises(ValueError, match="room"):
    answer(params, ctx, [4, 5, 6], max_new_tokens=6)
