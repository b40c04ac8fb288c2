"""Judge Q: the alignment loss, training only the soft tokens, and the press that drops them from the cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.config import ModelConfig
from jaxeff.evals.cached import teacher_forced
from jaxeff.kvcache import FullCache
from jaxeff.kvcache.eviction import query_key_probs
from jaxeff.kvcache.judgeq import JudgeQPress, SoftTokens, extend_prompt
from jaxeff.models import forward, init_params
from jaxeff.training.judgeq import JudgeQConfig, alignment_loss, attention_maps, train_judgeq


@pytest.fixture(scope="module")
def model():
  cfg = ModelConfig.tiny()
  return cfg, init_params(cfg, jax.random.key(0), std=0.1)


class _Full:
  init = staticmethod(FullCache.init)


def test_attention_maps_equal_explicit_probabilities(model):
  """The probe's map = the mean of softmax rows computed from the layer's own q and k (layer 0 by hand)."""
  cfg, params = model
  from jaxeff.models.decoder import qkv_projection, rms_norm, rope_inv_freq

  toks = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (2, 20)))
  maps = attention_maps(params, cfg, toks, (15, 20), 15)  # [L, B, N, 15]
  pos = jnp.broadcast_to(jnp.arange(20), (2, 20))
  x = params["embed"][toks]
  lp = params["layers"][0]
  q, k, _ = qkv_projection(lp["attn"], rms_norm(x, lp["attn_norm"], cfg.rms_norm_eps), pos, cfg, rope_inv_freq(cfg))
  p = query_key_probs(q[:, 15:], pos[:, 15:], k, pos)[..., :15].mean(3)  # [B, K, G, 15]
  np.testing.assert_allclose(np.asarray(maps[0]), np.asarray(p.reshape(2, -1, 15)), atol=1e-6)


def test_attention_maps_follow_each_layers_window_and_the_attention_cap():
  """On local / global layers (Gemma 3) with a capped model, the probe's maps are the model's own attention: a
  local layer puts nothing outside its window, and the maps equal ``query_key_probs`` under window and cap."""
  import dataclasses

  from jaxeff.models.decoder import embed_tokens, project, rms_norm, rope_inv_freq
  from tests.hf_fixtures import tiny_gemma

  cfg = tiny_gemma(sliding_window=6, layer_types=("sliding_attention", "full_attention"))
  cfg = dataclasses.replace(cfg, attn_logit_softcap=0.5)
  params = init_params(cfg, jax.random.key(3), std=0.2)
  toks = jnp.asarray(np.random.RandomState(2).randint(0, cfg.vocab_size, (2, 20)))
  maps = attention_maps(params, cfg, toks, (15, 20), 15)  # [L, B, N, 15]
  pos = jnp.broadcast_to(jnp.arange(20), (2, 20))
  lp = params["layers"][0]
  h = rms_norm(embed_tokens(params, toks, cfg), lp["attn_norm"], cfg.rms_norm_eps)
  q, k, _, _ = project(lp["attn"], h, pos, cfg, rope_inv_freq(cfg, 0))
  want = query_key_probs(q[:, 15:], pos[:, 15:], k, pos, window=6, softcap=0.5)[..., :15].mean(3)
  np.testing.assert_allclose(np.asarray(maps[0]), np.asarray(want.reshape(2, -1, 15)), atol=1e-6)
  assert float(jnp.abs(maps[0][..., :10]).max()) == 0.0  # rows 15-19 see keys > 9 only
  assert float(maps[1][..., :10].min()) > 0.0  # the global layer sees them all
  uncapped = query_key_probs(q[:, 15:], pos[:, 15:], k, pos, window=6)[..., :15].mean(3)
  assert float(jnp.abs(uncapped - want).max()) > 1e-3  # the cap is on the path


def test_one_soft_token_at_the_response_embedding_has_zero_loss(model):
  """n = 1 soft token initialised to the embedding of a one-token response reproduces its attention."""
  cfg, params = model
  rng = np.random.RandomState(1)
  prompt = jnp.asarray(rng.randint(0, cfg.vocab_size, (2, 16)))
  r = 7
  resp = attention_maps(params, cfg, jnp.concatenate([prompt, jnp.full((2, 1), r)], 1), (16, 17), 16)
  p, tk, _ = extend_prompt(params, prompt, jnp.broadcast_to(jnp.arange(16), (2, 16)), params["embed"][r : r + 1])
  soft = attention_maps(p, cfg, tk, (16, 17), 16)
  assert float(alignment_loss(soft, resp)) < 1e-12
  p2, tk2, _ = extend_prompt(params, prompt, jnp.broadcast_to(jnp.arange(16), (2, 16)), params["embed"][3:4])
  assert float(alignment_loss(attention_maps(p2, cfg, tk2, (16, 17), 16), resp)) > 1e-8


def test_training_lowers_the_loss_and_touches_only_the_soft_tokens(model):
  cfg, params = model
  rng = np.random.RandomState(2)
  prompts = rng.randint(0, cfg.vocab_size, (16, 24))
  resp = rng.randint(0, cfg.vocab_size, (16, 4))
  soft, hist, tree = train_judgeq(
    params, cfg, prompts, resp, JudgeQConfig(n_soft=4, steps=40, batch_size=16, lr=3e-2), progress=False
  )
  assert hist[-1] < 0.7 * hist[0]
  for a, b in zip(jax.tree.leaves(tree["model"]), jax.tree.leaves(params)):
    assert a.dtype == b.dtype and bool(jnp.array_equal(a, b))  # frozen model bit-identical
  assert soft.emb.shape == (4, cfg.d_model)
  kl = train_judgeq(params, cfg, prompts, resp, JudgeQConfig(n_soft=4, steps=5, loss="kl"), progress=False)[1]
  assert np.isfinite(kl).all()
  mx = JudgeQConfig(n_soft=4, steps=5, target_pool="max", head_average=True, layers=(1,))
  assert np.isfinite(train_judgeq(params, cfg, prompts, resp, mx, progress=False)[1]).all()
  with pytest.raises(ValueError, match="target_pool"):
    JudgeQConfig(target_pool="median")


def test_press_drops_soft_tokens_and_full_budget_is_exact(model, tmp_path):
  cfg, params = model
  rng = np.random.RandomState(3)
  soft = SoftTokens(rng.randn(5, cfg.d_model).astype(np.float32))
  soft = SoftTokens.load(soft.save(tmp_path / "jq"))
  ctx, fol = rng.randint(0, cfg.vocab_size, (2, 40)), rng.randint(0, cfg.vocab_size, (2, 6))
  ref, _ = teacher_forced(params, cfg, _Full, ctx, fol)
  got, _ = teacher_forced(params, cfg, JudgeQPress(soft, budget=1.0), ctx, fol)
  assert float(jnp.max(jnp.abs(got - ref))) == 0.0  # soft tokens never affect later positions
  T = 40
  press = JudgeQPress(soft, budget=0.25)
  p, tk, pos = press.extend_prompt(params, jnp.asarray(ctx), jnp.broadcast_to(jnp.arange(T), (2, T)))
  _, cache = forward(p, tk, pos, press.init(cfg, 2, T + 6), config=cfg, is_prefill=True)
  for layer in range(cfg.n_layers):
    kp = np.asarray(cache.layers[layer].pos)
    assert kp.max() < T  # no soft-token position in the cache
    assert np.all((kp >= 0).sum(1) == 10)


def test_judgeq_scores_are_the_soft_queries_attention(model):
  """With pooling off and no protected window, the kept set = top-k of the soft tokens' mean attention."""
  cfg, params = model
  rng = np.random.RandomState(4)
  soft = SoftTokens(rng.randn(3, cfg.d_model).astype(np.float32))
  ctx = jnp.asarray(rng.randint(0, cfg.vocab_size, (1, 30)))
  p_ext, t_ext, _ = extend_prompt(params, ctx, jnp.arange(30)[None], soft.emb)
  maps = attention_maps(p_ext, cfg, t_ext, (30, 33), 30)
  press = JudgeQPress(soft, budget=6, kernel_size=1, protect_window=False)
  p, tk, pos = press.extend_prompt(params, ctx, jnp.arange(30)[None])
  _, cache = forward(p, tk, pos, press.init(cfg, 1, 31), config=cfg, is_prefill=True)
  K = cfg.n_kv_heads
  for layer in range(cfg.n_layers):
    score = np.asarray(maps[layer, 0]).reshape(K, -1, 30).mean(1)
    for h in range(K):
      want = sorted(np.argsort(-score[h])[:6])
      assert list(np.asarray(cache.layers[layer].pos)[0, :6, h]) == want


