"""ProxyAttn estimation against a float64 NumPy oracle written from the spec, identities, and the backend."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.attention import peers, proxy
from jaxeff.attention.dense import Dense, reference_attention
from jaxeff.attention.peers import MeanPoolTopK, structured_qk
from tests.attention import proxy_numpy


def _qk(seed, B=2, Hq=4, Hkv=2, L=160, d=16, sharp=2.0):
  """Random q/k with some structure (shared direction + noise) so scores are not all alike."""
  rng = np.random.default_rng(seed)
  base = rng.normal(size=(B, 1, L, d))
  q = sharp * (0.6 * base + rng.normal(size=(B, Hq, L, d)))
  k = 0.6 * base + rng.normal(size=(B, Hkv, L, d))
  return q.astype(np.float32), k.astype(np.float32)


OPTIONS = list(
  itertools.product(
    ["count", "literal"],  # count_mode
    ["absolute", "ratio"],  # row_mode
    ["max2d", "max_k_then_mean_q"],  # tile_reduce
    [(False, False), (True, True)],  # force_sink, force_diag
  )
)


@pytest.mark.parametrize("count_mode,row_mode,tile_reduce,force", OPTIONS)
def test_estimate_matches_numpy_oracle(count_mode, row_mode, tile_reduce, force):
  bs, s, g, gamma, mb = 16, 4, 2, 0.8, 16
  q, k = _qk(0, Hq=4, Hkv=2, L=150)
  lengths = np.array([150, 101])
  kw = dict(
    force_sink=force[0], force_diag=force[1], count_mode=count_mode, row_mode=row_mode, tile_reduce=tile_reduce
  )
  want = proxy_numpy.estimate(q, k, bs=bs, s=s, g=g, gamma=gamma, mb=mb, lengths=lengths, **kw)
  got = proxy.estimate(
    jnp.asarray(q),
    jnp.asarray(k),
    block_size=bs,
    stride=s,
    num_proxies=g,
    gamma=gamma,
    min_budget_tokens=mb,
    lengths=jnp.asarray(lengths),
    **kw,
  )
  np.testing.assert_allclose(np.asarray(got.proxy_scores), want["scores"], rtol=1e-4, atol=1e-7)
  # Budgets and masks exactly, where the f64 problem is not within float32 rounding of a tie.
  ok_c = want["csum_margin"] > 1e-4
  assert ok_c.mean() > 0.7
  got_K = np.asarray(got.budget_blocks)
  np.testing.assert_array_equal(got_K[ok_c], want["K"][ok_c])
  ok_rows = ok_c[..., None] & (want["rank_margin"] > 1e-3)
  assert ok_rows.mean() > 0.6
  np.testing.assert_array_equal(np.asarray(got.block_mask)[ok_rows], want["mask"][ok_rows])
  np.testing.assert_array_equal(np.asarray(got.block_cnt)[ok_rows], want["cnt"][ok_rows])
  # The index lists describe the same mask.
  from kernels_pallas.block_sparse_attention import indices_to_mask

  np.testing.assert_array_equal(
    np.asarray(indices_to_mask(got.block_idx, got.block_cnt, got.block_mask.shape[-1])), np.asarray(got.block_mask)
  )


def test_single_head_stride_one_gives_true_block_max():
  """g = Hq = Hkv, s = 1: A_g is each head's exact block max of its causal softmax map."""
  q, k = _qk(1, B=1, Hq=2, Hkv=2, L=64, d=8)
  est = proxy.estimate(
    jnp.asarray(q), jnp.asarray(k), block_size=16, stride=1, num_proxies=2, gamma=0.9, min_budget_tokens=0
  )
  s = np.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(8)
  s = np.where(np.tril(np.ones((64, 64), bool)), s, -np.inf)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  want = p.reshape(1, 2, 4, 16, 4, 16).max(axis=(3, 5))
  np.testing.assert_allclose(np.asarray(est.proxy_scores), want, rtol=1e-5, atol=1e-7)


