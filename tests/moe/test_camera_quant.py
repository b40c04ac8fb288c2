"""CAMERA-Q: quantizer bounds, GPTQ vs RTN, mixed precision by energy, bit-plane packing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.config import ModelConfig
from jaxeff.models import init_params
from jaxeff.models.moe import moe_dense
from jaxeff.moe.quant import (
  QuantConfig,
  assign_bits,
  dequant_matmul,
  gptq,
  pack_codes,
  quantize_layer,
  rtn,
  unpack_codes,
)


def test_rtn_round_trip_within_half_a_step_and_error_falls_with_bits():
  w = np.random.RandomState(0).randn(6, 64)
  errs = []
  for b in (1, 2, 3, 4, 8):
    codes, d, scale, _ = rtn(w, b, 16, return_grids=True)
    assert codes.min() >= 0 and codes.max() <= 2**b - 1
    g = w.reshape(6, 4, 16)
    step = (np.maximum(g.max(-1), 0) - np.minimum(g.min(-1), 0)) / (2**b - 1)
    np.testing.assert_allclose(scale, step, rtol=2.0**-11)  # the stored scale: float16
    assert np.array_equal(scale, scale.astype(np.float16))
    # half a stored step, plus what the float16 rounding of the step can push past the grid's end
    tol = scale / 2 + (2**b - 1) * np.abs(step - scale) + 1e-9
    assert np.all(np.abs(g - d.reshape(6, 4, 16)) <= tol[..., None])
    errs.append(np.abs(w - d).mean())
  assert all(a > b for a, b in zip(errs, errs[1:]))
  assert np.array_equal(rtn(w, 16, 16)[1], w)  # 16 bits: no-op


def test_gptq_with_identity_hessian_equals_rtn_and_beats_it_on_correlated_inputs():
  rng = np.random.RandomState(1)
  w = rng.randn(8, 32)
  bits = np.array([3, 2, 2, 1, 3, 2, 1, 2])
  np.testing.assert_allclose(gptq(w, np.eye(32), bits_rows=bits, group_size=16, damp=0.0), rtn(w, bits, 16)[1])
  x = rng.randn(400, 32) @ rng.randn(32, 32) * 0.5 + rng.randn(400, 1)  # correlated inputs
  H = x.T @ x
  bits = np.array([3, 2, 2, 4, 3, 2, 4, 2])  # (at 1 bit min-max grids leave GPTQ no room: about RTN's error)
  err = lambda q: np.sum((x @ (w - q).T) ** 2)
  assert err(gptq(w, H, bits_rows=bits, group_size=16)) < err(rtn(w, bits, 16)[1])
  cols = np.array([2] * 16 + [3] * 16)
  assert err(gptq(w, H, bits_cols=cols, group_size=8)) < err(rtn(w.T, cols, 8)[1].T)


def test_assign_bits_by_energy_and_mean_bits():
  qc = QuantConfig()
  assert abs(qc.mean_bits - 2.25) < 1e-9
  scores = np.random.RandomState(2).rand(100)
  b = assign_bits(scores, qc)
  assert np.bincount(b)[1:].tolist() == [15, 45, 40]
  order = np.argsort(-scores)
  assert set(b[order[:40]]) == {3} and set(b[order[-15:]]) == {1}


def test_quantized_layer_shares_bits_across_the_three_vectors_and_16_bits_is_identity():
  cfg = ModelConfig.tiny(
    model_type="qwen2_moe", qkv_bias=True, n_experts=4, experts_per_token=2, d_expert=8, d_shared=8, shared_gate=True
  )
  params = init_params(cfg, jax.random.key(0), std=0.3)
  mlp = params["layers"][0]["mlp"]
  x = jnp.asarray(np.random.RandomState(3).randn(64, cfg.d_model), jnp.float32)
  same = quantize_layer(mlp, np.full(40, 16), QuantConfig(bits=(16,), ratios=(1.0,), method="rtn"))
  for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(mlp)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-7)
  bits = np.full(40, 16)
  bits[3] = 1  # expert 0, channel 3 at 1 bit: only its gate row, up row and down column change
  q = quantize_layer(mlp, bits, QuantConfig(bits=(16, 1), ratios=(0.5, 0.5), method="rtn"))
  changed = lambda a, b: np.any(np.abs(np.asarray(a) - np.asarray(b)) > 1e-7)
  assert changed(q["gate"][0, 3], mlp["gate"][0, 3]) and changed(q["down"][0, :, 3], mlp["down"][0, :, 3])
  assert not changed(np.delete(np.asarray(q["gate"][0]), 3, 0), np.delete(np.asarray(mlp["gate"][0]), 3, 0))
  assert not changed(np.delete(np.asarray(q["down"][0]), 3, 1), np.delete(np.asarray(mlp["down"][0]), 3, 1))
  out = {
    m: quantize_layer(mlp, np.full(40, 2), QuantConfig(bits=(2,), ratios=(1.0,), method=m), x, cfg)
    for m in ("rtn", "gptq")
  }
  ref = moe_dense(mlp, x, cfg)
  e = {m: float(jnp.mean((moe_dense(v, x, cfg) - ref) ** 2)) for m, v in out.items()}
  assert e["gptq"] < e["rtn"], e


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_bit_plane_packing_round_trip_and_dequant_matmul(bits):
  rng = np.random.RandomState(4)
  codes = rng.randint(0, 2**bits, (6, 32))
  packed = pack_codes(codes, bits)
  assert packed.nbytes == bits * codes.size // 8
  np.testing.assert_array_equal(np.asarray(unpack_codes(packed, bits)), codes)
  w = rng.randn(6, 32)
  c, d, scale, zero = rtn(w, bits, 16, return_grids=True)  # the grids as stored (float16 scale)
  x = jnp.asarray(rng.randn(3, 32), jnp.float32)
  y = dequant_matmul(x, pack_codes(c, bits), jnp.asarray(scale, jnp.float32), jnp.asarray(zero, jnp.float32), bits, 16)
  np.testing.assert_allclose(np.asarray(y), np.asarray(x) @ d.T, atol=1e-4)


@pytest.mark.parametrize(
  "kw, match",
  [
    (dict(bits=(3, 2), ratios=(1.0,)), "pair up"),
    (dict(bits=(0,), ratios=(1.0,)), r"\[1, 16\]"),
    (dict(ratios=(0.5, 0.5, 0.5)), "sum to 1"),
    (dict(method="awq"), "rtn"),
  ],
)
def test_bad_quant_configs_fail_clearly(kw, match):
  with pytest.raises(ValueError, match=match):
    QuantConfig(**kw)


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_packed_layer_equals_fake_quantized_layer_and_shrinks(method):
  from jaxeff.moe.quant import pack_layer

  cfg = ModelConfig.tiny(
    model_type="qwen2_moe",
    qkv_bias=True,
    n_experts=4,
    experts_per_token=2,
    d_expert=16,
    d_shared=16,
    shared_gate=True,
  )
  params = init_params(cfg, jax.random.key(0), std=0.3)
  mlp = params["layers"][0]["mlp"]
  x = jnp.asarray(np.random.RandomState(5).randn(64, cfg.d_model), jnp.float32)
  qc = QuantConfig(method=method, group_size=16)
  bits = assign_bits(np.random.RandomState(6).rand(80), qc)
  fake = quantize_layer(mlp, bits, qc, x, cfg)
  packed = pack_layer(mlp, bits, qc, x, cfg)
  from jaxeff.models.moe import moe_mlp

  a = moe_mlp(fake, x[None], cfg)
  b = moe_mlp(packed, x[None], cfg)
  np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-4)
  nbytes = lambda t: sum(v.size * v.dtype.itemsize for v in jax.tree.leaves(t))
  assert nbytes(packed) < 0.5 * nbytes(mlp)  # 2.25-bit codes + f32 scale/zero per 16 values vs 32-bit floats
  with pytest.raises(ValueError, match="below 16"):
    pack_layer(mlp, np.full(80, 16), QuantConfig(bits=(16,), ratios=(1.0,), method="rtn"))


def test_packed_bits_per_weight_count_codes_scales_and_owners():
  """Stored bits per weight of a packed CAMERA-Q model: b-bit planes, a float16 scale and zero per group of the
  three vectors of each channel, and an int32 owner per channel, over 3 D weights per channel."""
  from jaxeff.moe.quant import packed_bits_per_weight, quantize_model

  cfg = ModelConfig.tiny(model_type="mixtral", n_experts=4, experts_per_token=2, d_expert=16, d_ff=16)
  params = init_params(cfg, jax.random.key(0))
  D = cfg.d_model
  for gs in (16, 32):
    qc = QuantConfig(group_size=gs, method="rtn")
    q = quantize_model(params, cfg, {0: np.arange(64.0)}, qc, packed=True)
    groups = q["layers"][0]["mlp"]["packed"]
    assert all(g[n].dtype == jnp.float16 for g in groups for n in ("gate_scale", "up_zero", "down_scale"))
    num = sum(3 * len(g["owner"]) * (g["gate"].shape[0] * D + 2 * 16 * D // gs) + 32 * len(g["owner"]) for g in groups)
    den = sum(3 * len(g["owner"]) * D for g in groups)
    assert packed_bits_per_weight(q) == pytest.approx(num / den)
    assert packed_bits_per_weight(q) == pytest.approx(qc.mean_bits + 32 / gs + 32 / (3 * D), abs=0.2)
  with pytest.raises(ValueError, match="no packed"):
    packed_bits_per_weight(params)


def _shared_moe():
  cfg = ModelConfig.tiny(
    model_type="qwen2_moe", qkv_bias=True, n_experts=4, experts_per_token=2, d_expert=16, d_shared=16, shared_gate=True
  )
  return cfg, init_params(cfg, jax.random.key(0), std=0.3)


def test_equal_bits_baseline_scores_magnitude_frequency_random():
  """The energy-agnostic bit assignments: frequency scores are the experts' routing counts on the calibration
  tokens (by hand through ``route`` on the layer inputs), magnitude the product of the three vectors' norms."""
  from jaxeff.models.moe import route
  from jaxeff.moe.camera import bit_scores, mlp_inputs

  cfg, params = _shared_moe()
  calib = np.random.RandomState(0).randint(0, cfg.vocab_size, (2, 16))
  x = mlp_inputs(params, cfg, calib)
  moe = [i for i in range(cfg.n_layers) if cfg.is_moe(i)]
  freq = bit_scores(params, cfg, calib, "frequency")
  mag = bit_scores(params, cfg, calib, "magnitude")
  rnd = bit_scores(params, cfg, calib, "random", seed=1)
  for i in moe:
    mlp = params["layers"][i]["mlp"]
    idx = np.asarray(route(mlp["router"], jnp.asarray(x[i]).reshape(-1, cfg.d_model), cfg)[1])
    counts = np.bincount(idx.ravel(), minlength=4).astype(float)
    np.testing.assert_array_equal(freq[i][:64], np.repeat(counts, 16))
    assert np.all(freq[i][64:] > counts.max())  # the always-on shared expert ranks first
    g = np.linalg.norm(np.asarray(mlp["gate"][1, 5]))
    u = np.linalg.norm(np.asarray(mlp["up"][1, 5]))
    d = np.linalg.norm(np.asarray(mlp["down"][1, :, 5]))
    assert mag[i][16 + 5] == pytest.approx(g * u * d, rel=1e-5)
    assert rnd[i].shape == (80,)
  with pytest.raises(ValueError, match="unknown scoring"):
    bit_scores(params, cfg, calib, "size")


