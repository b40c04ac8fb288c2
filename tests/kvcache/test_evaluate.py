"""Quality through the cache: with the full cache, decoded teacher-forced log-probs equal one forward pass."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxeff.config import ModelConfig
from jaxeff.kvcache import FullCache, Quantized
from jaxeff.kvcache.evaluate import _teacher_forced
from jaxeff.models.decoder import forward, init_params


def test_full_cache_teacher_forcing_equals_a_single_forward():
  cfg = ModelConfig.tiny()
  params = init_params(cfg, jax.random.key(0), std=0.1)
  rows = np.asarray(jax.random.randint(jax.random.key(1), (2, 40), 0, cfg.vocab_size))
  lp, pred = _teacher_forced(params, cfg, FullCache, rows[:, :30], rows[:, 30:])
  logits, _ = forward(params, jnp.asarray(rows), jnp.broadcast_to(jnp.arange(40), (2, 40)), config=cfg)
  want = jnp.take_along_axis(jax.nn.log_softmax(logits[:, 29:39], -1), jnp.asarray(rows[:, 30:, None]), -1)[..., 0]
  np.testing.assert_allclose(np.asarray(lp), np.asarray(want), atol=1e-4)
  np.testing.assert_array_equal(np.asarray(pred), np.asarray(logits[:, 29:39].argmax(-1)))
  lq, _ = _teacher_forced(params, cfg, Quantized(bits=4, group_size=16), rows[:, :30], rows[:, 30:])
  assert 0 < float(jnp.abs(lq - lp).max()) < 1.0  # the compressed cache changes the scores, a little
