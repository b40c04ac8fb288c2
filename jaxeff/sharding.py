"""Logical-axis sharding: one rules table from logical names onto the ('data', 'fsdp', 'tensor') mesh.

Every parameter and the main activations carry logical axis names (``'embed'``, ``'heads'``, ...).
``RULES`` maps each name to a mesh axis (or a tuple of axes, or ``None`` = replicated). A dimension whose
size does not divide the product of its mesh axes is replicated instead (tiny models on big meshes), so the
same rules serve a 2-core CPU test and a pod slice.

Example:
  >>> import jax
  >>> mesh = make_mesh(data=1, fsdp=1, tensor=1)
  >>> spec = logical_to_spec(('embed', 'mlp'), (64, 128), mesh)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axis / axes. The single source of truth for how jaxeff shards.
RULES: Mapping[str, Any] = {
  "batch": ("data", "fsdp"),
  "seq": None,
  "cache_seq": None,
  "vocab": "tensor",
  "embed": "fsdp",
  "heads": "tensor",
  "kv_heads": "tensor",
  "head_dim": None,
  "mlp": "tensor",
  "norm": None,
  "experts": "tensor",
  "act_embed": None,
  "act_heads": "tensor",
  "act_kv_heads": "tensor",
  "act_vocab": "tensor",
}


def initialize_distributed() -> None:
  """``jax.distributed.initialize()`` for multi-host runs (every host runs the same program).

  On Cloud TPU (and SLURM / Open MPI / Kubernetes) JAX detects the coordinator, the process count and this
  process's index by itself. Elsewhere (GPU or CPU hosts, the two-process loopback test) set
  ``JAXEFF_COORDINATOR=host:port``, ``JAXEFF_NUM_PROCESSES`` and ``JAXEFF_PROCESS_ID`` (``tpu_setup/launch.sh
  --local N`` exports them for N processes on one machine). CPU processes exchange collectives over gloo. A second call is a
  no-op.

  Raises:
    ValueError: only some of the three ``JAXEFF_*`` variables set, or non-integer counts.
  """
  import os

  if jax.distributed.is_initialized():
    return
  names = ("JAXEFF_COORDINATOR", "JAXEFF_NUM_PROCESSES", "JAXEFF_PROCESS_ID")
  given = [n for n in names if os.environ.get(n)]
  kw: dict[str, Any] = {}
  if given:
    if len(given) != 3:
      raise ValueError(f"set all of {', '.join(names)} or none (got only {', '.join(given)})")
    try:
      kw = dict(
        coordinator_address=os.environ["JAXEFF_COORDINATOR"],
        num_processes=int(os.environ["JAXEFF_NUM_PROCESSES"]),
        process_id=int(os.environ["JAXEFF_PROCESS_ID"]),
      )
    except ValueError:
      raise ValueError("JAXEFF_NUM_PROCESSES and JAXEFF_PROCESS_ID must be integers") from None
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU cross-process collectives
  jax.distributed.initialize(**kw)


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
  """A ``('data', 'fsdp', 'tensor')`` mesh; ``data * fsdp * tensor`` must equal the device count used."""
  n = data * fsdp * tensor
  devices = list(devices) if devices is not None else jax.devices()[:n]
  if len(devices) != n:
    raise ValueError(f"mesh {data}x{fsdp}x{tensor} needs {n} devices, {len(devices)} available")
  return Mesh(np.asarray(devices).reshape(data, fsdp, tensor), MESH_AXES)


def _axis_size(mesh_shape: Mapping[str, int], axes: Any) -> int:
  if axes is None:
    return 1
  if isinstance(axes, str):
    axes = (axes,)
  return int(np.prod([mesh_shape[a] for a in axes]))


def logical_to_spec(
  names: Sequence[str | None], shape: Sequence[int], mesh: Mesh | Any, rules: Mapping[str, Any] = RULES
) -> PartitionSpec:
  """PartitionSpec for an array with logical axis ``names``; non-divisible dims and reused mesh axes replicate."""
  if len(names) != len(shape):
    raise ValueError(f"logical names {tuple(names)} do not match shape {tuple(shape)}")
  mesh_shape = dict(mesh.shape)
  used: set[str] = set()
  out = []
  for name, size in zip(names, shape):
    axes = rules.get(name) if name is not None else None
    if axes is not None:
      tup = (axes,) if isinstance(axes, str) else tuple(axes)
      tup = tuple(a for a in tup if a in mesh_shape and a not in used)
      if not tup or size % _axis_size(mesh_shape, tup) or _axis_size(mesh_shape, tup) == 1:
        axes = None
      else:
        used.update(tup)
        axes = tup[0] if len(tup) == 1 else tup
    out.append(axes)
  return PartitionSpec(*out)


def logical_sharding(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh) -> NamedSharding:
  """``NamedSharding`` of an array with logical axis ``names`` and ``shape`` on ``mesh`` (``RULES``)."""
  return NamedSharding(mesh, logical_to_spec(names, shape, mesh))


def tree_shardings(logical_tree: Any, shape_tree: Any, mesh: Mesh) -> Any:
  """Map a tree of logical-name tuples and a matching tree of arrays/ShapeDtypeStructs to NamedShardings."""
  is_names = lambda x: isinstance(x, tuple) and all(isinstance(n, str | None) for n in x)
  return jax.tree.map(
    lambda names, arr: logical_sharding(names, arr.shape, mesh), logical_tree, shape_tree, is_leaf=is_names
  )


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """``with_sharding_constraint`` by logical names under the ambient ``jax.set_mesh`` mesh; a no-op without one."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(names, x.shape, mesh))
