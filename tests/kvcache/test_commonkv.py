"""CommonKV offline SVD and latent cache: exactness at full rank, Eckart-Young, absorbed = rebuilt values,
RoPE blocks key absorption, bytes, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.config import ModelConfig, rope_inv_freq
from jaxeff.kvcache.base import FullCache
from jaxeff.kvcache.commonkv import LatentCache, LatentSpec, allocate_ranks, compress, group_svd_share
from jaxeff.models.decoder import forward, init_params, rope

CFG = ModelConfig.tiny(n_layers=4)  # d_model 64, K=2, H=16: d_kv 32, max group rank min(2*2*32, 64) = 64


def _params(seed=0):
  return init_params(CFG, jax.random.key(seed), std=0.1)


def _decode(params, cache, total=40, prompt=28):
  toks = jax.random.randint(jax.random.key(1), (2, total), 0, CFG.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(total), (2, total))
  ppos = pos[:, :prompt].at[1, prompt - 4 :].set(-1)  # a right-padded row
  lg, cache = forward(params, toks[:, :prompt], ppos, cache, config=CFG)
  outs = [lg[0, -1]]
  start = jnp.array([prompt, prompt - 4])
  for t in range(total - prompt):
    lg, cache = forward(params, toks[:, prompt + t : prompt + t + 1], (start + t)[:, None], cache, config=CFG)
    outs.append(lg[0, -1])
  return jnp.stack(outs), cache


def test_full_rank_latent_cache_reproduces_the_full_cache():
  p = _params()
  full, _ = _decode(p, FullCache.init(CFG, 2, 64))
  _, pc, spec, rep = compress(CFG, p, group_size=2, rank=64)
  assert max(rep["rel_error"]) < 1e-10
  for mode in ("rebuild", "absorb"):
    lat, cache = _decode(pc, LatentCache.init(CFG, spec, 2, 64, value_mode=mode))
    np.testing.assert_allclose(np.asarray(lat), np.asarray(full), rtol=1e-5, atol=1e-5 * float(jnp.abs(full).max()))
  assert cache.bytes_per_token() == 4 * 64 * 4  # one latent per token per layer
  assert FullCache.init(CFG, 1, 1).layers[0].k[0, 0].size * 2 * 4 * 4 == 2 * 4 * 32 * 4


def test_absorbed_values_equal_rebuilt_values_at_low_rank():
  p = _params(3)
  _, pc, spec, _ = compress(CFG, p, group_size=4, rank=24)
  rebuilt, _ = _decode(pc, LatentCache.init(CFG, spec, 2, 64, value_mode="rebuild"))
  absorbed, _ = _decode(pc, LatentCache.init(CFG, spec, 2, 64, value_mode="absorb"))
  materialised, _ = _decode(pc, FullCache.init(CFG, 2, 64))  # same compressed weights, k/v cached
  np.testing.assert_allclose(np.asarray(absorbed), np.asarray(rebuilt), atol=2e-5)
  np.testing.assert_allclose(np.asarray(rebuilt), np.asarray(materialised), atol=2e-5)


def test_eckart_young_and_monotone_error():
  rng = np.random.default_rng(0)
  wk = [rng.normal(size=(32, 64)) for _ in range(2)]
  wv = [rng.normal(size=(32, 64)) for _ in range(2)]
  M = np.concatenate(wk + wv)
  s = np.linalg.svd(M, compute_uv=False)
  prev = np.inf
  for r in (8, 16, 32, 48, 64):
    A, Bk, Bv, S = group_svd_share(wk, wv, r)
    err = np.linalg.norm(M - np.concatenate(Bk + Bv) @ A)
    np.testing.assert_allclose(err, np.sqrt((s[r:] ** 2).sum()), rtol=1e-8, atol=1e-9)
    for i in range(2):  # each layer's error is at most the group's tail
      assert np.linalg.norm(wk[i] - Bk[i] @ A) <= err + 1e-9
    assert err <= prev
    prev = err
  assert prev < 1e-9  # full rank is exact


def test_rope_after_rebuild_blocks_key_absorption():
  """Negative test: folding Bk into one query (q~ = Bk^T q) reproduces the scores without key RoPE, not with it."""
  rng = np.random.default_rng(1)
  H, r, T = 16, 8, 6
  Bk = jnp.asarray(rng.normal(size=(H, r)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(T, r)), jnp.float32)
  q = jnp.asarray(rng.normal(size=(H,)), jnp.float32)
  inv = jnp.asarray(rope_inv_freq(CFG))
  pos = jnp.arange(T)[None]
  keys = rope((c @ Bk.T)[None, :, None, :], pos, inv)[0, :, 0]  # RoPE after the rebuild
  qr = rope(q[None, None, None, :], jnp.array([[T - 1]]), inv)[0, 0, 0]
  true = keys @ qr
  absorbed = c @ (Bk.T @ qr)
  no_rope = (c @ Bk.T) @ qr
  np.testing.assert_allclose(np.asarray(absorbed), np.asarray(no_rope), rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(absorbed - true).max()) > 1e-2


def test_rank_rules():
  assert allocate_ranks(CFG, 2, rank=40) == [40, 40]
  assert allocate_ranks(CFG, 4, ratio=0.5) == [32]
  ranks = allocate_ranks(CFG, 2, ratio=0.5, layer_scores=[4.0, 4.0, 1.0, 1.0], multiple=8)
  assert all(r % 8 == 0 for r in ranks) and ranks[0] > ranks[1]
  with pytest.raises(ValueError, match="maximum feasible rank"):
    allocate_ranks(CFG, 2, rank=65)
  with pytest.raises(ValueError, match="divide the layer count"):
    allocate_ranks(CFG, 3, rank=8)
  with pytest.raises(ValueError, match="exactly one"):
    allocate_ranks(CFG, 2)


def test_misuse_is_reported():
  p = _params()
  _, pc, spec, _ = compress(CFG, p, group_size=2, rank=16)
  with pytest.raises(ValueError, match="already"):
    compress(CFG, pc, group_size=2, rank=16)
  with pytest.raises(ValueError, match="compress the model"):
    _decode(p, LatentCache.init(CFG, spec, 2, 64))
  with pytest.raises(ValueError, match="LatentSpec covers"):
    LatentCache.init(CFG, LatentSpec(2, (16,)), 1, 8)
