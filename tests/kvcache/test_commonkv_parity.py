"""CommonKV vs transformers' PyTorch models: after the surgery, the HF model with K/V weights replaced by
``Bk A`` / ``Bv A`` gives the same logits as jaxeff's latent model (prefill and decode through the latent cache)."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.kvcache.commonkv import LatentCache, compress
from jaxeff.models import forward, load_hf
from tests.hf_fixtures import make_hf_model

pytestmark = pytest.mark.needs_torch


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_surgery_matches_transformers_with_factorised_weights(family, tmp_path):
  import torch

  hf = make_hf_model(family, tmp_path)
  config, params = load_hf(tmp_path, dtype=jnp.float32)
  _, pc, spec, _ = compress(config, params, group_size=2, rank=24)  # max rank 64: a real truncation
  K, H = config.n_kv_heads, config.head_dim
  with torch.no_grad():
    for i, layer in enumerate(hf.model.layers):
      a = pc["layers"][i]["attn"]
      A = np.asarray(a["kv_down"], np.float64)
      for name, up in (("k_proj", "k_up"), ("v_proj", "v_up")):
        w = np.asarray(a[up], np.float64).reshape(K * H, -1) @ A
        getattr(layer.self_attn, name).weight.copy_(torch.tensor(w, dtype=torch.float32))
  ids = np.random.RandomState(0).randint(0, config.vocab_size, (2, 14))
  with torch.no_grad():
    ref = hf(torch.tensor(ids)).logits.float().numpy()
  pos = jnp.broadcast_to(jnp.arange(14), (2, 14))
  full, _ = forward(pc, jnp.asarray(ids), pos, config=config)
  np.testing.assert_allclose(np.asarray(full), ref, atol=1e-4)
  # prefill 10 tokens into the latent cache, decode the rest one by one
  cache = LatentCache.init(config, spec, 2, 16)
  lg, cache = forward(pc, jnp.asarray(ids[:, :10]), pos[:, :10], cache, config=config)
  outs = [lg]
  for t in range(10, 14):
    lg, cache = forward(pc, jnp.asarray(ids[:, t : t + 1]), pos[:, t : t + 1], cache, config=config)
    outs.append(lg)
  np.testing.assert_allclose(np.asarray(jnp.concatenate(outs, 1)), ref, atol=1e-4)
