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
from tests.hf_fixtures import tiny_gemma

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
  assert cache.bytes_per_token() == CFG.n_layers * 64 * 4  # one rank-64 float32 latent per token per layer
  full_cache = FullCache.init(CFG, 1, 64)
  full_bytes = sum(e.k.nbytes + e.v.nbytes for e in full_cache.layers) / 64  # measured from the arrays
  assert cache.bytes_per_token() == full_bytes  # group 2 at rank 2 x K x H holds what the full cache holds


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


def _merge_run(pc, spec, rho, prompt=48, total=60, S=64, **kw):
  from jaxeff.kvcache.commonkv import merge_after_prefill

  toks = jax.random.randint(jax.random.key(5), (2, total), 0, CFG.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(total), (2, total))
  ppos = pos[:, :prompt].at[1, prompt - 4 :].set(-1)
  _, cache = forward(pc, toks[:, :prompt], ppos, LatentCache.init(CFG, spec, 2, S), config=CFG)
  if rho is not None:
    cache = merge_after_prefill(cache, rho=rho, n_sink=2, n_recent=8, **kw)
  outs, start = [], jnp.array([prompt, prompt - 4])
  for t in range(total - prompt):
    lg, cache = forward(pc, toks[:, prompt + t : prompt + t + 1], (start + t)[:, None], cache, config=CFG)
    outs.append(lg[:, -1])
  return jnp.stack(outs, 1), cache


def test_merge_with_everything_kept_is_the_identity_and_merging_changes_outputs():
  _, pc, spec, _ = compress(CFG, _params(), group_size=2, rank=32)
  ref, _ = _merge_run(pc, spec, None)
  same, merged = _merge_run(pc, spec, 1.0)
  np.testing.assert_array_equal(np.asarray(same), np.asarray(ref))
  assert float(merged.unmerged_fraction()) == 1.0
  low, merged = _merge_run(pc, spec, 0.2)
  assert 0.2 <= float(merged.unmerged_fraction()) < 1.0
  assert float(jnp.abs(low - ref).max()) > 1e-3


def test_identical_latents_merge_losslessly():
  """Layer 0 writes nothing to the residual and layer 1 has its K/V weights, so both layers of group 0 see the
  same input and produce identical latents: cos = 1, the merged latent equals each layer's, outputs unchanged.
  Group 1 (random) is less similar, so with rho = 0.5 it stays unmerged."""
  p = _params()
  layers = [dict(lp) for lp in p["layers"]]
  a0 = dict(layers[0]["attn"], o=jnp.zeros_like(layers[0]["attn"]["o"]))
  layers[0] = dict(layers[0], attn=a0, mlp=dict(layers[0]["mlp"], down=jnp.zeros_like(layers[0]["mlp"]["down"])))
  layers[1] = dict(layers[1], attn_norm=layers[0]["attn_norm"], attn=dict(layers[1]["attn"], k=a0["k"], v=a0["v"]))
  p = dict(p, layers=tuple(layers))
  _, pc, spec, _ = compress(CFG, p, group_size=2, rank=32)
  ref, _ = _merge_run(pc, spec, None)
  merged_out, merged = _merge_run(pc, spec, 0.5)
  np.testing.assert_allclose(np.asarray(merged_out), np.asarray(ref), atol=1e-5)
  assert int(merged.own_count[0].sum()) < int(merged.own_count[1].sum())


def test_merged_cache_really_holds_fewer_bytes_on_long_prompts():
  _, pc, spec, _ = compress(CFG, _params(), group_size=4, rank=32)
  toks = jax.random.randint(jax.random.key(6), (1, 256), 0, CFG.vocab_size)
  pos = jnp.arange(256)[None]
  _, cache = forward(pc, toks, pos, LatentCache.init(CFG, spec, 1, 264), config=CFG)
  from jaxeff.kvcache.commonkv import merge_after_prefill

  merged = merge_after_prefill(cache, rho=0.2, n_sink=4, n_recent=16)
  frac = float(merged.unmerged_fraction())
  assert merged.nbytes() < 0.6 * cache.nbytes(), (merged.nbytes(), cache.nbytes(), frac)


