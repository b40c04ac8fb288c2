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
  # layers 0-1 keep every token unmerged (bit-exact); layer 2, alone, is stored as direction x magnitude
  np.testing.assert_allclose(np.asarray(same), np.asarray(ref), atol=1e-5 * float(jnp.abs(ref).max()))
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


def test_minicache_pairs_never_mix_local_and_global_layers_and_lone_layers_stay_whole():
  """Gemma 3's layout: ``for_model`` pairs consecutive layers of one type; a layer left alone keeps its whole
  cache even when the unmerged buffer is small; pairing by index is refused on such a model."""
  import pytest

  from jaxeff.kvcache.peers import MiniCacheMerge
  from tests.hf_fixtures import tiny_gemma

  types = ("sliding_attention",) * 2 + ("full_attention",) + ("sliding_attention",) * 2 + ("full_attention",)
  cfg = tiny_gemma(n_layers=6, sliding_window=40, layer_types=types)
  factory = MiniCacheMerge.for_model(cfg, keep_ratio=0.1, n_recent=4)
  assert factory.pairs == ((0, 1), (3, 4), (2, 5))
  assert all(len({types[i] for i in pr}) == 1 for pr in factory.pairs)
  with pytest.raises(ValueError, match="pair them by index: use MiniCacheMerge.for_model"):
    MiniCacheMerge().init(cfg, 1, 8)
  with pytest.raises(ValueError, match="every one of the 3 layers exactly once"):
    minicache_merge(FullCache.init(CFG, 1, 8), capacity=4, pairs=((0, 1), (1, 2)))
  p = init_params(cfg, jax.random.key(0), std=0.1)
  toks = jax.random.randint(jax.random.key(1), (2, 48), 0, cfg.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(48), (2, 48))
  _, full = forward(p, toks, pos, FullCache.init(cfg, 2, 64), config=cfg)
  lone = minicache_merge(full, keep_ratio=0.1, n_recent=4, capacity=12, pairs=((0, 1), (3, 4), (2,), (5,)))
  for layer in (2, 5):
    k, _ = lone._full(layer)
    np.testing.assert_allclose(np.asarray(k[:, :48]), np.asarray(full.layers[layer].k[:, :48]), rtol=1e-5, atol=1e-6)
  merged = factory.after_prefill(full, max_new_tokens=8)
  assert merged.pair_of == (0, 0, 2, 1, 1, 2) and 0.3 < float(merged.merged_share) < 1.0