def test_per_matrix_variant_keeps_mean_bits_and_identity_at_16_bits():
  from jaxeff.moe.camera import mlp_inputs
  from jaxeff.moe.quant import quantize_model_per_matrix, rtn, rtn_column_groups

  rng = np.random.RandomState(2)
  w = rng.randn(6, 32)
  np.testing.assert_allclose(rtn_column_groups(w, np.array([3, 3]), 16), rtn(w, 3, 16)[1])  # uniform bits = RTN
  q = rtn_column_groups(w, np.array([16, 1]), 16)
  np.testing.assert_array_equal(q[:, :16], w[:, :16])
  assert np.any(q[:, 16:] != w[:, 16:])
  cfg, params = _shared_moe()
  calib = np.random.RandomState(0).randint(0, cfg.vocab_size, (2, 16))
  x = mlp_inputs(params, cfg, calib)
  same = quantize_model_per_matrix(params, cfg, x, QuantConfig(bits=(16,), ratios=(1.0,), method="rtn", group_size=16))
  for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  qc = QuantConfig(bits=(8, 1), ratios=(0.5, 0.5), method="rtn", group_size=16)
  out = quantize_model_per_matrix(params, cfg, x, qc)
  i = next(i for i in range(cfg.n_layers) if cfg.is_moe(i))
  a, b = np.asarray(out["layers"][i]["mlp"]["gate"]), np.asarray(params["layers"][i]["mlp"]["gate"])
  # column groups along the input dimension: each [16-column] block is either near-exact (8 bits) or coarse
  err = np.abs(a - b).reshape(4, 16, -1, 16).max(axis=(1, 3))  # [expert, column group]
  coarse = err > 0.05
  assert 0 < coarse.sum() < coarse.size
