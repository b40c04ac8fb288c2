"""flash_attention (the trainer's attention): values and gradients equal the masked-softmax oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.attention import TrainingAttention, flash_attention, reference_attention
from jaxeff.attention.dense import _default_flash_block, masked_attention, position_mask
from jaxeff.config import ModelConfig
from jaxeff.models import init_params
from jaxeff.training.trainer import masked_nll


def _inputs(T, N=4, K=2, H=8, seed=0):
  rng = np.random.RandomState(seed)
  q = jnp.asarray(rng.randn(2, T, N, H), jnp.float32)
  k = jnp.asarray(rng.randn(2, T, K, H), jnp.float32)
  v = jnp.asarray(rng.randn(2, T, K, H), jnp.float32)
  w = jnp.asarray(rng.randn(2, T, N, H), jnp.float32)  # a random cotangent
  # row 0 plain; row 1 with left padding (positions shifted, -1 first) and right padding
  p1 = np.arange(T) - 3
  p1[:3] = -1
  p1[T - 4 :] = -1
  pos = jnp.asarray(np.stack([np.arange(T), p1]))
  return q, k, v, w, pos


@pytest.mark.parametrize("window", [None, 5, 23])
@pytest.mark.parametrize("T, block", [(37, 8), (64, 16), (50, 64)])
def test_flash_values_and_gradients_equal_reference(T, block, window):
  """Blocks that do not divide T, one block larger than T, sliding windows, GQA, padding on both sides."""
  q, k, v, w, pos = _inputs(T)
  valid = (pos >= 0)[:, :, None, None]

  def loss(fn):
    return lambda q, k, v: jnp.sum(fn(q, k, v) * w * valid)

  flash = lambda q, k, v: flash_attention(q, k, v, pos, pos, window=window, block=block)
  ref = lambda q, k, v: reference_attention(q, k, v, pos, pos, window)
  got, want = flash(q, k, v), ref(q, k, v)
  np.testing.assert_allclose(np.asarray(got * valid), np.asarray(want * valid), atol=2e-6)
  assert float(jnp.max(jnp.abs(got * (1 - valid)))) == 0.0  # padding queries output zeros
  g_got = jax.grad(loss(flash), (0, 1, 2))(q, k, v)
  g_want = jax.grad(loss(ref), (0, 1, 2))(q, k, v)
  for a, b in zip(g_got, g_want):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=5e-6)


def test_flash_bfloat16_close_to_float32_oracle():
  q, k, v, w, pos = _inputs(64)
  bf = lambda x: x.astype(jnp.bfloat16)
  got = flash_attention(bf(q), bf(k), bf(v), pos, pos, block=16)
  assert got.dtype == jnp.bfloat16
  want = reference_attention(q, k, v, pos, pos)
  valid = np.asarray(pos >= 0)
  np.testing.assert_allclose(np.asarray(got, np.float32)[valid], np.asarray(want)[valid], atol=5e-2)
  g = jax.grad(lambda q: jnp.sum(flash_attention(q, bf(k), bf(v), pos, pos, block=16).astype(jnp.float32)))(bf(q))
  assert g.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(g.astype(jnp.float32))))


def test_flash_rejects_cross_attention_and_bad_heads():
  q, k, v, _, pos = _inputs(16)
  with pytest.raises(ValueError, match="self-attention"):
    flash_attention(q, k[:, :8], v[:, :8], pos, pos[:, :8])
  with pytest.raises(ValueError, match="multiple"):
    flash_attention(q[:, :, :3], k, v, pos, pos)
  with pytest.raises(ValueError, match="block"):
    flash_attention(q, k, v, pos, pos, block=0)


def test_training_loss_and_gradient_equal_dense_model():
  """The trainer's loss (TrainingAttention) has the value and gradient of the model under Dense."""
  from jaxeff.attention import Dense
  from jaxeff.models import forward

  cfg = ModelConfig.tiny(sliding_window=6, layer_types=("sliding_attention", "full_attention"))
  params = init_params(cfg, jax.random.key(0), std=0.1)
  toks = jax.random.randint(jax.random.key(1), (2, 40), 0, cfg.vocab_size)
  tgt = jnp.roll(toks, -1, axis=1)
  m = jnp.ones(toks.shape, jnp.float32)

  def dense_nll(p):
    pos = jnp.broadcast_to(jnp.arange(40), (2, 40))
    logits, _ = forward(p, toks, pos, config=cfg, attention=Dense())
    logp = jax.nn.log_softmax(logits, -1)
    return -jnp.sum(jnp.take_along_axis(logp, tgt[..., None], -1))

  got, g_got = jax.value_and_grad(lambda p: masked_nll(p, toks, tgt, m, config=cfg)[0])(params)
  want, g_want = jax.value_and_grad(dense_nll)(params)
  np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5, rtol=1e-4)
  assert TrainingAttention()(*_inputs(8)[:3], *[_inputs(8)[4]] * 2).shape == (2, 8, 4, 8)