def test_hand_made_mass_gives_known_counts():
  mass = jnp.array([[0.05, 0.5, 0.15, 0.3]])  # sorted: .5 .3 .15 .05 -> cumsum .5 .8 .95 1
  assert int(proxy.budget_counts(mass, 0.75, "count")[0]) == 2
  assert int(proxy.budget_counts(mass, 0.75, "literal")[0]) == 1
  assert int(proxy.budget_counts(mass, 0.9, "count")[0]) == 3
  assert int(proxy.budget_counts(mass, 0.9, "literal")[0]) == 2
  assert int(proxy.budget_counts(mass, 0.4, "count")[0]) == 1
  assert int(proxy.budget_counts(mass, 0.4, "literal")[0]) == 1  # floored at one block
  assert int(proxy.budget_counts(mass, 1.0, "count")[0]) == 4


def test_permuting_heads_in_a_group_and_rope_order_leave_proxy_scores_unchanged():
  q, k = _qk(2, B=1, Hq=8, Hkv=4, L=96)
  kw = dict(block_size=16, stride=2, num_proxies=2, gamma=0.9, min_budget_tokens=0)
  base = proxy.estimate(jnp.asarray(q), jnp.asarray(k), **kw).proxy_scores
  perm_q = q[:, [1, 0, 3, 2, 6, 7, 5, 4]]  # within groups {0..3}, {4..7}
  perm_k = k[:, [1, 0, 3, 2]]
  perm = proxy.estimate(jnp.asarray(perm_q), jnp.asarray(perm_k), **kw).proxy_scores
  np.testing.assert_allclose(np.asarray(perm), np.asarray(base), rtol=1e-5, atol=1e-7)
  # Pooling commutes with RoPE (a per-position linear map applied to every head alike).
  from jaxeff.config import ModelConfig, rope_inv_freq
  from jaxeff.models.decoder import rope

  cfg = ModelConfig.tiny(head_dim=16)
  pos = jnp.arange(96)[None]
  rot = lambda x: rope(jnp.asarray(x).transpose(0, 2, 1, 3), pos, rope_inv_freq(cfg)).transpose(0, 2, 1, 3)
  qr, kr = rot(q), rot(k)
  pooled_then_rope = rot(jnp.asarray(q).reshape(1, 2, 4, 96, 16).mean(2))
  rope_then_pooled = qr.reshape(1, 2, 4, 96, 16).mean(2)
  np.testing.assert_allclose(np.asarray(pooled_then_rope), np.asarray(rope_then_pooled), atol=1e-5)
  assert np.isfinite(np.asarray(proxy.estimate(qr, kr, **kw).proxy_scores)).all()


def test_masks_nested_and_density_monotone_in_gamma_and_min_budget():
  q, k = _qk(3, B=1, Hq=4, Hkv=2, L=256)
  kw = dict(block_size=16, stride=4, num_proxies=1)
  prev, dens, budgets = None, [], []
  for gamma in (0.5, 0.7, 0.9, 0.97, 1.0):
    est = proxy.estimate(jnp.asarray(q), jnp.asarray(k), gamma=gamma, min_budget_tokens=0, **kw)
    m = np.asarray(est.block_mask)
    if prev is not None:
      assert (m | ~prev).all(), "mask at a larger gamma must contain the smaller one"
      assert (np.asarray(est.budget_blocks) >= budgets[-1]).all(), "budgets are monotone in gamma"
    prev = m
    dens.append(m.sum())
    budgets.append(np.asarray(est.budget_blocks))
  assert dens == sorted(dens) and dens[0] < dens[-1]
  prev = None
  for mb in (0, 32, 64, 128, 256):
    m = np.asarray(proxy.estimate(jnp.asarray(q), jnp.asarray(k), gamma=0.5, min_budget_tokens=mb, **kw).block_mask)
    if prev is not None:
      assert (m | ~prev).all()
    prev = m