def test_noise_in_one_group_raises_its_unmerged_share():
  _, pc, spec, _ = compress(CFG, _params(), group_size=2, rank=32)
  _, base = _merge_run(pc, spec, 0.3)
  layers = [dict(lp) for lp in pc["layers"]]
  A = layers[3]["attn"]["kv_down"]
  noisy_A = A + 3.0 * jax.random.normal(jax.random.key(9), A.shape) * jnp.abs(A).mean()
  layers[3] = dict(layers[3], attn=dict(layers[3]["attn"], kv_down=noisy_A))
  _, noisy = _merge_run(dict(pc, layers=tuple(layers)), spec, 0.3)
  assert int(noisy.own_count[1].sum()) > int(base.own_count[1].sum())
  assert int(noisy.own_count[0].sum()) < int(base.own_count[0].sum())  # one global budget


def test_quantized_latents_compose_with_commonkv():
  """Latent + int8/int4: outputs track the float latent cache, int8 closer than int4, bytes shrink."""
  _, pc, spec, _ = compress(CFG, _params(), group_size=2, rank=32)
  ref, c32 = _decode(pc, LatentCache.init(CFG, spec, 2, 64))
  errs = {}
  for bits in (8, 4):
    out, c = _decode(pc, LatentCache.init(CFG, spec, 2, 64, bits=bits))
    errs[bits] = float(jnp.abs(out - ref).max() / jnp.abs(ref).max())
    assert c.bytes_per_token() == 4 * (32 * bits / 8 + 8)
  assert errs[8] < 0.02 and errs[8] < errs[4] < 0.3, errs
  assert c32.bytes_per_token() == 4 * 32 * 4


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("mode", ["absorb", "rebuild"])
def test_quantized_latents_are_attended_tile_by_tile_as_if_dequantized_whole(bits, mode):
  """The tiled path (each tile dequantized inside the online softmax, a shifted last tile, bounded by the filled
  length) equals attention over the whole dequantized cache; with a window and a multi-token query chunk."""
  from jaxeff.kvcache.commonkv import _latent_attention
  from jaxeff.models.latent import LatentKV

  _, pc, spec, _ = compress(CFG, _params(5), group_size=2, rank=32)
  _, cache = _decode(pc, LatentCache.init(CFG, spec, 2, 64, bits=bits, value_mode=mode))  # 40 / 36 filled
  a = pc["layers"][1]["attn"]
  rec = LatentKV(None, a["k_up"], a["v_up"], None, None, None, jnp.asarray(rope_inv_freq(CFG, 1)), 1e-6, None)
  rng = np.random.default_rng(0)
  for T, window in ((1, None), (3, 9)):
    q = jnp.asarray(rng.normal(size=(2, T, CFG.n_heads, CFG.head_dim)), jnp.float32)
    qpos = jnp.array([[40 + t for t in range(T)], [36 + t for t in range(T)]])
    got = cache._tiled_attention(1, q, qpos, window, rec, tile=24)
    want = _latent_attention(q, cache.latent_values(1), cache.layers[1].pos, qpos, rec, window, mode)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  assert cache.attend(1, q, qpos, window=9, latent=rec).shape == q.shape  # attend takes this path


