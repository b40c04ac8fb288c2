"""Attention-logit soft-capping (Gemma 2's ``attn_logit_softcapping``; Gemma 3 where a config sets it): every
exact path against a plain NumPy oracle, the whole model against transformers' Gemma 2 (whose eager attention
applies the cap) past the masked-softmax path, the gradient the trainer takes, and refusal by name where a
backend or cache does not implement the cap. ``tests/models/test_parity.py`` runs the ``gemma2`` family (cap 1.0)
through prefill, cached decode, greedy generation and save/load."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.attention import Dense
from jaxeff.attention.dense import (
  TrainingAttention,
  blockwise_attention,
  masked_attention,
  position_mask,
  tiled_cache_attention,
)
from jaxeff.attention.proxy import ProxyAttention
from jaxeff.config import ModelConfig, UnsupportedConfigError
from jaxeff.kvcache import FullCache, Windowed
from jaxeff.kvcache.eviction import Press
from jaxeff.kvcache.quantized import Quantized
from jaxeff.models import forward, init_params
from jaxeff.models.decoder import check_softcap
from tests.hf_fixtures import tiny_gemma

CAP = 1.5


def numpy_capped_attention(q, k, v, qpos, kpos, window, cap):
  """Loops over rows and heads: softmax(cap * tanh(q.k / (cap sqrt(H)))) v over visible keys."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  B, T, N, H = q.shape
  G = N // k.shape[2]
  out = np.zeros_like(q)
  for b in range(B):
    for t in range(T):
      vis = (kpos[b] >= 0) & (kpos[b] <= qpos[b, t])
      if window is not None:
        vis &= qpos[b, t] - kpos[b] < window
      if not vis.any():  # a padding query: compared only on valid rows
        continue
      for n in range(N):
        s = cap * np.tanh(k[b, :, n // G] @ q[b, t, n] / np.sqrt(H) / cap)
        e = np.where(vis, np.exp(s - s[vis].max()), 0.0)
        out[b, t, n] = e @ v[b, :, n // G] / e.sum()
  return out


@pytest.fixture(scope="module")
def qkv():
  r = np.random.RandomState(0)
  B, T, N, K, H = 2, 40, 4, 2, 8
  q, k, v = (r.randn(B, T, n, H).astype(np.float32) * 2 for n in (N, K, K))  # scores well past the cap
  pos = np.broadcast_to(np.arange(T), (B, T)).copy()
  pos[1, :5] = -1  # a padded row
  return q, k, v, pos


@pytest.mark.parametrize("window", [None, 7])
def test_every_exact_path_matches_the_numpy_oracle(qkv, window):
  q, k, v, pos = qkv
  want = numpy_capped_attention(q, k, v, pos, pos, window, CAP)
  valid = (pos >= 0)[:, :, None, None]
  uncapped = numpy_capped_attention(q, k, v, pos, pos, window, 1e6)
  assert np.abs(np.where(valid, want - uncapped, 0)).max() > 0.1  # the cap changes the answer
  got = {
    "masked": masked_attention(q, k, v, position_mask(pos, pos, window), softcap=CAP),
    "blockwise": blockwise_attention(q, k, v, pos, pos, window=window, block_q=16, block_k=8, softcap=CAP),
    "Dense": Dense()(q, k, v, pos, pos, window=window, softcap=CAP),
    "tiled": tiled_cache_attention(
      q,
      lambda j: tuple(jax.lax.dynamic_slice_in_dim(jnp.asarray(x), j * 8, 8, 1) for x in (k, v, pos)),
      5,
      pos,
      window=window,
      softcap=CAP,
    ),
  }
  for name, out in got.items():
    np.testing.assert_allclose(np.where(valid, np.asarray(out), 0), np.where(valid, want, 0), atol=2e-5, err_msg=name)


def test_training_gradient_matches_the_masked_softmax(qkv):
  q, k, v, pos = qkv
  pos = np.broadcast_to(np.arange(q.shape[1]), pos.shape)

  def loss(backend):
    return lambda q_, k_, v_: jnp.sum(jnp.sin(backend(q_, k_, v_, pos, pos, window=None, softcap=CAP)))

  ref = lambda q_, k_, v_, **kw: masked_attention(q_, k_, v_, position_mask(pos, pos), softcap=CAP)
  want = jax.grad(lambda *a: jnp.sum(jnp.sin(ref(*a))), argnums=(0, 1, 2))(q, k, v)
  got = jax.grad(loss(TrainingAttention()), argnums=(0, 1, 2))(q, k, v)
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-4)


@pytest.fixture(scope="module")
def model():
  cfg = tiny_gemma(n_layers=4, sliding_window=6, layer_types=("sliding_attention", "full_attention") * 2)
  cfg = dataclasses.replace(cfg, attn_logit_softcap=0.8)
  params = init_params(cfg, jax.random.key(0), std=0.2)
  toks = jax.random.randint(jax.random.key(1), (2, 30), 0, cfg.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(30), (2, 30))
  return cfg, params, toks, pos


@pytest.mark.parametrize(
  "factory, atol",
  [(FullCache, 1e-5), (Windowed(slack=4), 1e-5), (Press("snapkv", budget=1.0), 1e-5), (Quantized(bits=8), 0.05)],
  ids=["full", "windowed", "press-full-budget", "int8"],
)
def test_decode_through_each_capped_cache_matches_the_prefill(model, factory, atol):
  cfg, params, toks, pos = model
  want, _ = forward(params, toks, pos, config=cfg)
  cache = factory.init(cfg, 2, 32)
  logits, cache = forward(params, toks[:, :20], pos[:, :20], cache, config=cfg)
  outs = [logits]
  step = jax.jit(lambda p, t, q, c: forward(p, t, q, c, config=cfg, is_prefill=False))
  for t in range(20, 30):
    logits, cache = step(params, toks[:, t : t + 1], pos[:, t : t + 1], cache)
    outs.append(logits)
  np.testing.assert_allclose(np.concatenate(outs, 1), np.asarray(want), atol=atol)
  uncapped = dataclasses.replace(cfg, attn_logit_softcap=None)
  assert np.abs(np.asarray(forward(params, toks, pos, config=uncapped)[0] - want)).max() > 0.05


def test_backends_and_caches_without_the_cap_are_refused_by_name(model):
  from jaxeff.kvcache.commonkv import CommonKV, compress

  cfg, params, toks, pos = model
  with pytest.raises(ValueError, match=r"attn_logit_softcap=0.8\) and ProxyAttention does not implement"):
    forward(params, toks, pos, config=cfg, attention=ProxyAttention())
  _, lparams, spec, _ = compress(cfg, params, group_size=2, ratio=0.5, multiple=8)
  latent = CommonKV(spec).init(cfg, 2, 32)
  with pytest.raises(ValueError, match="LatentCache does not implement"):
    forward(lparams, toks, pos, latent, config=cfg)
  assert check_softcap(ModelConfig.tiny(), ProxyAttention(), latent) == {}  # no cap: nothing to refuse


def test_gemma2_config_defaults_are_transformers():
  pytest.importorskip("transformers")
  from transformers import Gemma2Config

  from tests.hf_fixtures import COMMON

  hf = dict(COMMON, model_type="gemma2", num_hidden_layers=4, head_dim=16)
  cfg = ModelConfig.from_hf_config(hf)
  ref = Gemma2Config(**{k: v for k, v in hf.items() if k != "model_type"})
  assert list(cfg.layer_types) == ref.layer_types  # every other layer global
  assert (cfg.attn_logit_softcap, cfg.final_logit_softcap) == (ref.attn_logit_softcapping, ref.final_logit_softcapping)
  assert (cfg.rope_theta, cfg.rope_local_theta, cfg.qk_norm) == (ref.rope_parameters["rope_theta"], None, False)
  assert cfg.sliding_window == ref.sliding_window and cfg.query_pre_attn_scalar == ref.query_pre_attn_scalar
  off = ModelConfig.from_hf_config({**hf, "attn_logit_softcapping": None, "final_logit_softcapping": None})
  assert (off.attn_logit_softcap, off.final_logit_softcap) == (None, None)
  assert ModelConfig.from_hf_config(cfg.to_hf_config()) == cfg
  with pytest.raises(UnsupportedConfigError, match="one RoPE base on every layer"):
    dataclasses.replace(cfg, rope_local_theta=100.0).to_hf_config()
  with pytest.raises(ValueError, match="attn_logit_softcap must be a positive number"):
    dataclasses.replace(cfg, attn_logit_softcap=-1.0)


def test_gemma3_config_reads_the_attention_cap_where_set():
  from tests.models.test_gemma3 import LEGACY

  assert ModelConfig.from_hf_config(LEGACY).attn_logit_softcap is None
  assert ModelConfig.from_hf_config({**LEGACY, "attn_logit_softcapping": 50.0}).attn_logit_softcap == 50.0


def test_long_prompt_matches_transformers_gemma2(tmp_path):
  """Past 16 tokens ``Dense`` takes the blockwise path (the parity suite's 13-token prompts stay masked)."""
  torch = pytest.importorskip("torch")
  from jaxeff.models import load_hf
  from tests.hf_fixtures import make_hf_model

  hf_model = make_hf_model("gemma2", tmp_path)
  cfg, params = load_hf(tmp_path, dtype=jnp.float32)
  assert cfg.attn_logit_softcap == 1.0
  ids = np.random.RandomState(3).randint(0, cfg.vocab_size, (2, 50))
  pos = jnp.broadcast_to(jnp.arange(50), (2, 50))
  got, _ = jax.jit(lambda p, t, q: forward(p, t, q, config=cfg, attention=Dense(block_q=16, block_k=16)))(
    params, ids, pos
  )
  with torch.no_grad():
    want = hf_model(torch.tensor(ids)).logits.numpy()
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)