def test_each_row_keeps_min_of_budget_and_candidates():
  q, k = _qk(4, B=2, Hq=4, Hkv=2, L=256)
  for force in (False, True):
    est = proxy.estimate(
      jnp.asarray(q),
      jnp.asarray(k),
      block_size=16,
      stride=4,
      gamma=0.8,
      min_budget_tokens=32,
      force_sink=force,
      force_diag=force,
    )
    K = np.asarray(est.budget_blocks)[..., None]
    m = np.arange(16)
    nforced = (np.where(m == 0, 1, 2) if force else np.zeros(16, int))[None, None]
    want = np.minimum(K + nforced, m + 1)
    np.testing.assert_array_equal(np.asarray(est.block_cnt), want)
    np.testing.assert_array_equal(np.asarray(est.block_mask).sum(-1), want)
    if force:
      mask = np.asarray(est.block_mask)
      assert mask[..., 0].all() and mask[..., m, m].all()


@pytest.mark.parametrize("how", ["gamma", "min_budget"])
def test_full_budget_is_dense_causal_attention(how):
  B, Hq, Hkv, L, d = 2, 4, 2, 200, 16
  rng = np.random.default_rng(5)
  q, k, v = (rng.normal(size=(B, L, h, d)).astype(np.float32) for h in (Hq, Hkv, Hkv))
  att = proxy.ProxyAttention(
    block_size=32, stride=4, gamma=1.0 if how == "gamma" else 0.5, min_budget_tokens=0 if how == "gamma" else 10_000
  )
  qh, kh = jnp.asarray(q).transpose(0, 2, 1, 3), jnp.asarray(k).transpose(0, 2, 1, 3)
  est = att.mask(qh, kh, jnp.array([L, L]))
  nb = -(-L // 32)
  np.testing.assert_array_equal(
    np.asarray(est.block_mask), np.broadcast_to(np.tril(np.ones((nb, nb), bool)), (B, Hq, nb, nb))
  )
  pos = jnp.broadcast_to(jnp.arange(L), (B, L))
  out = att(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), pos, pos)
  want = reference_attention(q, k, v, pos, pos)
  np.testing.assert_allclose(np.asarray(out), np.asarray(want), atol=1e-5)


def test_backend_honours_right_padding():
  """A right-padded row gives the same outputs on its real tokens as the unpadded row alone."""
  B, Hq, Hkv, L, d = 1, 4, 2, 192, 16
  rng = np.random.default_rng(6)
  q, k, v = (rng.normal(size=(B, L, h, d)).astype(np.float32) for h in (Hq, Hkv, Hkv))
  att = proxy.ProxyAttention(block_size=32, stride=4, gamma=0.8, min_budget_tokens=32)
  n = 150
  alone = att(*(jnp.asarray(x[:, :n]) for x in (q, k, v)), jnp.arange(n)[None], jnp.arange(n)[None])
  pos = jnp.where(jnp.arange(L) < n, jnp.arange(L), -1)[None]
  padded = att(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), pos, pos)
  np.testing.assert_allclose(np.asarray(padded[:, :n]), np.asarray(alone), atol=1e-5)


def test_backend_packs_rows_with_tokens_after_the_padding():
  """Valid tokens after padding (Judge Q's soft tokens after a padded prompt): the outputs on the valid tokens
  equal the same tokens without the gap, at a sparse setting, and the common layout in the same batch is
  untouched."""
  Hq, Hkv, L, d = 4, 2, 192, 16
  rng = np.random.default_rng(7)
  q, k, v = (rng.normal(size=(2, L, h, d)).astype(np.float32) for h in (Hq, Hkv, Hkv))
  att = proxy.ProxyAttention(block_size=32, stride=4, gamma=0.8, min_budget_tokens=32)
  n, gap = 140, 40  # row 0: tokens 0..139, 40 padding slots, then 12 more tokens at positions 140..151
  idx = np.arange(L)
  pos0 = np.where(idx < n, idx, np.where(idx < n + gap, -1, idx - gap))
  keep = pos0 >= 0
  alone = att(
    *(jnp.asarray(x[:1, keep]) for x in (q, k, v)), jnp.arange(keep.sum())[None], jnp.arange(keep.sum())[None]
  )
  pos = jnp.asarray(np.stack([pos0, idx]))
  both = att(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), pos, pos)
  np.testing.assert_allclose(np.asarray(both[0, keep]), np.asarray(alone[0]), atol=1e-5)
  plain = att(*(jnp.asarray(x[1:]) for x in (q, k, v)), jnp.asarray(idx[None]), jnp.asarray(idx[None]))
  np.testing.assert_allclose(np.asarray(both[1]), np.asarray(plain[0]), atol=1e-5)


