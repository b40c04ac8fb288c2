"""MLA-style conversion (MHA2MLA: partial RoPE + joint SVD) and its absorbed latent cache, against identities:
RoPE on every pair at full rank is the original model; partial RoPE at full rank is the original model with the
dropped frequencies set to zero (an oracle that never touches the MLA code); the absorbed cache equals a full
cache of the same converted model at any rank; Eckart-Young for the factorisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.config import ModelConfig
from jaxeff.kvcache.base import FullCache
from jaxeff.kvcache.commonkv import LatentCache, LatentSpec, compress
from jaxeff.kvcache.mla import MLA, MLACache, MLASpec, max_mla_rank, to_mla
from jaxeff.models import decoder
from jaxeff.models.decoder import forward, init_params

CFG = ModelConfig.tiny(n_layers=3)  # d_model 64, N=4, K=2, H=16


def _params(seed=0):
  return init_params(CFG, jax.random.key(seed), std=0.1)


def _tokens(B=2, T=40):
  return jax.random.randint(jax.random.key(1), (B, T), 0, CFG.vocab_size)


def _decode(params, cache, total=40, prompt=28):
  toks = _tokens(2, total)
  pos = jnp.broadcast_to(jnp.arange(total), (2, total))
  ppos = pos[:, :prompt].at[1, prompt - 4 :].set(-1)  # a right-padded row
  lg, cache = forward(params, toks[:, :prompt], ppos, cache, config=CFG)
  outs = [lg[:, -1]]
  start = jnp.array([prompt, prompt - 4])
  for t in range(total - prompt):
    lg, cache = forward(params, toks[:, prompt + t : prompt + t + 1], (start + t)[:, None], cache, config=CFG)
    outs.append(lg[:, -1])
  return jnp.stack(outs), cache


def _close(a, b, rel=1e-5):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rel, atol=rel * float(jnp.abs(b).max()))


def test_every_pair_rotated_at_full_rank_is_the_original_model():
  p = _params()
  H = CFG.head_dim
  _, pm, spec, rep = to_mla(CFG, p, pairs=H // 2, rank=max_mla_rank(CFG, H // 2))
  assert max(rep["rel_error"]) < 1e-10
  toks = _tokens()
  pos = jnp.broadcast_to(jnp.arange(toks.shape[1]), toks.shape)
  _close(forward(pm, toks, pos, config=CFG)[0], forward(p, toks, pos, config=CFG)[0])
  full, _ = _decode(p, FullCache.init(CFG, 2, 48))
  mla, _ = _decode(pm, MLACache.init(CFG, spec, 2, 48))
  _close(mla, full)


@pytest.mark.parametrize("pairs", [0, 3])
def test_partial_rope_at_full_rank_is_the_model_with_dropped_frequencies_zeroed(pairs, monkeypatch):
  p = _params(1)
  _, pm, _, rep = to_mla(CFG, p, pairs=pairs, rank=max_mla_rank(CFG, pairs))
  assert max(rep["rel_error"]) < 1e-10
  toks = _tokens()
  pos = jnp.broadcast_to(jnp.arange(toks.shape[1]), toks.shape)
  got = forward(pm, toks, pos, config=CFG)[0]
  original = forward(p, toks, pos, config=CFG)[0]
  real = decoder.layer_inv_freqs
  monkeypatch.setattr(
    decoder, "layer_inv_freqs", lambda c: [jnp.where(jnp.arange(f.shape[0]) < pairs, f, 0.0) for f in real(c)]
  )
  want = forward(p, toks, pos, config=CFG)[0]  # the unconverted model, RoPE with frequencies >= p set to zero
  _close(got, want)
  assert float(jnp.abs(got - original).max()) > 1e-3  # dropping RoPE on some pairs is a different model


@pytest.mark.parametrize("pairs,rank", [(2, 20), (1, 7), (0, 40)])
def test_absorbed_cache_equals_a_full_cache_of_the_converted_model(pairs, rank):
  _, pm, spec, _ = to_mla(CFG, _params(2), pairs=pairs, rank=rank)
  full, _ = _decode(pm, FullCache.init(CFG, 2, 48))
  mla, cache = _decode(pm, MLACache.init(CFG, spec, 2, 48))
  _close(mla, full)
  np.testing.assert_array_equal(np.asarray(cache.length), [40, 36])
  # the factory builds the same cache
  assert jax.tree.structure(MLA(spec).init(CFG, 2, 48)) == jax.tree.structure(cache)


def test_eckart_young_and_error_monotone_in_rank():
  p = _params(3)
  errs = []
  for r in (8, 24, 48):
    _, _, _, rep = to_mla(CFG, p, pairs=2, rank=r)
    a = p["layers"][0]["attn"]
    _, n_idx = decoder.mla_lib.rope_dims(CFG.head_dim, 2)
    M = np.concatenate([np.asarray(a["k"])[:, n_idx].reshape(-1, 64), np.asarray(a["v"]).reshape(-1, 64)])
    s = np.linalg.svd(M.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(rep["tail_energy"][0], np.sqrt((s[r:] ** 2).sum()), rtol=1e-9)
    np.testing.assert_allclose(rep["rel_error"][0], np.sqrt((s[r:] ** 2).sum()) / np.linalg.norm(M), rtol=1e-5)
    errs.append(rep["rel_error"][0])
  assert errs[0] > errs[1] > errs[2]


def test_cache_ratio_sets_the_bytes_per_token():
  _, _, spec, _ = to_mla(CFG, _params(), pairs=2, cache_ratio=0.5)
  K, H = CFG.n_kv_heads, CFG.head_dim
  assert spec.ranks[0] == 2 * K * H // 2 - 2 * K * 2
  cache = MLACache.init(CFG, spec, 1, 16)
  full = FullCache.init(CFG, 1, 16)
  full_bytes = sum(e.k.nbytes + e.v.nbytes for e in full.layers) / 16
  assert cache.bytes_per_token() == full_bytes / 2 == 4 * spec.floats_per_token(CFG)
  measured = sum(e.c.nbytes + e.k_rope.nbytes for e in cache.layers) / 16  # from the arrays held
  assert measured == cache.bytes_per_token()


def test_bad_inputs_fail_before_work():
  p = _params()
  with pytest.raises(ValueError, match="rope pairs"):
    to_mla(CFG, p, pairs=9, rank=8)
  with pytest.raises(ValueError, match="exactly one"):
    to_mla(CFG, p, pairs=2)
  with pytest.raises(ValueError, match="out of range"):
    to_mla(CFG, p, pairs=2, rank=max_mla_rank(CFG, 2) + 1)
  with pytest.raises(ValueError, match="no room"):
    to_mla(CFG, p, pairs=8, cache_ratio=0.25)
  _, pm, spec, _ = to_mla(CFG, p, pairs=2, rank=8)
  with pytest.raises(ValueError, match="already MLA"):
    to_mla(CFG, pm, pairs=2, rank=8)
  _, pc, lspec, _ = compress(CFG, p, group_size=1, rank=16)
  with pytest.raises(ValueError, match="CommonKV"):
    to_mla(CFG, pc, pairs=2, rank=8)
  qwen3 = ModelConfig.tiny(n_layers=1, model_type="qwen3", qk_norm=True)
  with pytest.raises(ValueError, match="k_norm"):
    to_mla(qwen3, init_params(qwen3, jax.random.key(0)), pairs=2, rank=8)
  toks, pos = _tokens(1, 4), jnp.arange(4)[None]
  with pytest.raises(ValueError, match="to_mla"):  # an MLA cache under a model that was not converted
    forward(p, toks, pos, MLACache.init(CFG, spec, 1, 8), config=CFG)
  with pytest.raises(ValueError, match="compress"):  # a CommonKV cache under an MLA model
    forward(pm, toks, pos, LatentCache.init(CFG, LatentSpec(1, (16,) * 3), 1, 8), config=CFG)
  with pytest.raises(ValueError, match="covers"):
    MLACache.init(CFG, MLASpec(2, (8,)), 1, 8)