def _default_tile_equals_reference(T, rtol, atol):
  """``flash_attention`` at its default tile: the loss and its gradients equal the masked-softmax oracle's."""
  q, k, v, w, pos = _inputs(T)
  valid = (pos >= 0)[:, :, None, None]
  flash = lambda q, k, v: jnp.sum(flash_attention(q, k, v, pos, pos) * w * valid)
  ref = lambda q, k, v: jnp.sum(reference_attention(q, k, v, pos, pos) * w * valid)
  np.testing.assert_allclose(float(flash(q, k, v)), float(ref(q, k, v)), rtol=rtol)
  for a, b in zip(jax.grad(flash, (0, 1, 2))(q, k, v), jax.grad(ref, (0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol)


def test_flash_default_block_equals_reference():
  """The default tile (one padded tile at these shapes: T = 37 -> 40) gives the oracle's values and gradients."""
  _default_tile_equals_reference(37, rtol=1e-5, atol=5e-6)


def test_flash_long_default_tile_is_256_and_equals_reference():
  """From 2,048 tokens the default tile is at least 256 (the batch-and-heads rule alone gives 128 at (2, 2048, 8,
  32)); at 2,100 tokens (256 does not divide it, the last tile padded) values and gradients equal the oracle."""
  assert _default_flash_block(2, 2048, 8, 32) == 256
  assert _default_flash_block(4, 1024, 8, 32) == 128  # below 2,048 tokens the rule alone
  assert _default_flash_block(2, 2100, 4, 8) == 256  # _inputs' shape
  _default_tile_equals_reference(2100, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("window", [None, 9])
def test_flash_softcap_values_and_gradients_equal_reference(window):
  """Gemma 2's attention-logit cap c tanh(s / c): forward through the tiles, backward with the tanh term."""
  q, k, v, w, pos = _inputs(40)
  q, k = 3 * q, 3 * k  # scores of a few units, where a cap of 1 bends them hard
  valid = (pos >= 0)[:, :, None, None]
  cap = 1.0
  flash = lambda q, k, v: flash_attention(q, k, v, pos, pos, window=window, block=16, softcap=cap)
  ref = lambda q, k, v: masked_attention(q, k, v, position_mask(pos, pos, window), softcap=cap)
  plain = masked_attention(q, k, v, position_mask(pos, pos, window))
  assert float(jnp.max(jnp.abs((ref(q, k, v) - plain) * valid))) > 0.1  # the cap changes the answer
  np.testing.assert_allclose(np.asarray(flash(q, k, v) * valid), np.asarray(ref(q, k, v) * valid), atol=2e-6)
  loss = lambda fn: lambda q, k, v: jnp.sum(fn(q, k, v) * w * valid)
  for a, b in zip(jax.grad(loss(flash), (0, 1, 2))(q, k, v), jax.grad(loss(ref), (0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
