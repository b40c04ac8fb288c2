"""Forward-pass identities and a plain NumPy oracle for attention (no torch needed)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.attention import Dense, reference_attention
from jaxeff.config import ModelConfig
from jaxeff.kvcache import FullCache
from jaxeff.models import forward, init_params


def naive_attention(q, k, v, q_pos, k_pos, window):
  """Loop-by-loop NumPy attention with GQA and the position mask."""
  B, T, N, H = q.shape
  K = k.shape[2]
  out = np.zeros_like(q, dtype=np.float64)
  for b in range(B):
    for t in range(T):
      for n in range(N):
        kh = n // (N // K)
        vis = [
          s
          for s in range(k.shape[1])
          if k_pos[b, s] >= 0 and k_pos[b, s] <= q_pos[b, t] and (window is None or q_pos[b, t] - k_pos[b, s] < window)
        ]
        if not vis:
          continue
        sc = np.array([q[b, t, n] @ k[b, s, kh] for s in vis]) / np.sqrt(H)
        p = np.exp(sc - sc.max())
        p /= p.sum()
        out[b, t, n] = sum(pi * v[b, s, kh] for pi, s in zip(p, vis))
  return out


@pytest.mark.parametrize("window", [None, 3])
def test_reference_attention_matches_naive_loops(window):
  rng = np.random.RandomState(0)
  q = rng.randn(2, 7, 4, 8).astype(np.float32)
  k = rng.randn(2, 9, 2, 8).astype(np.float32)
  v = rng.randn(2, 9, 2, 8).astype(np.float32)
  q_pos = np.array([[2, 3, 4, 5, 6, 7, 8], [0, 1, 2, 3, -1, -1, -1]])
  k_pos = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8], [0, 1, 2, 3, -1, -1, -1, -1, -1]])
  got = np.asarray(reference_attention(q, k, v, q_pos, k_pos, window))
  want = naive_attention(q, k, v, q_pos, k_pos, window)
  valid = q_pos >= 0
  np.testing.assert_allclose(got[valid], want[valid], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("window", [None, 40, 7])
@pytest.mark.parametrize("block_q, block_k, skip", [(32, 32, True), (32, 64, True), (64, 16, True), (32, 32, False)])
def test_blockwise_dense_equals_reference(window, block_q, block_k, skip):
  """Tiles with an online softmax = one masked softmax; T not divisible by the blocks; right padding."""
  rng = np.random.RandomState(1)
  T = 150
  q = jnp.asarray(rng.randn(2, T, 4, 16), jnp.float32)
  k = jnp.asarray(rng.randn(2, T, 2, 16), jnp.float32)
  v = jnp.asarray(rng.randn(2, T, 2, 16), jnp.float32)
  pos = jnp.stack([jnp.arange(T), jnp.where(jnp.arange(T) < 101, jnp.arange(T), -1)])
  want = reference_attention(q, k, v, pos, pos, window)
  got = Dense(block_q=block_q, block_k=block_k, skip_blocks=skip)(q, k, v, pos, pos, window=window)
  valid = np.asarray(pos) >= 0
  np.testing.assert_allclose(np.asarray(got)[valid], np.asarray(want)[valid], atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def model():
  cfg = ModelConfig.tiny(sliding_window=6, layer_types=("sliding_attention", "full_attention"))
  return cfg, init_params(cfg, jax.random.key(0), std=0.1)


def test_cached_forward_equals_uncached(model):
  cfg, params = model
  toks = jax.random.randint(jax.random.key(1), (2, 14), 0, cfg.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(14), (2, 14))
  ref, _ = forward(params, toks, pos, config=cfg)
  cache = FullCache.init(cfg, 2, 20)
  lg, cache = forward(params, toks[:, :8], pos[:, :8], cache, config=cfg)
  # chunked continuation (T > 1 over a non-empty cache) goes through cache.attend
  lg2, cache = forward(params, toks[:, 8:11], pos[:, 8:11], cache, config=cfg, is_prefill=False)
  lg3, cache = forward(params, toks[:, 11:], pos[:, 11:], cache, config=cfg, is_prefill=False)
  got = jnp.concatenate([lg, lg2, lg3], axis=1)
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5, rtol=1e-5)


def test_right_padding_does_not_change_valid_logits(model):
  cfg, params = model
  toks = jax.random.randint(jax.random.key(2), (1, 9), 0, cfg.vocab_size)
  ref, _ = forward(params, toks, jnp.arange(9)[None], config=cfg)
  padded = jnp.concatenate([toks, jnp.full((1, 7), 5)], axis=1)
  pos = jnp.concatenate([jnp.arange(9), jnp.full((7,), -1)])[None]
  got, cache = forward(params, padded, pos, FullCache.init(cfg, 1, 20), config=cfg)
  np.testing.assert_allclose(np.asarray(got[:, :9]), np.asarray(ref), atol=1e-5, rtol=1e-5)
  assert int(cache.length[0]) == 9  # padding does not occupy the cache


def test_forward_rejects_mismatched_positions(model):
  cfg, params = model
  with pytest.raises(ValueError, match="positions shape"):
    forward(params, jnp.zeros((1, 4), jnp.int32), jnp.zeros((1, 5), jnp.int32), config=cfg)


def test_attention_backend_is_a_value(model):
  """Any callable with the backend signature replaces Dense without touching the model."""
  cfg, params = model
  calls = []

  def spy(q, k, v, qp, kp, *, window=None, layer=0):
    calls.append((layer, window))
    return Dense()(q, k, v, qp, kp, window=window)

  toks = jnp.zeros((1, 6), jnp.int32)
  pos = jnp.arange(6)[None]
  a, _ = forward(params, toks, pos, config=cfg, attention=spy)
  b, _ = forward(params, toks, pos, config=cfg)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  assert calls == [(0, 6), (1, None)]
