"""Eviction presses: scorers vs plain NumPy loops, exact no-op at full budget, compaction, budgets, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.config import ModelConfig
from jaxeff.evals.cached import teacher_forced
from jaxeff.generation import Sampler, SamplingParams
from jaxeff.kvcache import FullCache
from jaxeff.kvcache.eviction import Press, h2o_scores, pyramid_budgets, select_keep, snapkv_scores
from jaxeff.models import init_params


def _softmax_rows(q, k, qpos, kpos):
  """NumPy: attention probabilities of one query vector set over keys under the position mask."""
  H = q.shape[-1]
  s = k @ q / np.sqrt(H)
  vis = (kpos >= 0) & (kpos <= qpos)
  s = np.where(vis, s, -np.inf)
  e = np.exp(s - s[vis].max()) * vis
  return e / e.sum()


def snapkv_numpy(q, k, pos, w, kernel, pooling):
  B, T, N, H = q.shape
  K = k.shape[2]
  G = N // K
  out = np.zeros((B, K, T))
  for b in range(B):
    L = int((pos[b] >= 0).sum())
    for kh in range(K):
      acc = np.zeros(T)
      for i in range(max(L - w, 0), L):
        for g in range(G):
          acc += _softmax_rows(q[b, i, kh * G + g], k[b, :, kh], pos[b, i], pos[b]) / G
      pre = L - w
      pooled = np.zeros(T)
      for j in range(max(pre, 0)):
        lo, hi = max(0, j - kernel // 2), min(pre, j + kernel // 2 + 1)
        win = acc[lo:hi]
        pooled[j] = win.max() if pooling == "max" else win.sum() / kernel
      out[b, kh] = pooled
  return out


def h2o_numpy(q, k, pos, normalize):
  B, T, N, H = q.shape
  K = k.shape[2]
  G = N // K
  out = np.zeros((B, K, T))
  for b in range(B):
    seen = np.zeros(T)
    for i in range(T):
      if pos[b, i] < 0:
        continue
      seen += (pos[b] >= 0) & (pos[b] <= pos[b, i])
      for kh in range(K):
        for g in range(G):
          out[b, kh] += _softmax_rows(q[b, i, kh * G + g], k[b, :, kh], pos[b, i], pos[b]) / G
    if normalize:
      out[b] /= np.maximum(seen, 1)
  return out


@pytest.fixture(scope="module")
def qkp():
  rng = np.random.RandomState(0)
  T = 30
  q = rng.randn(2, T, 4, 8).astype(np.float32)
  k = rng.randn(2, T, 2, 8).astype(np.float32)
  pos = np.stack([np.arange(T), np.where(np.arange(T) < 22, np.arange(T), -1)]).astype(np.int32)  # right padding
  return q, k, pos


@pytest.mark.parametrize("pooling, kernel, w", [("max", 7, 8), ("avg", 5, 4), ("max", 1, 3)])
def test_snapkv_scores_match_numpy(qkp, pooling, kernel, w):
  q, k, pos = qkp
  lengths = (pos >= 0).sum(1)
  got = snapkv_scores(q, k, pos, jnp.asarray(lengths), window_size=w, kernel_size=kernel, pooling=pooling)
  np.testing.assert_allclose(np.asarray(got), snapkv_numpy(q, k, pos, w, kernel, pooling), atol=1e-5)


@pytest.mark.parametrize("normalize", [False, True])
def test_h2o_scores_match_numpy(qkp, normalize):
  q, k, pos = qkp
  got = h2o_scores(q, k, pos, normalize=normalize, chunk=7)  # chunks that do not divide T
  np.testing.assert_allclose(np.asarray(got), h2o_numpy(q, k, pos, normalize), atol=1e-4)


def test_pyramid_budgets_closed_form():
  # the official integer arithmetic: c = 56, min = 56 // 20 = 2, max = 110, step = 108 // 3 = 36
  assert pyramid_budgets(64, 8, 4, 1000) == [118, 82, 46, 10]
  # clamp: max >= T - w -> max = T - w = 92, min = 2 * 56 - 92 = 20
  assert pyramid_budgets(64, 8, 3, 100) == [100, 64, 28]


def test_select_keep_is_exactly_the_top_scores():
  rng = np.random.RandomState(3)
  s = rng.rand(2, 3, 20).astype(np.float32)
  valid = np.ones((2, 20), bool)
  valid[1, 15:] = False
  keep = jnp.asarray([6, 4])
  idx, ok = select_keep(jnp.asarray(s), jnp.asarray(valid), keep, 6)
  idx, ok = np.asarray(idx), np.asarray(ok)
  for b in range(2):
    for h in range(3):
      sv = np.where(valid[b], s[b, h], -np.inf)
      want = np.sort(np.argsort(-sv)[: int(keep[b])])
      assert list(idx[b, h][ok[b, h]]) == list(want)
      assert np.all(np.diff(idx[b, h][ok[b, h]]) > 0)  # index order


@pytest.fixture(scope="module")
def model():
  cfg = ModelConfig.tiny()
  return cfg, init_params(cfg, jax.random.key(0), std=0.1)


class _Full:
  init = staticmethod(FullCache.init)


SCORERS = ["snapkv", "pyramidkv", "h2o", "streaming", "recent", "random"]


@pytest.mark.parametrize("scorer", SCORERS)
def test_full_budget_reproduces_full_cache_exactly(model, scorer):
  cfg, params = model
  rng = np.random.RandomState(1)
  ctx, fol = rng.randint(0, cfg.vocab_size, (2, 40)), rng.randint(0, cfg.vocab_size, (2, 6))
  ref, _ = teacher_forced(params, cfg, _Full, ctx, fol)
  for budget in (1.0, 40):
    got, _ = teacher_forced(params, cfg, Press(scorer, budget=budget), ctx, fol)
    assert float(jnp.max(jnp.abs(got - ref))) == 0.0
  low, _ = teacher_forced(params, cfg, Press(scorer, budget=0.25), ctx, fol)
  assert float(jnp.max(jnp.abs(low - ref))) > 1e-3  # eviction does change the predictions


@pytest.mark.parametrize("scorer", SCORERS)
def test_evicted_cache_holds_exactly_the_budget_and_frees_memory(model, scorer):
  cfg, params = model
  from jaxeff.models import forward

  T, M = 64, 8
  press = Press(scorer, budget=0.25)
  toks = jnp.asarray(np.random.RandomState(2).randint(0, cfg.vocab_size, (2, T)))
  pos = jnp.broadcast_to(jnp.arange(T), (2, T))
  _, cache = forward(params, toks, pos, press.init(cfg, 2, T + M), config=cfg, is_prefill=True)
  full = FullCache.init(cfg, 2, T + M)
  for layer in range(cfg.n_layers):
    kept = np.asarray(cache.kept_tokens(layer))
    want = press.capacity(layer, T, cfg.n_layers)
    assert np.all(kept == want)
    assert cache.layers[layer].k.shape[1] == want + M  # compacted arrays: prompt budget + decode slots
    kp = np.asarray(cache.layers[layer].pos)[:, :want]
    assert np.all(kp[:, -press.window_size :] >= T - press.window_size)  # the recent window is kept
  if scorer != "pyramidkv":
    assert cache.nbytes() < 0.45 * full.nbytes()
  if scorer == "streaming":
    kp = np.asarray(cache.layers[0].pos)[0, :, 0]
    assert list(kp[:4]) == [0, 1, 2, 3] and list(kp[4:16]) == list(range(52, 64))


def test_per_row_budget_with_right_padding(model):
  cfg, params = model
  from jaxeff.models import forward

  T = 40
  pos = np.stack([np.arange(T), np.where(np.arange(T) < 20, np.arange(T), -1)])
  toks = jnp.asarray(np.random.RandomState(4).randint(0, cfg.vocab_size, (2, T)))
  _, cache = forward(params, toks, jnp.asarray(pos), Press("snapkv", budget=0.5).init(cfg, 2, T + 4), config=cfg)
  kept = np.asarray(cache.kept_tokens(0))
  assert list(kept[:, 0]) == [20, 10]  # ceil(0.5 * 40), ceil(0.5 * 20)
  assert np.asarray(cache.layers[0].pos)[1].max() < 20  # padding never kept


def test_sampler_decodes_on_the_evicted_cache(model):
  cfg, params = model
  prompts = [list(range(50)), list(range(5, 30))]
  sp = SamplingParams(max_new_tokens=5, temperature=0.0)
  full = Sampler(cfg, params).generate(prompts, sp, jax.random.key(0)).tokens
  same = Sampler(cfg, params, cache=Press("snapkv", budget=1.0)).generate(prompts, sp, jax.random.key(0)).tokens
  np.testing.assert_array_equal(full, same)
  out = Sampler(cfg, params, cache=Press("h2o", budget=0.2)).generate(prompts, sp, jax.random.key(0))
  assert out.tokens.shape == (2, 1, 5)


@pytest.mark.parametrize(
  "kw, match",
  [
    (dict(budget=0), "at least 1"),
    (dict(budget=-3), "at least 1"),
    (dict(budget=0.0), r"\(0, 1\]"),
    (dict(budget=1.5), r"\(0, 1\]"),
    (dict(budget=-0.1), r"\(0, 1\]"),
    (dict(scorer="nope"), "unknown press"),
    (dict(pooling="median"), "pooling"),
  ],
)
def test_bad_press_options_fail_clearly(kw, match):
  with pytest.raises(ValueError, match=match):
    Press(**kw)


def test_token_budget_above_prompt_length_fails(model):
  cfg, params = model
  with pytest.raises(ValueError, match="exceeds the prompt length"):
    teacher_forced(params, cfg, Press("snapkv", budget=41), np.zeros((1, 40), np.int32), np.zeros((1, 2), np.int32))


def test_composed_press_equals_each_piece_at_identity_settings(model):
  """Eviction + int8 / CommonKV latents: at full budget the composition is the inner cache alone, bit for bit;
  with FullCache inside, a real budget keeps exactly what the plain press keeps."""
  from jaxeff.kvcache import CommonKV, Quantized, compress

  cfg, params = model
  rng = np.random.RandomState(5)
  ctx, fol = rng.randint(0, cfg.vocab_size, (2, 40)), rng.randint(0, cfg.vocab_size, (2, 6))
  q8 = Quantized(bits=8, group_size=16)
  a, _ = teacher_forced(params, cfg, q8, ctx, fol)
  b, _ = teacher_forced(params, cfg, Press("snapkv", budget=1.0, per_head=False, inner=q8), ctx, fol)
  assert float(jnp.max(jnp.abs(a - b))) == 0.0
  _, pc, spec, _ = compress(cfg, params, group_size=2, rank=16)
  a, _ = teacher_forced(pc, cfg, CommonKV(spec), ctx, fol)
  b, _ = teacher_forced(pc, cfg, Press("h2o", budget=1.0, per_head=False, inner=CommonKV(spec)), ctx, fol)
  assert float(jnp.max(jnp.abs(a - b))) == 0.0
  plain = Press("snapkv", budget=0.3, per_head=False)
  a, _ = teacher_forced(params, cfg, plain, ctx, fol)
  b, _ = teacher_forced(params, cfg, Press("snapkv", budget=0.3, per_head=False, inner=_Full), ctx, fol)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  # evicted + CommonKV latents + a real budget still decodes (and differs from the unevicted latent cache)
  c, _ = teacher_forced(pc, cfg, Press("snapkv", budget=0.3, per_head=False, inner=CommonKV(spec, bits=4)), ctx, fol)
  assert bool(jnp.all(jnp.isfinite(c)))
  with pytest.raises(ValueError, match="per_head=False"):
    Press("snapkv", inner=q8)


@pytest.mark.parametrize("scorer", ["snapkv", "h2o", "random"])
def test_sliding_layers_spend_the_budget_inside_their_window(scorer):
  """Gemma 3's layout (local layers around a global one): with a budget of at least the window, a local layer
  keeps exactly its window, so on an all-local model the press is lossless (logits equal the full cache's),
  and on a mixed model the local layers hold ``window`` slots while the global layer holds the budget."""
  local = ModelConfig.tiny(model_type="mistral", sliding_window=6)  # every layer local
  params = init_params(local, jax.random.key(0), std=0.1)
  prompt = jax.random.randint(jax.random.key(1), (2, 20), 0, local.vocab_size)
  ref, _ = teacher_forced(params, local, FullCache, prompt[:, :14], prompt[:, 14:])
  got, _ = teacher_forced(params, local, Press(scorer, budget=9), prompt[:, :14], prompt[:, 14:])
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5, rtol=0)

  mixed = ModelConfig.tiny(
    model_type="gemma3_text", sliding_window=6, layer_types=("sliding_attention", "full_attention")
  )
  p2 = init_params(mixed, jax.random.key(0), std=0.1)
  cache = Press(scorer, budget=9).init(mixed, 2, 24)
  from jaxeff.models import forward

  _, cache = forward(p2, prompt[:, :14], jnp.broadcast_to(jnp.arange(14), (2, 14)), cache, config=mixed)
  kept = [np.asarray(cache.layers[i].pos[:, :14]) for i in range(2)]
  assert (kept[0] >= 0).sum(1).tolist() == [[6, 6]] * 2 and kept[0].max() == 13 and kept[0][kept[0] >= 0].min() == 8
  assert (kept[1] >= 0).sum(1).tolist() == [[9, 9]] * 2