def test_calibration_fisher_and_layer_sensitivity():
  """On the trained tiny-code model with layer 2's output projection zeroed: layer 2's V gets no Fisher mass and
  its keys no sensitivity weight; weights sum to 1 per group."""
  from jaxeff.kvcache.commonkv import fisher_scores, layer_sensitivity
  from jaxeff.models.embedded import load_reference_model
  from jaxeff.tokenizer import ByteTokenizer
  from jaxeff.training import data as data_lib

  cfg, p, _ = load_reference_model("tiny-code", jnp.float32)
  layers = [dict(lp) for lp in p["layers"]]
  layers[2] = dict(layers[2], attn=dict(layers[2]["attn"], o=jnp.zeros_like(layers[2]["attn"]["o"])))
  p = dict(p, layers=tuple(layers))
  stream = np.concatenate(data_lib.tokenize_corpus("python", "validation", ByteTokenizer(), max_documents=5))
  batches = [stream[i * 258 : (i + 1) * 258].reshape(2, 129).astype(np.int32) for i in range(2)]
  scores = fisher_scores(cfg, p, batches)
  assert len(scores) == 4 and scores[2] < 1e-12 < min(scores[0], scores[1], scores[3])
  _, pc, spec, _ = compress(cfg, p, group_size=2, rank=64)
  w = layer_sensitivity(cfg, pc, spec, batches)
  assert len(w) == 2 and all(abs(sum(g) - 1) < 1e-9 for g in w)
  assert w[1][0] < 0.05 < w[1][1]  # layer 2 (first of group 1) is insensitive


@pytest.mark.parametrize("bits", [None, 8, 4])
@pytest.mark.parametrize("kernel", [None, "xla"])
def test_selective_reconstruction_with_every_tile_is_exact(bits, kernel):
  """select_tiles >= the tile count keeps every tile: the same logits as rebuilding every key (an identity),
  for float and int8/int4 latents, through the jnp path and the XLA latent kernel."""
  _, pc, spec, _ = compress(CFG, _params(), group_size=2, rank=32)
  ref, _ = _decode(pc, LatentCache.init(CFG, spec, 2, 64, bits=bits, kernel=kernel))
  got, c = _decode(pc, LatentCache.init(CFG, spec, 2, 64, bits=bits, kernel=kernel, select_tiles=8, tile=8))
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-5 * float(jnp.abs(ref).max()))
  assert c.bytes_per_token() > LatentCache.init(CFG, spec, 2, 64, bits=bits).bytes_per_token()  # + landmarks