def test_bad_soft_tokens_fail_clearly(tmp_path):
  with pytest.raises(ValueError, match="soft tokens"):
    JudgeQPress(None, budget=0.1)
  with pytest.raises(FileNotFoundError, match="judgeq train"):
    SoftTokens.load(tmp_path)
  with pytest.raises(ValueError, match=r"\[n >= 1, d\]"):
    SoftTokens(np.zeros((0, 4)))


def test_training_data_uses_the_models_own_tokenizer(tmp_path):
  """With a non-byte tokenizer the prompts are windows of that tokenizer's stream of the stdlib corpus (no
  byte-level pass-key rows), and the responses are the model's greedy continuations of them."""
  from jaxeff.training import data as data_lib
  from jaxeff.training.judgeq import make_training_data

  texts = data_lib.corpus_texts("python", "validation", max_documents=30)
  bpe = data_lib.train_bpe(texts, 400)
  cfg = ModelConfig.tiny(vocab_size=400, n_layers=1)
  params = init_params(cfg, jax.random.key(0))
  kw = dict(n_examples=4, prompt_len=32, response_len=2, tokenizer=bpe, split="validation")
  prompts, responses = make_training_data(params, cfg, **kw)
  stream = np.concatenate(data_lib.tokenize_corpus("python", "validation", bpe))
  starts = np.lib.stride_tricks.sliding_window_view(stream, 32)
  assert prompts.shape == (4, 32) and all((starts == p).all(1).any() for p in prompts)
  assert responses.shape == (4, 2) and int(prompts.max()) < 400
