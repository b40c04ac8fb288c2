"""Quantized KV cache: codec error bounds, int4 packing, cache vs the full cache, real and analytic bytes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.config import ModelConfig
from jaxeff.kvcache.base import FullCache
from jaxeff.kvcache.quantized import QuantizedCache, dequantize, pack_int4, quantize, unpack_int4
from jaxeff.models.decoder import forward, init_params


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("axis", [-1, 1])
def test_codec_error_within_half_a_step(bits, axis):
  x = jax.random.normal(jax.random.key(0), (2, 32, 3, 16)) * 3
  codes, scale, mn = quantize(x, bits, axis=axis, group_size=8)
  y = dequantize(codes, scale, mn, axis=axis, group_size=8)
  step = jnp.repeat(scale, 8, axis=axis)
  assert bool((jnp.abs(y - x) <= step / 2 + 1e-6).all())
  assert int(codes.max()) <= 2**bits - 1
  # the group's extremes are exact (min is stored, max = min + (2^b - 1) scale)
  np.testing.assert_allclose(np.asarray(y.max(axis)), np.asarray(x.max(axis)), rtol=1e-5, atol=1e-5)


def test_int4_pack_round_trip():
  codes = jax.random.randint(jax.random.key(1), (3, 5, 8), 0, 16).astype(jnp.uint8)
  packed = pack_int4(codes)
  assert packed.shape == (3, 5, 4) and packed.dtype == jnp.uint8
  np.testing.assert_array_equal(np.asarray(unpack_int4(packed)), np.asarray(codes))


def _decode_logits(cache, cfg, params, prompt_len=30, total=44):
  toks = jax.random.randint(jax.random.key(2), (2, total), 0, cfg.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(total), (2, total))
  # row 1 has a shorter (right-padded) prompt
  ppos = pos[:, :prompt_len].at[1, prompt_len - 5 :].set(-1)
  logits, cache = forward(params, toks[:, :prompt_len], ppos, cache, config=cfg)
  outs = []
  start = jnp.array([prompt_len, prompt_len - 5])
  for t in range(total - prompt_len):
    p = (start + t)[:, None]
    lg, cache = forward(params, toks[:, prompt_len + t : prompt_len + t + 1], p, cache, config=cfg)
    outs.append(lg[:, -1])
  return jnp.stack(outs, 1), cache


@pytest.mark.parametrize("key_mode", ["per_token", "per_channel"])
def test_cache_tracks_full_cache_and_int8_beats_int4(key_mode):
  cfg = ModelConfig.tiny()
  params = init_params(cfg, jax.random.key(0), std=0.1)
  full, _ = _decode_logits(FullCache.init(cfg, 2, 64), cfg, params)
  errs = {}
  for bits in (8, 4):
    q, cache = _decode_logits(
      QuantizedCache.init(cfg, 2, 64, bits=bits, key_mode=key_mode, group_size=16), cfg, params
    )
    errs[bits] = float(jnp.abs(q - full).max() / jnp.abs(full).max())
    # dequantized entries are within half a quantization step of the exact keys/values
    assert int(cache.length[0]) == 44 and int(cache.length[1]) == 39
  assert errs[8] < 0.02 and errs[4] < 0.25 and errs[8] < errs[4] / 4, errs


def test_per_channel_residual_holds_the_open_group_exactly():
  cfg = ModelConfig.tiny()
  params = init_params(cfg, jax.random.key(0), std=0.1)
  _, qc = _decode_logits(QuantizedCache.init(cfg, 2, 64, bits=4, key_mode="per_channel", group_size=16), cfg, params)
  _, fc = _decode_logits(FullCache.init(cfg, 2, 64), cfg, params)
  k, _ = qc.dequantized(0)
  exact = fc.layers[0].k
  # row 0 holds 44 tokens: groups [0,16) and [16,32) are quantized, [32,44) is the exact residual
  np.testing.assert_allclose(np.asarray(k[0, 32:44]), np.asarray(exact[0, 32:44]), atol=1e-6)
  assert float(jnp.abs(k[0, :32] - exact[0, :32]).max()) > 1e-4  # quantized part is not exact


def test_bytes_per_token_matches_the_arrays():
  cfg = ModelConfig.tiny()  # K=2 kv heads, head_dim 16, 2 layers
  for bits in (8, 4):
    c = QuantizedCache.init(cfg, 1, 64, bits=bits, group_size=16)
    # codes: 2 (k, v) * K * H * bits/8 ; stats: 2 (k, v) * 2 (scale, min) * 4 bytes * K * H/g
    want = cfg.n_layers * (2 * 2 * 16 * bits / 8 + 2 * 2 * 4 * 2 * 1)
    assert c.bytes_per_token() == want
    per_slot = sum(
      (x.size * x.dtype.itemsize) / 64
      for e in c.layers
      for x in (e.k_codes, e.v_codes, e.k_scale, e.k_min, e.v_scale, e.v_min)
    )
    assert per_slot == want
  full_bytes = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 4  # float32 k and v
  assert QuantizedCache.init(cfg, 1, 64, bits=4).bytes_per_token() == full_bytes / 4  # stats dominate at H=16


def test_bad_settings_fail():
  cfg = ModelConfig.tiny()
  with pytest.raises(ValueError, match="bits"):
    QuantizedCache.init(cfg, 1, 64, bits=3)
  with pytest.raises(ValueError, match="key_mode"):
    QuantizedCache.init(cfg, 1, 64, key_mode="per_head")
  with pytest.raises(ValueError, match="multiple of group_size"):
    QuantizedCache.init(cfg, 1, 60, key_mode="per_channel", group_size=16)


@pytest.mark.parametrize("bits", [8, 4])
def test_tiled_attention_equals_attention_over_the_whole_dequantized_cache(bits):
  """Per-tile dequantization inside the loop (tile 16 over 50 slots: a shifted last tile; 37 filled, a hole)
  gives what dequantizing the whole cache and attending over it gives (an identity, float32)."""
  from jaxeff.attention.dense import masked_attention, position_mask

  cfg = ModelConfig.tiny()
  c = QuantizedCache.init(cfg, batch=2, max_len=50, bits=bits)
  kv = jax.random.normal(jax.random.key(0), (2, 37, cfg.n_kv_heads, cfg.head_dim))
  pos = jnp.broadcast_to(jnp.arange(37), (2, 37)).at[1, 30:].set(-1)
  c = c.prefill(0, kv, kv * 0.5 + 1, pos)
  q = jax.random.normal(jax.random.key(1), (2, 1, cfg.n_heads, cfg.head_dim))
  qp = jnp.array([[36], [29]])
  k, v = c.dequantized(0)
  want = masked_attention(q, k, v, position_mask(qp, c.layers[0].pos, 12))
  got = c.attend(0, q, qp, window=12, tile=16)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