def test_proxy_recalls_at_least_the_mass_of_mean_pooled_scores_on_structured_inputs():
  """Spec behaviour test: same per-row K, ProxyAttn's mask recalls >= the mass that mean-pooled block
  scores (MInference block-sparse) recall, on q/k with a sink, shared needles, locality, per-head sharpness."""
  from jaxeff.attention.peers import attention_mass_recall

  bs = 64
  for seed in (0, 1):
    q, k = structured_qk(jax.random.key(seed), batch=1, q_heads=8, kv_heads=2, length=1024, head_dim=32)
    est = proxy.estimate(q, k, block_size=bs, stride=4, num_proxies=1, gamma=0.9, min_budget_tokens=4 * bs)
    mp = MeanPoolTopK(block_size=bs).mask_with_budget(q, k, est.block_cnt)
    np.testing.assert_array_equal(np.asarray(mp.block_cnt), np.asarray(est.block_cnt))
    r_proxy = float(attention_mass_recall(q, k, est.block_mask, bs))
    r_pool = float(attention_mass_recall(q, k, mp.block_mask, bs))
    assert r_proxy >= r_pool, (seed, r_proxy, r_pool)
    assert r_proxy > 0.9
    assert float(est.density()) < 0.7
    # Dynamic budgets: the sharpest head (last) needs fewer blocks than the flattest (first).
    K = np.asarray(est.budget_blocks)[0]
    assert K[-1] < K[0]


def test_estimate_and_kernel_jit_without_retrace():
  traces = []
  att = proxy.ProxyAttention(block_size=32, stride=4, gamma=0.9, min_budget_tokens=32)

  @jax.jit
  def run(q, k, v):
    traces.append(1)
    out, m = att.attend(q, k, v, jnp.full((q.shape[0],), q.shape[2], jnp.int32))
    return out, m.block_mask

  rng = np.random.default_rng(7)
  args = [jnp.asarray(rng.normal(size=(1, h, 128, 16)), jnp.float32) for h in (4, 2, 2)]
  out1, m1 = run(*args)
  args2 = [a + 1.0 for a in args]
  out2, m2 = run(*args2)
  assert len(traces) == 1
  assert out1.shape == (1, 4, 128, 16) and bool(jnp.isfinite(out2).all())


