"""Params sharded on a ('data','fsdp','tensor') mesh of 8 fake CPU devices; sharded logits = single device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff import sharding as shard_lib
from jaxeff.config import ModelConfig
from jaxeff.generation import Sampler, SamplingParams
from jaxeff.models import forward, init_params, param_logical_axes


def test_eight_fake_devices():
  assert len(jax.devices()) == 8


def test_rules_replicate_non_divisible_dims():
  mesh = shard_lib.make_mesh(data=2, fsdp=2, tensor=2)
  assert shard_lib.logical_to_spec(("embed", "heads", "head_dim"), (64, 4, 16), mesh) == jax.sharding.PartitionSpec(
    "fsdp", "tensor", None
  )
  assert shard_lib.logical_to_spec(("embed", "kv_heads", "head_dim"), (64, 1, 16), mesh) == jax.sharding.PartitionSpec(
    "fsdp", None, None
  )
  assert shard_lib.logical_to_spec(("batch", "seq"), (4, 3), mesh) == jax.sharding.PartitionSpec(
    ("data", "fsdp"), None
  )


def test_params_are_sharded_and_logits_match_single_device():
  cfg = ModelConfig.tiny(d_ff=256)
  params = init_params(cfg, jax.random.key(0), std=0.1)
  mesh = shard_lib.make_mesh(data=2, fsdp=2, tensor=2)
  shardings = shard_lib.tree_shardings(param_logical_axes(cfg), params, mesh)
  sharded = jax.device_put(params, shardings)
  # Every matrix is split over at least 2 devices (MaxText's "sufficiently sharded" idea).
  for path, leaf in jax.tree_util.tree_flatten_with_path(sharded)[0]:
    if leaf.ndim >= 2:
      shard_size = leaf.addressable_shards[0].data.size
      assert shard_size * 4 <= leaf.size, (jax.tree_util.keystr(path), leaf.sharding.spec)
  toks = jax.random.randint(jax.random.key(1), (4, 10), 0, cfg.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(10), (4, 10))
  ref, _ = jax.jit(lambda p, t, q: forward(p, t, q, config=cfg))(params, toks, pos)
  with jax.set_mesh(mesh):
    got, _ = jax.jit(lambda p, t, q: forward(p, t, q, config=cfg))(sharded, toks, pos)
  assert len(got.sharding.device_set) == 8
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5, rtol=1e-5)


def test_sampler_with_sharded_params_matches():
  cfg = ModelConfig.tiny(d_ff=256)
  params = init_params(cfg, jax.random.key(0), std=0.1)
  mesh = shard_lib.make_mesh(data=2, fsdp=2, tensor=2)
  sharded = jax.device_put(params, shard_lib.tree_shardings(param_logical_axes(cfg), params, mesh))
  sp = SamplingParams(max_new_tokens=6, temperature=0.0, n_samples=2)
  ref = Sampler(cfg, params).generate([[1, 2, 3], [4, 5, 6, 7]], sp, jax.random.key(0))
  with jax.set_mesh(mesh):
    got = Sampler(cfg, sharded).generate([[1, 2, 3], [4, 5, 6, 7]], sp, jax.random.key(0))
  np.testing.assert_array_equal(got.tokens, ref.tokens)


@pytest.mark.parametrize("impl_experts", [4, 12])  # dense path (<= 8 experts) and routed (ragged_dot) path
def test_moe_experts_shard_on_the_tensor_axis_and_logits_match(impl_experts):
  cfg = ModelConfig.tiny(
    model_type="qwen3_moe", qk_norm=True, n_experts=impl_experts, experts_per_token=2, d_expert=16, norm_topk=True
  )
  params = init_params(cfg, jax.random.key(0), std=0.2)
  mesh = shard_lib.make_mesh(data=2, fsdp=2, tensor=2)
  shardings = shard_lib.tree_shardings(param_logical_axes(cfg), params, mesh)
  assert shardings["layers"][0]["mlp"]["gate"].spec[0] == "tensor"  # the expert axis
  sharded = jax.device_put(params, shardings)
  toks = jax.random.randint(jax.random.key(1), (4, 10), 0, cfg.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(10), (4, 10))
  ref, _ = jax.jit(lambda p, t, q: forward(p, t, q, config=cfg))(params, toks, pos)
  with jax.set_mesh(mesh):
    got, _ = jax.jit(lambda p, t, q: forward(p, t, q, config=cfg))(sharded, toks, pos)
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5)
