"""A Flax NNX facade over jaxeff's functional decoder: the same parameters, held as ``nnx.Param``.

jaxeff's core is functional JAX over a plain parameter pytree (``jaxeff.models.forward(params, tokens, positions,
cache, config=...)``). Flax users expect a Module; ``Decoder`` is that Module and nothing more: it holds the
parameter table as ``nnx.Param`` leaves (each tagged with its logical axes), and calling it calls ``forward``:

  logits, cache = Decoder(config, rngs=nnx.Rngs(0))(tokens, positions, cache=None, attention=Dense())

so every attention backend (``Dense``, ``ProxyAttention``, ...), cache (``FullCache``, ``CommonKV``, ...) and
stack works unchanged. ``nnx.split`` / ``nnx.merge`` round-trip, ``Decoder.functional()`` gives back the plain
``(config, params)``, ``nnx.Optimizer`` + optax train it, and ``Decoder.shard(mesh)`` places it on a mesh with
the partition specs that jaxeff's logical-axis rules (``jaxeff.sharding.RULES``) give, which
``nnx.get_named_sharding`` then reads back.

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from jaxeff.config import ModelConfig
  >>> model = Decoder(ModelConfig.tiny(), rngs=nnx.Rngs(0))
  >>> logits, _ = model(jnp.zeros((1, 5), jnp.int32))
  >>> logits.shape[:2]  # [B, T, V (padded)]
  (1, 5)

Reference: Flax NNX (https://flax.readthedocs.io/en/latest/nnx_basics.html); the functional model it wraps is
``jaxeff.models.decoder``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxeff.attention.dense import Dense
from jaxeff.config import ModelConfig
from jaxeff.models.decoder import forward, init_params, param_logical_axes

_is_param = lambda x: isinstance(x, nnx.Variable)


class Decoder(nnx.Module):
  """jaxeff's decoder as an ``nnx.Module`` (module docstring).

  Args:
    config: the ``ModelConfig`` (static).
    rngs: ``nnx.Rngs`` for random initialisation (``init_params``: N(0, 0.02^2) matrices, unit norms); not needed
      when ``params`` is given.
    params: an existing functional parameter table to hold instead (not copied).
    dtype: parameter dtype for random initialisation.
    mesh: place the parameters on this mesh (``shard``).
  """

  def __init__(
    self,
    config: ModelConfig,
    *,
    rngs: nnx.Rngs | None = None,
    params: dict[str, Any] | None = None,
    dtype: Any = jnp.float32,
    mesh: jax.sharding.Mesh | None = None,
  ):
    if params is None:
      if rngs is None:
        raise ValueError("Decoder needs rngs= to initialise parameters (or params= to hold existing ones)")
      params = init_params(config, rngs.params(), dtype)
    self.config = config
    axes = param_logical_axes(config)
    try:
      self.params = nnx.data(jax.tree.map(lambda p, a: nnx.Param(p, logical_axes=a), params, axes))
    except ValueError as e:  # a tree that is not this config's parameter table
      raise ValueError(f"params do not match the config's parameter table: {e}") from None
    if mesh is not None:
      self.shard(mesh)

  @classmethod
  def from_pretrained(
    cls, path_or_name: str | os.PathLike, *, dtype: Any = None, mesh: jax.sharding.Mesh | None = None
  ) -> Decoder:
    """A Hugging Face folder (``load_hf``: safetensors, sharded or not), a GGUF file (``load_gguf``), or the
    name of an embedded / fetched reference model (``load_reference_model``, e.g. ``"tiny-code"``,
    ``"smollm2-135m-instruct"``). With ``mesh``, each tensor is placed sharded as it loads."""
    from jaxeff.models.embedded import load_reference_model
    from jaxeff.models.gguf import load_gguf
    from jaxeff.models.hf_io import load_hf

    path = Path(path_or_name)
    if path.is_dir():
      config, params = load_hf(path, dtype=dtype, mesh=mesh)
      return cls(config, params=params)
    if path.is_file() and path.suffix == ".gguf":
      config, params = load_gguf(path, dtype=dtype)
    else:
      config, params, _ = load_reference_model(str(path_or_name), jnp.float32 if dtype is None else dtype)
    return cls(config, params=params, mesh=mesh)

  def __call__(
    self,
    tokens: jax.Array,
    positions: jax.Array | None = None,
    cache: Any = None,
    *,
    attention: Any = Dense(),
    **kwargs,
  ):
    """``forward(params, tokens [B, T], positions [B, T] (default 0..T-1), cache, attention=...)``: float32
    logits [B, T, V] and the new cache; other keywords (``is_prefill``, ``logits_index``, ...) go to
    ``forward``."""
    tokens = jnp.asarray(tokens)
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    return forward(
      self.functional_params(), tokens, positions, cache, config=self.config, attention=attention, **kwargs
    )

  def functional_params(self) -> dict[str, Any]:
    """The plain parameter table (``jaxeff.models`` layout) of the values held now (no copy)."""
    return jax.tree.map(lambda v: v.get_value(), self.params, is_leaf=_is_param)

  def functional(self) -> tuple[ModelConfig, dict[str, Any]]:
    """``(config, params)`` for every functional jaxeff API (sampler, trainer, compressors, ``save_hf``)."""
    return self.config, self.functional_params()

  def shard(self, mesh: jax.sharding.Mesh) -> Decoder:
    """Place every parameter on ``mesh`` with the spec jaxeff's logical-axis rules give its shape there
    (``jaxeff.sharding.logical_to_spec``: axes that do not divide replicate) and record it as the Param's
    ``out_sharding``, so ``nnx.get_named_sharding(nnx.state(model), mesh)`` returns the same shardings."""
    from jaxeff.sharding import logical_to_spec

    for var in jax.tree.leaves(self.params, is_leaf=_is_param):
      spec = logical_to_spec(var.get_metadata()["logical_axes"], var.shape, mesh)
      var.set_metadata(out_sharding=tuple(spec))
      var.set_value(jax.device_put(var.get_value(), jax.sharding.NamedSharding(mesh, spec)))
    return self


def from_functional(config: ModelConfig, params: dict[str, Any]) -> Decoder:
  """``Decoder(config, params=params)``: the facade over an existing functional model."""
  return Decoder(config, params=params)


@nnx.jit
def train_step(model: Decoder, optimizer: nnx.Optimizer, inputs, targets, loss_mask) -> jax.Array:
  """One ``nnx.Optimizer`` step on the mean masked token NLL, the loss of jaxeff's trainer:

    L = sum_t m_t (-log p(targets_t | inputs_<=t)) / sum_t m_t

  (``jaxeff.training.trainer.masked_nll``: exact attention whose gradient recomputes per block). Updates
  ``model`` and ``optimizer`` in place; returns L before the step.

  Shapes: inputs, targets, loss_mask [B, T]. Example:
    >>> optimizer = nnx.Optimizer(model, optax.adamw(3e-3), wrt=nnx.Param)  # doctest: +SKIP
    >>> loss = train_step(model, optimizer, inputs, targets, mask)  # doctest: +SKIP
  """
  from jaxeff.training.trainer import masked_nll

  def loss_fn(model):
    nll, n = masked_nll(model.functional_params(), inputs, targets, loss_mask, config=model.config)
    return nll / jnp.maximum(n, 1.0)

  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads)
  return loss
