"""Palu-style per-layer low rank and MiniCache-style cross-layer merging behind the cache protocol."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxeff.config import ModelConfig
from jaxeff.kvcache.base import FullCache
from jaxeff.kvcache.commonkv import LatentCache
from jaxeff.kvcache.peers import minicache_merge, palu_compress, slerp
from jaxeff.models.decoder import forward, init_params

CFG = ModelConfig.tiny(n_layers=3)


def _run(params, cache, merge=None, prompt=48, total=60):
  toks = jax.random.randint(jax.random.key(1), (2, total), 0, CFG.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(total), (2, total))
  _, cache = forward(params, toks[:, :prompt], pos[:, :prompt], cache, config=CFG)
  if merge is not None:
    cache = merge(cache)
  outs = []
  for t in range(prompt, total):
    lg, cache = forward(params, toks[:, t : t + 1], pos[:, t : t + 1], cache, config=CFG)
    outs.append(lg[:, -1])
  return jnp.stack(outs, 1), cache


def test_palu_full_rank_is_exact_and_low_rank_is_per_layer():
  p = init_params(CFG, jax.random.key(0), std=0.1)
  ref, _ = _run(p, FullCache.init(CFG, 2, 64))
  _, pc, spec, rep = palu_compress(CFG, p, rank=64)  # per layer: min(2 d_kv, d_model) = 64
  assert spec.group_size == 1 and len(spec.ranks) == 3 and max(rep["rel_error"]) < 1e-10
  out, _ = _run(pc, LatentCache.init(CFG, spec, 2, 64))
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5 * float(jnp.abs(ref).max()))
  _, pc, _, _ = palu_compress(CFG, p, rank=16)
  assert pc["layers"][0]["attn"]["kv_down"] is not pc["layers"][1]["attn"]["kv_down"]


def test_minicache_keep_all_is_identity_and_merging_saves_bytes():
  p = init_params(CFG, jax.random.key(0), std=0.1)
  ref, full = _run(p, FullCache.init(CFG, 2, 64))
  same, m = _run(p, FullCache.init(CFG, 2, 64), lambda c: minicache_merge(c, keep_ratio=1.0, n_recent=4, capacity=64))
  np.testing.assert_array_equal(np.asarray(same), np.asarray(ref))
  assert float(m.merged_share) == 0.0
  low, m = _run(p, FullCache.init(CFG, 2, 64), lambda c: minicache_merge(c, keep_ratio=0.1, n_recent=4, capacity=24))
  assert 0.3 < float(m.merged_share) < 1.0
  assert float(jnp.abs(low - ref).max()) > 1e-3


def test_slerp_endpoints_and_norm():
  a = jnp.array([[1.0, 0.0, 0.0]])
  b = jnp.array([[0.0, 1.0, 0.0]])
  np.testing.assert_allclose(np.asarray(slerp(a, b, 0.0)), np.asarray(a), atol=1e-6)
  np.testing.assert_allclose(np.asarray(slerp(a, b, 1.0)), np.asarray(b), atol=1e-6)
  mid = slerp(a, b, 0.5)
  np.testing.assert_allclose(np.asarray(mid), np.asarray([[2**-0.5, 2**-0.5, 0.0]]), atol=1e-6)
  np.testing.assert_allclose(np.asarray(slerp(a, a, 0.6)), np.asarray(a), atol=1e-6)
