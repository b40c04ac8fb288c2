"""Quality through the cache: with the full cache, decoded teacher-forced log-probs equal one forward pass."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxeff.config import ModelConfig
from jaxeff.evals.cached import teacher_forced
from jaxeff.kvcache import FullCache, Quantized
from jaxeff.models.decoder import forward, init_params


def test_full_cache_teacher_forcing_equals_a_single_forward():
  cfg = ModelConfig.tiny()
  params = init_params(cfg, jax.random.key(0), std=0.1)
  rows = np.asarray(jax.random.randint(jax.random.key(1), (2, 40), 0, cfg.vocab_size))
  lp, pred = teacher_forced(params, cfg, FullCache, rows[:, :30], rows[:, 30:])
  logits, _ = forward(params, jnp.asarray(rows), jnp.broadcast_to(jnp.arange(40), (2, 40)), config=cfg)
  want = jnp.take_along_axis(jax.nn.log_softmax(logits[:, 29:39], -1), jnp.asarray(rows[:, 30:, None]), -1)[..., 0]
  np.testing.assert_allclose(np.asarray(lp), np.asarray(want), atol=1e-4)
  np.testing.assert_array_equal(np.asarray(pred), np.asarray(logits[:, 29:39].argmax(-1)))
  lq, _ = teacher_forced(params, cfg, Quantized(bits=4, group_size=16), rows[:, :30], rows[:, 30:])
  assert 0 < float(jnp.abs(lq - lp).max()) < 1.0  # the compressed cache changes the scores, a little


def test_prefill_backend_is_the_one_given():
  """``attention=``: a sparse ProxyAttn prefill changes the cached context's scores; with teacher forcing over the
  same rows, ProxyAttn's own forward pass is the oracle."""
  from jaxeff.attention import ProxyAttention

  cfg = ModelConfig.tiny()
  params = init_params(cfg, jax.random.key(0), std=0.3)
  rows = np.asarray(jax.random.randint(jax.random.key(1), (1, 136), 0, 256))
  proxy = ProxyAttention(gamma=0.5, block_size=16, min_budget_tokens=16)
  dense, _ = teacher_forced(params, cfg, FullCache, rows[:, :128], rows[:, 128:])
  sparse, _ = teacher_forced(params, cfg, FullCache, rows[:, :128], rows[:, 128:], proxy)
  assert float(jnp.abs(sparse - dense).max()) > 1e-3
  # the first follow token is scored from the prefill's last logits: ProxyAttn's forward over the context
  logits, _ = forward(params, jnp.asarray(rows[:, :128]), jnp.arange(128)[None], config=cfg, attention=proxy)
  want = jax.nn.log_softmax(logits[:, -1], -1)[0, rows[0, 128]]
  np.testing.assert_allclose(float(sparse[0, 0]), float(want), atol=1e-4)