def test_auto_list_width_is_the_largest_budget_and_changes_nothing_else():
  """``max_blocks="auto"`` (the default) sizes the lists to the largest row count (rounded up to 16) when called
  eagerly, ``nb`` under jit; masks, counts, the kept ids and the attention output equal the uncapped lists'."""
  from kernels_pallas.block_sparse_attention import block_sparse_attention

  q, k = _qk(8, B=1, Hq=4, Hkv=2, L=1024, d=16)
  rng = np.random.default_rng(8)
  v = jnp.asarray(rng.normal(size=(1, 2, 1024, 16)), jnp.float32)
  q, k = jnp.asarray(q), jnp.asarray(k)
  kw = dict(block_size=16, stride=4, gamma=0.5, min_budget_tokens=64, force_sink=True, force_diag=True)
  auto, full = proxy.estimate(q, k, **kw), proxy.estimate(q, k, max_blocks=None, **kw)
  nb = 64
  top = int(np.asarray(full.block_cnt).max())
  assert full.block_idx.shape[-1] == nb and top < 48
  assert auto.block_idx.shape[-1] == -(-top // 16) * 16 < nb
  np.testing.assert_array_equal(np.asarray(auto.block_cnt), np.asarray(full.block_cnt))
  np.testing.assert_array_equal(np.asarray(auto.block_mask), np.asarray(full.block_mask))
  w = auto.block_idx.shape[-1]
  np.testing.assert_array_equal(np.asarray(auto.block_idx), np.asarray(full.block_idx)[..., :w])
  outs = [
    block_sparse_attention(q, k, v, m.block_idx, m.block_cnt, block_size=16, implementation="xla")
    for m in (auto, full)
  ]
  np.testing.assert_array_equal(np.asarray(outs[0]), np.asarray(outs[1]))
  assert jax.jit(lambda q, k: proxy.estimate(q, k, **kw).block_idx)(q, k).shape[-1] == nb  # traced: no bound
  for name, fn in (("xattention", peers.xattention_estimate), ("flexprefill", peers.flexprefill_estimate)):
    a, f = fn(q, k, block_size=16), fn(q, k, block_size=16, max_blocks=None)
    np.testing.assert_array_equal(np.asarray(a.block_mask), np.asarray(f.block_mask), err_msg=name)
    np.testing.assert_array_equal(np.asarray(a.block_cnt), np.asarray(f.block_cnt), err_msg=name)
    assert a.block_idx.shape[-1] == min(nb, -(-int(np.asarray(f.block_cnt).max()) // 16) * 16), name
  with pytest.raises(ValueError, match="max_blocks"):
    proxy.ProxyAttention(max_blocks="largest")
  with pytest.raises(ValueError, match="max_blocks"):
    proxy.estimate(q, k, max_blocks=2.5, **kw)


def test_bad_inputs_fail_before_work():
  q = jnp.zeros((1, 4, 64, 8))
  k = jnp.zeros((1, 2, 64, 8))
  with pytest.raises(ValueError, match="gamma"):
    proxy.estimate(q, k, block_size=16, gamma=1.5)
  with pytest.raises(ValueError, match="num_proxies"):
    proxy.estimate(q, k, block_size=16, num_proxies=3)
  with pytest.raises(ValueError, match="multiple of kv heads"):
    proxy.estimate(jnp.zeros((1, 3, 64, 8)), k, block_size=16)
  with pytest.raises(ValueError, match="multiple of stride"):
    proxy.estimate(q, k, block_size=18, stride=4)
  with pytest.raises(ValueError, match="count_mode"):
    proxy.estimate(q, k, block_size=16, count_mode="bogus")
  with pytest.raises(ValueError, match="gamma"):
    proxy.ProxyAttention(gamma=0.0)


@pytest.mark.parametrize(
  "window, gemma", [(None, False), (100, False), (100, True)], ids=["full", "sliding", "gemma3"]
)
def test_model_forward_with_full_budget_equals_dense(window, gemma):
  """At full budget ProxyAttention equals dense attention through the whole model; with sliding-window layers
  (window 100 < prompt 300) and ``local_layers="sparse"`` every layer goes through the sparse path, the windowed
  one with its window; by default only the global layer does (Gemma 3's layout: a local layer with its own RoPE
  base, q scaled by query_pre_attn_scalar)."""
  from jaxeff.config import ModelConfig
  from jaxeff.models.decoder import forward, init_params
  from tests.hf_fixtures import tiny_gemma

  kw = {} if window is None else dict(sliding_window=window, layer_types=("sliding_attention", "full_attention"))
  cfg = tiny_gemma(query_pre_attn_scalar=24.0, **kw) if gemma else ModelConfig.tiny(**kw)
  params = init_params(cfg, jax.random.key(0))
  toks = jax.random.randint(jax.random.key(1), (2, 300), 0, cfg.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(300), (2, 300))
  dense, _ = forward(params, toks, pos, config=cfg, attention=Dense())
  full, _ = forward(
    params, toks, pos, config=cfg, attention=proxy.ProxyAttention(block_size=64, min_budget_tokens=512)
  )
  np.testing.assert_allclose(np.asarray(full), np.asarray(dense), atol=1e-4, rtol=1e-4)
  calls = []

  class Spy(proxy.ProxyAttention):
    def attend(self, *a, **kw):
      calls.append(kw.get("window"))
      return super().attend(*a, **kw)

  spy = Spy(block_size=64, gamma=0.5, min_budget_tokens=64, local_layers="sparse")
  sparse, _ = forward(params, toks, pos, config=cfg, attention=spy)
  assert bool(jnp.isfinite(sparse).all())
  assert set(calls) == ({None} if window is None else {window, None}), calls  # traced once per packing branch
  if window is not None:  # by default a local layer runs its exact window; only the global layer is estimated
    calls.clear()
    spy = Spy(block_size=64, gamma=0.5, min_budget_tokens=64)
    forward(params, toks, pos, config=cfg, attention=spy)
    assert set(calls) == {None}, calls


def test_local_layers_run_their_exact_window_by_default():
  """A sliding-window layer's output through ProxyAttention is dense windowed attention exactly (the default,
  ``local_layers="window"``), not the estimated mask intersected with the window (``"sparse"``)."""
  B, T, N, K, H, W = 1, 512, 4, 2, 16, 96
  q, k, v = (jax.random.normal(jax.random.key(i), (B, T, n, H)) for i, n in enumerate((N, K, K)))
  pos = jnp.arange(T)[None]
  want = Dense()(q, k, v, pos, pos, window=W)
  got = proxy.ProxyAttention(block_size=64, gamma=0.3, min_budget_tokens=64)(q, k, v, pos, pos, window=W)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)
  cut = proxy.ProxyAttention(block_size=64, gamma=0.3, min_budget_tokens=64, local_layers="sparse")
  assert float(jnp.abs(cut(q, k, v, pos, pos, window=W) - want).max()) > 1e-3
  with pytest.raises(ValueError, match="local_layers"):
    proxy.ProxyAttention(local_layers="both")


def test_default_num_proxies_per_model():
  from jaxeff.config import ModelConfig

  assert proxy.default_num_proxies(ModelConfig.llama3_1_8b()) == 1
  assert proxy.default_num_proxies(ModelConfig.qwen2_5_7b()) == 4
  assert proxy.ProxyAttention.for_model(ModelConfig.qwen2_5_7b()).num_proxies == 4


@pytest.mark.parametrize("chunk", [1, 3, None])
def test_last_block_mass_in_key_chunks_equals_one_softmax(chunk):
  """The chunked two-statistic softmax (issue 24: no [bs, L] scores) equals one softmax over all keys, per key
  block, for ragged lengths and any chunking."""
  from jaxeff.attention.proxy import last_block_mass

  rng = np.random.default_rng(0)
  B, Hq, Hkv, bs, nb, d = 2, 4, 2, 8, 7, 16
  q = rng.normal(size=(B, Hq, nb * bs, d)).astype(np.float32)
  k = rng.normal(size=(B, Hkv, nb * bs, d)).astype(np.float32) * 2
  lengths = np.array([nb * bs, 3 * bs + 5])
  got = np.asarray(
    last_block_mass(
      jnp.asarray(q), jnp.asarray(k), jnp.asarray(lengths), block_size=bs, scale=0.25, key_chunk_blocks=chunk
    )
  )
  for b in range(B):
    L = lengths[b]
    rows = range(max(L - bs, 0), L)
    for h in range(Hq):
      want = np.zeros(nb)
      for t in rows:
        s = (q[b, h, t].astype(np.float64) @ k[b, h // 2, : t + 1].T.astype(np.float64)) * 0.25
        p = np.exp(s - s.max())
        p /= p.sum()
        want += np.bincount(np.arange(t + 1) // bs, weights=p, minlength=nb)
      np.testing.assert_allclose(got[b, h], want / len(rows), rtol=1e-5, atol=1e-6)


def test_packing_assume_in_front_equals_auto_on_the_prefill_layout():
  """packing='assume_in_front' (no run-time layout check, no packing branch: 2.4 GiB less at 128K) gives the same
  outputs as the default on jaxeff's prefill layout (right padding); a bad value fails when built."""
  ks = jax.random.split(jax.random.key(1), 3)
  B, T, N, K, H = 2, 384, 4, 2, 16
  q = jax.random.normal(ks[0], (B, T, N, H))
  k = jax.random.normal(ks[1], (B, T, K, H))
  v = jax.random.normal(ks[2], (B, T, K, H))
  pos = jnp.where(jnp.arange(T)[None] < jnp.array([[T], [300]]), jnp.arange(T)[None], -1)
  auto = proxy.ProxyAttention(gamma=0.9, block_size=64, min_budget_tokens=64)
  fast = proxy.ProxyAttention(gamma=0.9, block_size=64, min_budget_tokens=64, packing="assume_in_front")
  np.testing.assert_array_equal(np.asarray(fast(q, k, v, pos, pos)), np.asarray(auto(q, k, v, pos, pos)))
  with pytest.raises(ValueError, match="packing"):
    proxy.ProxyAttention(packing="sometimes")


_LLAMA_L, _LLAMA_HQ, _LLAMA_HKV, _LLAMA_D = 16384, 32, 8, 128  # 16K tokens of Llama-3.1-8B's attention layer
_LLAMA_Q_BYTES = _LLAMA_L * _LLAMA_HQ * _LLAMA_D * 4  # float32 q of that layer


def _llama_layer_temps(**kw) -> int:
  """XLA's compiled temporaries (bytes) of one ProxyAttn layer on the model's layout at that shape, not run."""
  sd = jax.ShapeDtypeStruct
  L = _LLAMA_L
  args = [sd((1, L, h, _LLAMA_D), jnp.float32) for h in (_LLAMA_HQ, _LLAMA_HKV, _LLAMA_HKV)]
  args += [sd((1, L), jnp.int32)] * 2
  be = proxy.ProxyAttention(gamma=0.95, block_size=128, **kw)
  return jax.jit(lambda *a: be(*a)).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_packing_branch_holds_one_copy_of_q_not_whole_copies_of_qkv_and_output():
  """The run-time packing branch (default packing='auto') estimates on one packed copy of q and k and runs the
  kernel one kv group at a time: XLA's compiled temporaries exceed the no-branch program's by less than 1.5 x
  the bytes of q (whole copies of q, k, v and the output cost 3.4 x: 8.0 vs 1.15 GiB at 128K). Compiled for CPU
  at 16K tokens of Llama-3.1-8B's layer shape (32 / 8 heads, d 128), not run."""
  auto, front = _llama_layer_temps(), _llama_layer_temps(packing="assume_in_front")
  assert front < auto < front + 1.5 * _LLAMA_Q_BYTES, (auto / _LLAMA_Q_BYTES, front / _LLAMA_Q_BYTES)


def test_estimator_proxy_mean_holds_no_copy_of_q():
  """The proxy heads' mean is summed token-major, so a ProxyAttn layer on the model's layout holds well under
  one copy of q in temporaries: 0.35 x q's bytes at 16K tokens of Llama-3.1-8B's layer (packing
  'assume_in_front'), where ``mean`` over the head axis took 0.58 x and the same adds head-major 1.03 x (a
  transposed copy of q). Compiled for CPU, not run."""
  temps = _llama_layer_temps(packing="assume_in_front")
  assert temps < 0.45 * _LLAMA_Q_BYTES, temps / _LLAMA_Q_BYTES


def test_chunked_prefill_dense_and_full_budget_sparse_equal_one_shot_prefill():
  """Chunked prefill over a FullCache (chunks of 96 over a 300-token right-padded batch): with Dense it gives
  one-shot prefill's last logits and cache (an identity); ProxyAttention at full budget runs sparse on every
  chunk (the backend sees T < S) and gives the same (full budget = dense)."""
  from jaxeff.config import ModelConfig
  from jaxeff.kvcache import FullCache
  from jaxeff.models.cache import chunked_prefill
  from jaxeff.models.decoder import forward, init_params

  cfg = ModelConfig.tiny()
  params = init_params(cfg, jax.random.key(0))
  toks = jax.random.randint(jax.random.key(1), (2, 300), 0, cfg.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(300), (2, 300)).at[1, 250:].set(-1)
  last = jnp.array([299, 249])
  want, c0 = forward(params, toks, pos, FullCache.init(cfg, 2, 320), config=cfg, logits_index=last)
  got, c1 = chunked_prefill(params, toks, pos, FullCache.init(cfg, 2, 320), config=cfg, chunk=96, logits_index=last)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4, rtol=1e-4)
  np.testing.assert_array_equal(np.asarray(c1.length), np.asarray(c0.length))
  np.testing.assert_allclose(np.asarray(c1.layers[1].k[:, :250]), np.asarray(c0.layers[1].k[:, :250]), atol=1e-5)
  seen = []

  class Spy(proxy.ProxyAttention):
    def attend(self, q, *a, **kw):
      seen.append((q.shape[1], kw.get("first_row")))
      return super().attend(q, *a, **kw)

  full = Spy(block_size=32, gamma=1.0, min_budget_tokens=0, packing="assume_in_front")
  got_sparse, _ = chunked_prefill(
    params, toks, pos, FullCache.init(cfg, 2, 320), config=cfg, chunk=96, logits_index=last, attention=full
  )
  np.testing.assert_allclose(np.asarray(got_sparse), np.asarray(want), atol=1e-4, rtol=1e-4)
  # chunks 2 and 3 ran sparse over the cache; the last one (12 tokens, under a block) goes to Dense
  assert set(seen) == {(96, 0), (192, 96), (288, 192)}, seen


def test_sparse_chunk_over_a_cache_equals_the_reference_under_its_mask():
  """A chunk's queries (the last 100 of 260 keys) through ProxyAttention equal dense f32 attention under the
  estimated block mask for the zero-padded square, on the chunk's rows; the blocks before the chunk are empty."""
  from kernels_pallas.block_sparse_attention import block_sparse_attention_reference

  B, Hq, Hkv, S, T, d, bs = 1, 4, 2, 260, 100, 16, 32
  rng = np.random.default_rng(7)
  q = jnp.asarray(rng.normal(size=(B, T, Hq, d)), jnp.float32)
  k, v = (jnp.asarray(rng.normal(size=(B, S, Hkv, d)), jnp.float32) for _ in range(2))
  att = proxy.ProxyAttention(block_size=bs, gamma=0.6, min_budget_tokens=32, packing="assume_in_front")
  kpos = jnp.arange(S)[None]
  got = att(q, k, v, kpos[:, S - T :], kpos)
  qf = jnp.pad(q, ((0, 0), (S - T, 0), (0, 0), (0, 0))).transpose(0, 2, 1, 3)
  est = att.mask(qf, k.transpose(0, 2, 1, 3), jnp.array([S]))
  want = block_sparse_attention_reference(
    qf, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), est.block_mask, block_size=bs
  )
  np.testing.assert_allclose(np.asarray(got), np.asarray(want.transpose(0, 2, 1, 3)[:, S - T :]), atol=1e-5)
  assert float(est.density(jnp.array([S]))) < 1.0  # a sparse mask, not the dense identity


def test_chunked_prefill_refuses_caches_without_full_kv():
  from jaxeff.config import ModelConfig
  from jaxeff.kvcache import Quantized
  from jaxeff.models.decoder import forward, init_params

  cfg = ModelConfig.tiny()
  params = init_params(cfg, jax.random.key(0))
  toks = jnp.zeros((1, 8), jnp.int32)
  with pytest.raises(ValueError, match="FullCache"):
    forward(params, toks, jnp.arange(8)[None], Quantized(bits=8).init(cfg, 1, 16), config=cfg, chunk_offset=0)
