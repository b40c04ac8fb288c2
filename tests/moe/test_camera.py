"""CAMERA: micro-expert decomposition, energy = leave-one-out error, pruning identities, compaction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.config import ModelConfig
from jaxeff.models import forward, init_params
from jaxeff.models.moe import moe_dense
from jaxeff.moe.camera import (
  EnergyAccumulator,
  apply_masks,
  camera_prune,
  compact,
  energy,
  layer_walk,
  micro_coefficients,
  moe_param_bytes,
)


def _model(shared=12, **kw):
  cfg = ModelConfig.tiny(
    model_type="qwen2_moe",
    qkv_bias=True,
    n_experts=4,
    experts_per_token=2,
    d_expert=8,
    d_shared=shared,
    shared_gate=bool(shared),
    **kw,
  )
  return cfg, init_params(cfg, jax.random.key(0), std=0.3)


def test_micro_expert_decomposition_reproduces_the_block():
  cfg, params = _model()
  mlp = params["layers"][0]["mlp"]
  x = jnp.asarray(np.random.RandomState(0).randn(30, cfg.d_model), jnp.float32)
  phi, W = micro_coefficients(mlp, x, cfg)
  assert phi.shape == (30, 4 * 8 + 12) and W.shape == (44, cfg.d_model)
  np.testing.assert_allclose(np.asarray(phi @ W), np.asarray(moe_dense(mlp, x, cfg)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_energy_equals_exact_leave_one_out_error(alpha):
  """alpha = 0: E_i = ||Y - Y_without_i||_F^2; alpha = 1: max_t ||y_t - y_t_without_i||^2 (brute force)."""
  cfg, params = _model()
  lp = params["layers"][0]
  x = jnp.asarray(np.random.RandomState(1).randn(25, cfg.d_model), jnp.float32)
  acc = EnergyAccumulator()
  phi, W = micro_coefficients(lp["mlp"], x, cfg)
  acc.update(phi[:10])
  acc.update(phi[10:])  # chunked
  got = energy(acc, W, alpha)
  y = np.asarray(moe_dense(lp["mlp"], x, cfg), np.float64)
  for i in range(44):
    rk, sk = np.ones((4, 8), bool), np.ones(12, bool)
    if i < 32:
      rk[i // 8, i % 8] = False
    else:
      sk[i - 32] = False
    d = y - np.asarray(moe_dense(apply_masks(lp, rk, sk)["mlp"], x, cfg), np.float64)
    want = (d**2).sum() if alpha == 0 else (d**2).sum(1).max()
    np.testing.assert_allclose(got[i], want, rtol=2e-4, atol=1e-9)


@pytest.fixture(scope="module")
def calib():
  return np.random.RandomState(2).randint(0, 272, (6, 24))


def test_layer_walk_reproduces_forward(calib):
  from jaxeff.models.decoder import rms_norm

  cfg, params = _model(moe_layers=(True, False))
  for i, _h, advance in layer_walk(params, cfg, calib):
    x = advance(params["layers"][i])
  want, _ = forward(params, jnp.asarray(calib), jnp.broadcast_to(jnp.arange(24), calib.shape), config=cfg)
  got = rms_norm(x, params["final_norm"], cfg.rms_norm_eps) @ params["lm_head"].T
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4)


def test_ratio_zero_is_identity_and_masked_equals_compacted(calib):
  cfg, params = _model()
  same, rep = camera_prune(params, cfg, calib, 0.0, chunk=4)
  for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(params)):
    assert bool(jnp.array_equal(a, b))
  pruned, rep = camera_prune(params, cfg, calib, 0.4, chunk=4)
  for _i, (rk, sk) in rep.masks.items():
    assert (~rk).sum() + (~sk).sum() == int(np.floor(44 * 0.4))
  toks = jnp.asarray(calib[:2])
  pos = jnp.broadcast_to(jnp.arange(24), toks.shape)
  a, _ = forward(pruned, toks, pos, config=cfg)
  kept = sum(int(rk.sum()) + int(sk.sum()) for rk, sk in rep.masks.values())
  for layout in ("flat", "padded", "experts"):
    small = compact(pruned, cfg, rep, layout=layout)
    b, _ = forward(small, toks, pos, config=cfg)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    assert moe_param_bytes(small) < moe_param_bytes(pruned)
  flat = compact(pruned, cfg, rep, layout="flat")
  assert sum(int(flat["layers"][i]["mlp"]["gate"].shape[0]) for i in rep.masks) == kept  # exactly the kept channels
  full, _ = camera_prune(params, cfg, calib, 1.0, chunk=4)  # everything pruned: the MoE branch is exactly 0
  x = jnp.asarray(np.random.RandomState(3).randn(5, cfg.d_model), jnp.float32)
  assert float(jnp.max(jnp.abs(moe_dense(full["layers"][0]["mlp"], x, cfg)))) == 0.0


def test_energies_do_not_depend_on_chunking(calib):
  cfg, params = _model()
  _, a = camera_prune(params, cfg, calib, 0.3, chunk=2)
  _, b = camera_prune(params, cfg, calib, 0.3, chunk=6)
  for i in a.energies:
    np.testing.assert_allclose(a.energies[i], b.energies[i], rtol=1e-5)


@pytest.mark.parametrize("method", ["frequency", "magnitude", "random"])
def test_baselines_prune_the_same_count(calib, method):
  cfg, params = _model()
  _, rep = camera_prune(params, cfg, calib, 0.25, method=method, chunk=6)
  for rk, sk in rep.masks.values():
    removed = (~rk).sum() + (~sk).sum()
    assert removed == int(np.floor(44 * 0.25)), (method, removed)


@pytest.mark.parametrize(
  "kw, match",
  [
    (dict(ratio=1.5), r"\[0, 1\]"),
    (dict(ratio=-0.1), r"\[0, 1\]"),
    (dict(ratio=0.2, method="oracle"), "unknown method"),
  ],
)
def test_bad_arguments_fail_clearly(calib, kw, match):
  cfg, params = _model()
  with pytest.raises(ValueError, match=match):
    camera_prune(params, cfg, calib, **kw)
  with pytest.raises(ValueError, match="mixture-of-experts"):
    camera_prune(init_params(ModelConfig.tiny(), jax.random.key(0)), ModelConfig.tiny(), calib, 0.2)


def test_routed_per_expert_layout_equals_the_masked_dense_path():
  """moe_experts (the per-expert layout's routed loop) equals the dense path with the pruned channels masked, for
  decode- and prefill-sized inputs, block boundaries, experts no token chose and an expert pruned to nothing."""
  from jaxeff.models.moe import moe_experts

  cfg = ModelConfig.tiny(model_type="qwen2_moe", n_experts=6, experts_per_token=2, d_expert=16, d_shared=8)
  mlp = init_params(cfg, jax.random.key(1))["layers"][0]["mlp"]
  rng = np.random.RandomState(0)
  rk = rng.rand(6, 16) < 0.6
  rk[2] = False  # an expert with no kept channel
  sk = rng.rand(8) < 0.5
  masked = dict(mlp)
  masked["gate"] = mlp["gate"] * rk[..., None]
  masked["shared"] = {**mlp["shared"], "gate": mlp["shared"]["gate"] * sk[:, None]}
  rep = type("R", (), {"masks": {0: (rk, sk)}})()
  small = compact({"layers": ({"mlp": mlp},)}, cfg, rep, layout="experts")["layers"][0]["mlp"]
  assert [int(e["gate"].shape[0]) for e in small["experts"]] == rk.sum(1).tolist()
  for T in (1, 3, 40):
    x = jnp.asarray(rng.randn(T, cfg.d_model), jnp.float32)
    want = moe_dense(masked, x, cfg)
    for block in (1, 4, 64):
      got = jax.jit(lambda m, x, block=block: moe_experts(m, x, cfg, block=block))(small, x)
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
