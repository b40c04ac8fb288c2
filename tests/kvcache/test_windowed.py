"""The window-bounded cache (the sampler's default): sliding-window layers in a ring of ``window + slack`` slots
give exactly the full cache's outputs (decode past the window, a right-padded row, chunked appends within the
slack), hold fewer bytes, and refuse what a ring cannot do, by name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.config import ModelConfig
from jaxeff.generation import Sampler, SamplingParams
from jaxeff.kvcache import FullCache, RingLayerKV, Windowed
from jaxeff.models import forward, init_params
from tests.hf_fixtures import tiny_gemma

GEMMA = tiny_gemma(
  n_layers=3, sliding_window=6, layer_types=("sliding_attention", "full_attention", "sliding_attention")
)


def _run(params, cache, chunk=1, prompt=20, total=40):
  toks = jax.random.randint(jax.random.key(1), (2, total), 0, GEMMA.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(total), (2, total))
  ppos = pos[:, :prompt].at[1, prompt - 3 :].set(-1)  # a right-padded row (its prompt is 3 tokens shorter)
  lg, cache = forward(params, toks[:, :prompt], ppos, cache, config=GEMMA)
  outs, start = [lg[:, -4]], jnp.array([prompt, prompt - 3])
  for t in range(0, total - prompt, chunk):
    q = (start[:, None] + t + jnp.arange(chunk)[None]).astype(jnp.int32)
    lg, cache = forward(params, toks[:, prompt + t : prompt + t + chunk], q, cache, config=GEMMA, is_prefill=False)
    outs.append(lg.reshape(-1, lg.shape[-1]))
  return jnp.concatenate(outs), cache


@pytest.mark.parametrize("chunk, slack", [(1, 0), (1, 3), (4, 3)])
def test_ring_layers_give_the_full_caches_outputs(chunk, slack):
  params = init_params(GEMMA, jax.random.key(0), std=0.1)
  ref, _ = _run(params, FullCache.init(GEMMA, 2, 48), chunk)
  got, cache = _run(params, Windowed(slack=slack).init(GEMMA, 2, 48), chunk)
  assert [type(e).__name__ for e in cache.layers] == ["RingLayerKV", "LayerKV", "RingLayerKV"]
  assert cache.layers[0].max_len == 6 + slack and cache.max_len == 48
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5, rtol=0)
  assert cache.length.tolist() == [40, 37]


def test_ring_memory_and_refusals():
  params = init_params(GEMMA, jax.random.key(0), std=0.1)
  full, ring = FullCache.init(GEMMA, 1, 4096), Windowed(slack=2).init(GEMMA, 1, 4096)
  assert ring.nbytes() < 0.34 * full.nbytes()  # one global layer of 4096 slots, two local rings of 8
  with pytest.raises(ValueError, match=r"needs a ring of at least 9 slots, the cache has 6: .*Windowed\(slack=3\)"):
    _run(params, Windowed(slack=0).init(GEMMA, 2, 48), chunk=4)
  toks = jnp.zeros((1, 4), jnp.int32)
  with pytest.raises(ValueError, match="chunked prefill .* not a window-bounded cache"):
    forward(params, toks, jnp.arange(4)[None], ring, config=GEMMA, chunk_offset=0)
  assert not Windowed().init(ModelConfig.tiny(), 1, 4096).bounded  # no windows: the plain full cache
  assert isinstance(Windowed(slack=0).init(GEMMA, 1, 7).layers[0], RingLayerKV)
  assert not isinstance(Windowed(slack=1).init(GEMMA, 1, 7).layers[0], RingLayerKV)  # no smaller than max_len


def test_sampler_default_is_bounded_and_generates_what_the_full_cache_does():
  params = init_params(GEMMA, jax.random.key(0), std=0.1)
  prompts = [list(range(3, 25)), [7, 8, 9]]
  sp = SamplingParams(max_new_tokens=12, temperature=0.0)
  ref = Sampler(GEMMA, params, cache=FullCache).generate(prompts, sp, jax.random.key(0))
  default = Sampler(GEMMA, params).generate(prompts, sp, jax.random.key(0))  # slack 128: no ring this short
  np.testing.assert_array_equal(default.tokens, ref.tokens)
  got = Sampler(GEMMA, params, cache=Windowed(slack=2)).generate(prompts, sp, jax.random.key(0))
  np.testing.assert_array_equal(got.tokens, ref.tokens)
  assert got.accounting.cache_bytes < 0.6 * ref.accounting.cache_bytes
