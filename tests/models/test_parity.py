"""Logits parity with transformers' PyTorch models (the oracle): prefill, cached decode, greedy generation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.generation import Sampler, SamplingParams
from jaxeff.kvcache import FullCache
from jaxeff.models import forward, load_hf, save_hf
from tests.hf_fixtures import FAMILIES, make_hf_model

pytestmark = pytest.mark.needs_torch

ATOL = 1e-4  # the bound for float32 logits


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request, tmp_path_factory):
  folder = tmp_path_factory.mktemp(request.param)
  hf_model = make_hf_model(request.param, folder)
  config, params = load_hf(folder, dtype=jnp.float32)
  return request.param, hf_model, config, params, folder


def _hf_logits(model, ids):
  import torch

  with torch.no_grad():
    return model(torch.tensor(np.asarray(ids))).logits.float().numpy()


def test_prefill_logits_match(pair):
  _, hf_model, config, params, _ = pair
  ids = np.random.RandomState(0).randint(0, config.vocab_size, (2, 13))
  pos = jnp.broadcast_to(jnp.arange(13), (2, 13))
  logits, _ = jax.jit(lambda p, t, q: forward(p, t, q, config=config))(params, ids, pos)
  np.testing.assert_allclose(np.asarray(logits), _hf_logits(hf_model, ids), atol=ATOL, rtol=0)


def test_cached_decode_logits_match(pair):
  _, hf_model, config, params, _ = pair
  ids = np.random.RandomState(1).randint(0, config.vocab_size, (2, 12))
  ref = _hf_logits(hf_model, ids)
  pos = jnp.broadcast_to(jnp.arange(12), (2, 12))
  cache = FullCache.init(config, batch=2, max_len=16)
  step = jax.jit(lambda p, t, q, c: forward(p, t, q, c, config=config, is_prefill=False))
  logits, cache = forward(params, ids[:, :5], pos[:, :5], cache, config=config)
  outs = [np.asarray(logits)]
  for t in range(5, 12):
    logits, cache = step(params, ids[:, t : t + 1], pos[:, t : t + 1], cache)
    outs.append(np.asarray(logits))
  np.testing.assert_allclose(np.concatenate(outs, axis=1), ref, atol=ATOL, rtol=0)
  np.testing.assert_array_equal(np.asarray(cache.length), [12, 12])


def test_greedy_generation_identical_token_for_token(pair):
  import torch

  _, hf_model, config, params, _ = pair
  prompts = [[5, 17, 99, 3, 64, 2, 7], [11, 12], [100, 101, 102, 9]]
  result = Sampler(config, params, pad_multiple=8).generate(
    prompts, SamplingParams(max_new_tokens=12, temperature=0.0), jax.random.key(0)
  )
  for b, p in enumerate(prompts):
    with torch.no_grad():
      out = hf_model.generate(
        torch.tensor([p]), max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None
      )
    assert result.tokens[b, 0].tolist() == out[0, len(p) :].tolist()


def test_save_round_trip_is_exact_and_loads_in_transformers(pair, tmp_path):
  from transformers import AutoModelForCausalLM

  family, hf_model, config, params, _ = pair
  save_hf(tmp_path / "out", config, params)
  reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
  assert type(reloaded) is type(hf_model)
  ids = np.random.RandomState(2).randint(0, config.vocab_size, (1, 9))
  np.testing.assert_array_equal(_hf_logits(reloaded, ids), _hf_logits(hf_model, ids))
  config2, params2 = load_hf(tmp_path / "out", dtype=jnp.float32)
  assert config2 == config
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params2)


def test_sharded_safetensors_round_trip(pair, tmp_path):
  _, _, config, params, _ = pair
  folder = save_hf(tmp_path / "sharded", config, params, max_shard_bytes=40_000)
  assert (folder / "model.safetensors.index.json").is_file()
  assert len(list(folder.glob("model-*-of-*.safetensors"))) > 2
  _, params2 = load_hf(folder, dtype=jnp.float32)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params2)


def test_bf16_checkpoint_loads_close_to_f32(pair, tmp_path):
  _, hf_model, config, params, _ = pair
  save_hf(tmp_path / "bf16", config, params, dtype=jnp.bfloat16)
  _, pb = load_hf(tmp_path / "bf16")
  assert pb["embed"].dtype == jnp.bfloat16
  ids = np.random.RandomState(3).randint(0, config.vocab_size, (1, 8))
  pos = jnp.arange(8)[None]
  lb, _ = forward(pb, ids, pos, config=config)
  lf, _ = forward(params, ids, pos, config=config)
  # bf16 weights + bf16 activations: compare against f32 with the bf16 tolerance (relative to logit scale).
  scale = float(np.abs(np.asarray(lf)).max())
  assert float(np.abs(np.asarray(lb, np.float32) - np.asarray(lf)).max()) < 0.05 * scale
