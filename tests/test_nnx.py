"""The Flax NNX facade: the same numbers as the functional model, split/merge round trip, one optimizer step equal
to the functional trainer's, shardings from jaxeff's logical-axis rules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxeff import sharding as shard_lib
from jaxeff.config import ModelConfig
from jaxeff.kvcache import FullCache
from jaxeff.models import forward, init_params, param_logical_axes, save_hf
from jaxeff.nnx import Decoder, train_step
from jaxeff.training.config import TrainConfig
from jaxeff.training.trainer import make_train_step

CFG = ModelConfig.tiny(n_layers=2)


def _tokens(B=2, T=12, seed=0):
  return jnp.asarray(np.random.RandomState(seed).randint(0, CFG.vocab_size, (B, T)), jnp.int32)


def test_facade_logits_equal_the_functional_model_with_and_without_a_cache():
  model = Decoder(CFG, rngs=nnx.Rngs(3))
  params = init_params(CFG, nnx.Rngs(3).params())  # the same key stream: the same parameters
  jax.tree.map(
    lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), model.functional_params(), params
  )
  toks = _tokens()
  pos = jnp.broadcast_to(jnp.arange(12), toks.shape)
  want, _ = forward(params, toks, pos, config=CFG)
  got, _ = model(toks)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  # prefill + one decode step through a cache
  cache = FullCache.init(CFG, 2, 16)
  got_p, cache_m = model(toks, pos, cache)
  want_p, cache_f = forward(params, toks, pos, FullCache.init(CFG, 2, 16), config=CFG)
  nxt = _tokens(T=1, seed=1)
  got_d, _ = model(nxt, jnp.full((2, 1), 12), cache_m, is_prefill=False)
  want_d, _ = forward(params, nxt, jnp.full((2, 1), 12), cache_f, config=CFG, is_prefill=False)
  np.testing.assert_array_equal(np.asarray(got_p), np.asarray(want_p))
  np.testing.assert_array_equal(np.asarray(got_d), np.asarray(want_d))


def test_split_merge_round_trip_and_back_to_functional(tmp_path):
  model = Decoder(CFG, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  again = nnx.merge(graphdef, state)
  config, params = again.functional()
  assert config == CFG
  jax.tree.map(
    lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, model.functional_params()
  )
  # every Param carries its logical axes; the functional table's structure is kept (layers a tuple)
  assert isinstance(params["layers"], tuple) and len(params["layers"]) == CFG.n_layers
  axes = jax.tree.map(
    lambda v: v.get_metadata()["logical_axes"], again.params, is_leaf=lambda x: isinstance(x, nnx.Variable)
  )
  assert axes == param_logical_axes(CFG)
  # from_pretrained reads what save_hf wrote
  folder = save_hf(tmp_path / "m", CFG, params)
  loaded = Decoder.from_pretrained(folder)
  toks = _tokens()
  np.testing.assert_array_equal(np.asarray(loaded(toks)[0]), np.asarray(model(toks)[0]))
  with pytest.raises(ValueError, match="rngs"):
    Decoder(CFG)


@pytest.mark.parametrize(
  "tx, atol",
  # SGD is linear in the gradient: tight. Adam's first step is ~lr * sign(g), so where |g| is near its eps the
  # two float orders may round differently: bounded by a fraction of the step (lr 1e-2).
  [(optax.sgd(0.5), 1e-6), (optax.adamw(1e-2, weight_decay=0.1), 2e-3)],
  ids=["sgd", "adamw"],
)
def test_one_optimizer_step_equals_the_functional_trainers(tx, atol):
  model = Decoder(CFG, rngs=nnx.Rngs(0))
  _, params = model.functional()
  inputs, targets = _tokens(seed=2), _tokens(seed=3)
  mask = jnp.ones(inputs.shape, jnp.float32)
  step = make_train_step(TrainConfig(), CFG, tx, jax.tree.map(lambda _: True, params))
  want, _, metrics = jax.jit(step)(params, tx.init(params), inputs, targets, mask)

  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  loss = train_step(model, optimizer, inputs, targets, mask)
  np.testing.assert_allclose(float(loss), float(metrics["loss"]), rtol=1e-6)
  got = model.functional_params()
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=0), got, want)
  assert not all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), got, params)))  # it moved


def test_shardings_follow_jaxeffs_logical_axis_rules():
  mesh = shard_lib.make_mesh(data=1, fsdp=4, tensor=2)
  model = Decoder(CFG, rngs=nnx.Rngs(0), mesh=mesh)
  named = nnx.get_named_sharding(nnx.state(model), mesh)
  want = shard_lib.tree_shardings(param_logical_axes(CFG), model.functional_params(), mesh)
  got = jax.tree.map(lambda v: v.get_value(), named["params"], is_leaf=lambda x: isinstance(x, nnx.Variable))
  assert jax.tree.leaves(got) == jax.tree.leaves(want)
  placed = [x.sharding for x in jax.tree.leaves(model.functional_params())]
  assert placed == jax.tree.leaves(want)
  assert any(s.spec != jax.sharding.PartitionSpec() for s in placed)  # something is actually split
  toks = _tokens(B=4)
  np.testing.assert_allclose(
    np.asarray(model(toks)[0]), np.asarray(Decoder(CFG, rngs=nnx.Rngs(0))(toks)[0]), atol=1e-5, rtol=1e-5
  )
