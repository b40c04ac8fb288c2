"""MoE block: routing against a NumPy loop, dense = routed path, config mapping and checkpoint errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.config import ModelConfig, UnsupportedConfigError
from jaxeff.models import forward, init_params
from jaxeff.models.moe import moe_mlp


def _cfg(**kw):
  base = dict(n_experts=6, experts_per_token=2, d_expert=12, norm_topk=False, model_type="qwen2_moe", qkv_bias=True)
  return ModelConfig.tiny(**{**base, **kw})


def moe_numpy(mlp, x, k, norm, shared_gate):
  """Token by token: softmax, top-k, optional renorm, weighted SwiGLU experts (+ gated shared expert)."""
  mlp = jax.tree.map(lambda a: np.asarray(a, np.float64), mlp)
  silu = lambda z: z / (1 + np.exp(-z))
  out = np.zeros_like(x, dtype=np.float64)
  for t in range(x.shape[0]):
    logits = mlp["router"] @ x[t]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    top = np.argsort(-p, kind="stable")[:k]
    w = p[top] / (p[top].sum() if norm else 1.0)
    for wj, e in zip(w, top):
      out[t] += wj * (mlp["down"][e] @ (silu(mlp["gate"][e] @ x[t]) * (mlp["up"][e] @ x[t])))
    if "shared" in mlp:
      sh = mlp["shared"]
      y = sh["down"] @ (silu(sh["gate"] @ x[t]) * (sh["up"] @ x[t]))
      out[t] += y / (1 + np.exp(-(mlp["shared_gate"] @ x[t])[0])) if shared_gate else y
  return out


@pytest.mark.parametrize("norm, shared", [(False, 0), (True, 0), (False, 20)])
@pytest.mark.parametrize("impl", ["dense", "routed"])
def test_moe_block_matches_numpy_loop(norm, shared, impl):
  cfg = _cfg(norm_topk=norm, d_shared=shared, shared_gate=bool(shared))
  params = init_params(cfg, jax.random.key(0), std=0.3)
  mlp = params["layers"][0]["mlp"]
  x = np.random.RandomState(0).randn(2, 7, cfg.d_model).astype(np.float32)
  got = moe_mlp(mlp, jnp.asarray(x), cfg, impl=impl)
  want = moe_numpy(mlp, x.reshape(-1, cfg.d_model), 2, norm, bool(shared)).reshape(x.shape)
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-5, rtol=1e-4)


def test_dense_and_routed_paths_agree_on_a_model_and_its_gradient():
  cfg = _cfg(n_experts=10, experts_per_token=3)
  params = init_params(cfg, jax.random.key(1), std=0.2)
  x = jnp.asarray(np.random.RandomState(1).randn(3, 5, cfg.d_model), jnp.float32)
  mlp = params["layers"][1]["mlp"]
  a, b = moe_mlp(mlp, x, cfg, impl="dense"), moe_mlp(mlp, x, cfg, impl="routed")
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  ga = jax.grad(lambda m: jnp.sum(moe_mlp(m, x, cfg, impl="dense") ** 2))(mlp)
  gb = jax.grad(lambda m: jnp.sum(moe_mlp(m, x, cfg, impl="routed") ** 2))(mlp)
  for u, v in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=1e-4)
  toks = jnp.zeros((1, 4), jnp.int32)
  logits, _ = forward(params, toks, jnp.arange(4)[None], config=cfg)
  assert logits.shape == (1, 4, cfg.vocab_size)


def test_param_count_matches_init_and_moe_layers():
  cfg = _cfg(d_shared=16, shared_gate=True, moe_layers=(True, False))
  params = init_params(cfg, jax.random.key(0))
  assert sum(x.size for x in jax.tree.leaves(params)) == cfg.param_count()
  assert "router" in params["layers"][0]["mlp"] and "router" not in params["layers"][1]["mlp"]
  assert params["layers"][1]["mlp"]["gate"].shape == (cfg.d_ff, cfg.d_model)


@pytest.mark.parametrize(
  "kw, match",
  [
    (dict(experts_per_token=7), "experts_per_token"),
    (dict(experts_per_token=0), "experts_per_token"),
    (dict(d_expert=0), "d_expert"),
    (dict(moe_layers=(True,)), "moe_layers"),
  ],
)
def test_bad_moe_configs_fail_clearly(kw, match):
  with pytest.raises(ValueError, match=match):
    _cfg(**kw)


def test_hf_config_round_trip_and_unsupported_fields():
  cfg = _cfg(d_shared=16, shared_gate=True, moe_layers=(True, False))
  hf = cfg.to_hf_config()
  assert hf["mlp_only_layers"] == [1] and hf["shared_expert_intermediate_size"] == 16
  back = ModelConfig.from_hf_config(hf)
  assert back == cfg.replace(bos_token_id=back.bos_token_id, eos_token_id=back.eos_token_id)
  with pytest.raises(UnsupportedConfigError, match="router_type"):
    ModelConfig.from_hf_config({**hf, "router_type": "sigmoid"})
  with pytest.raises(UnsupportedConfigError, match="shared expert"):
    _cfg(model_type="qwen3_moe", d_shared=8, qkv_bias=False, qk_norm=True).to_hf_config()


def test_checkpoint_missing_expert_keys_listed_at_once(tmp_path):
  from jaxeff.models import load_hf, save_hf
  from jaxeff.models.hf_io import CheckpointError, read_config, write_safetensors

  cfg = _cfg()
  save_hf(tmp_path / "m", cfg, init_params(cfg, jax.random.key(0)))
  from safetensors.numpy import load_file

  tensors = load_file(tmp_path / "m" / "model.safetensors")
  del tensors["model.layers.0.mlp.experts.3.up_proj.weight"], tensors["model.layers.1.mlp.gate.weight"]
  write_safetensors(tmp_path / "m" / "model.safetensors", tensors)
  assert read_config(tmp_path / "m").n_experts == 6
  with pytest.raises(CheckpointError, match=r"2 missing: .*experts\.3\.up_proj.*layers\.1\.mlp\.gate"):
    load_hf(tmp_path / "m")