def test_tile_bounds_are_max_and_min_of_the_rebuilt_keys_and_selection_follows_them():
  """Oracle: rebuild every cached key from its latent (LatentKV.rebuild at its position) and take each tile's
  channel-wise max / min; the cache's bounds after a padded prefill and decode steps equal that. ``selected``
  keeps the sink, the newest tile and the tile of highest Quest bound (computed here from the rebuilt keys)."""
  from jaxeff.models.latent import latent_projection

  _, pc, spec, _ = compress(CFG, _params(2), group_size=2, rank=32)
  cache = LatentCache.init(CFG, spec, 2, 64, select_tiles=3, tile=8)
  _, cache = _decode(pc, cache)  # 28-token prompt (row 1 padded to 24), 12 decode steps
  inv = jnp.asarray(rope_inv_freq(CFG))
  h = jax.random.normal(jax.random.key(5), (2, 1, CFG.d_model))
  q, _, _, rec = latent_projection(pc["layers"][1]["attn"], h, jnp.array([[40], [36]]), CFG, inv)
  e = cache.layers[1]
  k, _ = rec.rebuild(e.latent, jnp.maximum(e.pos, 0))  # [B, S, K, H]
  valid = (e.pos >= 0)[..., None, None]
  kmax = jnp.where(valid, k, -jnp.inf).reshape(2, 8, 8, 2, 16).max(2)
  kmin = jnp.where(valid, k, jnp.inf).reshape(2, 8, 8, 2, 16).min(2)
  np.testing.assert_allclose(np.asarray(e.key_max), np.asarray(kmax), atol=1e-5)
  np.testing.assert_allclose(np.asarray(e.key_min), np.asarray(kmin), atol=1e-5)
  qg = np.asarray(q[:, 0].reshape(2, 2, -1, 16))
  lat, pos = cache.selected(1, q, jnp.array([[40], [36]]))
  assert lat.shape == (2, 24, 32) and pos.shape == (2, 24)
  for b, n in enumerate((40, 36)):  # tokens cached per row
    newest = (n - 1) // 8
    live = [t for t in range(8) if t * 8 < n]
    bound = {
      t: max(
        float(np.maximum(qg[b, kk, g] * kmax[b, t, kk], qg[b, kk, g] * kmin[b, t, kk]).sum())
        for kk in range(2)
        for g in range(2)
      )
      for t in live
    }
    rest = sorted((t for t in live if t not in (0, newest)), key=lambda t: -bound[t])
    got = {int(p) // 8 for p in np.asarray(pos[b]) if p >= 0}
    assert got == {0, newest, rest[0]}, (b, got, rest)


def test_selective_reconstruction_rejects_bad_settings():
  _, pc, spec, _ = compress(CFG, _params(), group_size=2, rank=32)
  with pytest.raises(ValueError, match="select_tiles"):
    LatentCache.init(CFG, spec, 1, 16, select_tiles=1)
  from jaxeff.kvcache import CommonKV

  with pytest.raises(ValueError, match="merge"):
    CommonKV(spec, merge=True, select_tiles=4)


GEMMA = tiny_gemma(  # Gemma 3's layout in miniature: local layers (window 8) around one global layer
  n_layers=6,
  sliding_window=8,
  layer_types=("sliding_attention",) * 2 + ("full_attention",) + ("sliding_attention",) * 3,
)


def test_groups_never_mix_local_and_global_layers_and_full_rank_is_exact():
  from jaxeff.kvcache.commonkv import layer_groups, merge_after_prefill

  groups = layer_groups(GEMMA, 2)
  assert groups == ((0, 1), (3, 4), (5,), (2,))
  for g in groups:
    assert len({GEMMA.layer_types[i] for i in g}) == 1
  p = init_params(GEMMA, jax.random.key(0), std=0.1)
  _, pc, spec, rep = compress(GEMMA, p, group_size=2, ratio=1.0)
  assert spec.groups == groups and spec.ranks == (64, 64, 64, 64)  # min(2 G K H, D) = D = 64 for G = 1 and 2
  assert max(rep["rel_error"]) < 1e-10
  assert pc["layers"][0]["attn"]["kv_down"] is pc["layers"][1]["attn"]["kv_down"]  # shared inside a group
  toks = jax.random.randint(jax.random.key(1), (2, 30), 0, GEMMA.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(30), (2, 30))

  def run(params, cache, merge=None):
    _, cache = forward(params, toks[:, :24], pos[:, :24], cache, config=GEMMA)
    if merge is not None:
      cache = merge_after_prefill(cache, rho=merge, n_sink=2, n_recent=4)
    outs = []
    for t in range(24, 30):  # decoded past the window: the local layers' masks move
      lg, cache = forward(params, toks[:, t : t + 1], pos[:, t : t + 1], cache, config=GEMMA)
      outs.append(lg[:, -1])
    return jnp.stack(outs, 1)

  ref = run(p, FullCache.init(GEMMA, 2, 32))
  lat = run(pc, LatentCache.init(GEMMA, spec, 2, 32))
  np.testing.assert_allclose(np.asarray(lat), np.asarray(ref), atol=1e-4 * float(jnp.abs(ref).max()))
  same = run(pc, LatentCache.init(GEMMA, spec, 2, 32), merge=1.0)  # rho = 1 keeps every entry: the identity
  np.testing.assert_allclose(np.asarray(same), np.asarray(lat), atol=1e-5)
  merged = run(pc, LatentCache.init(GEMMA, spec, 2, 32), merge=0.3)
  assert float(jnp.abs(merged - lat).max()) > 1e-4  # merging does something (and runs on uneven groups)
