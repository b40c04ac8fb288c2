"""Hugging Face checkpoint I/O: local folders <-> (ModelConfig, params), through one table.

``hf_table(config)`` lists every tensor a HF checkpoint of ``config`` holds: its HF name, HF shape, the
jaxeff leaf path, and the transpose/reshape both ways (torch ``nn.Linear`` stores [out, in]; jaxeff stores
[in, ...out] with heads split out). Loading checks the files against the table and reports **all**
missing, unexpected and mis-shaped tensors in one error before any array is built.

Files: ``config.json``; ``model.safetensors`` or ``model.safetensors.index.json`` + shards; optional
``tokenizer.json``. Nothing is downloaded: ``path`` must be a local folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxeff import sharding as shard_lib
from jaxeff.config import ModelConfig
from jaxeff.models.decoder import param_logical_axes, param_specs


class CheckpointError(ValueError):
  """A checkpoint folder is missing, corrupt, or does not match its config."""


@dataclasses.dataclass(frozen=True)
class TableEntry:
  hf_name: str
  hf_shape: tuple[int, ...]
  path: tuple[Any, ...]  # path into the jaxeff params pytree
  to_jax: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]


def _ident(x):
  return x


def _linear_in(*out_shape):
  """HF [prod(out), in] -> jaxeff [in, *out]."""
  return lambda w: w.T.reshape(w.shape[1], *out_shape)


def _linear_out(w):
  """jaxeff [in, *out] -> HF [prod(out), in]."""
  return w.reshape(w.shape[0], -1).T


def hf_table(config: ModelConfig) -> list[TableEntry]:
  """The rename/transpose table between HF tensor names and jaxeff parameter leaves (Llama family)."""
  D, N, K, H, F, V = (
    config.d_model,
    config.n_heads,
    config.n_kv_heads,
    config.head_dim,
    config.d_ff,
    config.vocab_size,
  )
  t: list[TableEntry] = [TableEntry("model.embed_tokens.weight", (V, D), ("embed",), _ident, _ident)]
  for i in range(config.n_layers):
    p = f"model.layers.{i}."
    L = ("layers", i)
    t += [
      TableEntry(p + "input_layernorm.weight", (D,), L + ("attn_norm",), _ident, _ident),
      TableEntry(p + "post_attention_layernorm.weight", (D,), L + ("mlp_norm",), _ident, _ident),
      TableEntry(p + "self_attn.q_proj.weight", (N * H, D), L + ("attn", "q"), _linear_in(N, H), _linear_out),
      TableEntry(p + "self_attn.k_proj.weight", (K * H, D), L + ("attn", "k"), _linear_in(K, H), _linear_out),
      TableEntry(p + "self_attn.v_proj.weight", (K * H, D), L + ("attn", "v"), _linear_in(K, H), _linear_out),
      # o_proj: HF [D, N*H] = ([N*H, D]).T; jaxeff [N, H, D].
      TableEntry(
        p + "self_attn.o_proj.weight",
        (D, N * H),
        L + ("attn", "o"),
        lambda w: w.T.reshape(N, H, D),
        lambda w: w.reshape(N * H, D).T,
      ),
      TableEntry(p + "mlp.gate_proj.weight", (F, D), L + ("mlp", "gate"), _linear_in(F), _linear_out),
      TableEntry(p + "mlp.up_proj.weight", (F, D), L + ("mlp", "up"), _linear_in(F), _linear_out),
      TableEntry(p + "mlp.down_proj.weight", (D, F), L + ("mlp", "down"), _linear_in(D), _linear_out),
    ]
    if config.qkv_bias:
      flat = lambda w: w.reshape(-1)
      t += [
        TableEntry(p + "self_attn.q_proj.bias", (N * H,), L + ("attn", "q_bias"), lambda w: w.reshape(N, H), flat),
        TableEntry(p + "self_attn.k_proj.bias", (K * H,), L + ("attn", "k_bias"), lambda w: w.reshape(K, H), flat),
        TableEntry(p + "self_attn.v_proj.bias", (K * H,), L + ("attn", "v_bias"), lambda w: w.reshape(K, H), flat),
      ]
    if config.o_bias:
      t.append(TableEntry(p + "self_attn.o_proj.bias", (D,), L + ("attn", "o_bias"), _ident, _ident))
    if config.qk_norm:
      t += [
        TableEntry(p + "self_attn.q_norm.weight", (H,), L + ("attn", "q_norm"), _ident, _ident),
        TableEntry(p + "self_attn.k_norm.weight", (H,), L + ("attn", "k_norm"), _ident, _ident),
      ]
  t.append(TableEntry("model.norm.weight", (D,), ("final_norm",), _ident, _ident))
  if not config.tie_embeddings:
    t.append(TableEntry("lm_head.weight", (V, D), ("lm_head",), lambda w: w.T, lambda w: w.T))
  return t


# ------------------------------------------------------------------------------------------ reading
def read_config(path: str | os.PathLike) -> ModelConfig:
  """Read and validate ``config.json`` of a local HF folder."""
  folder = Path(path)
  if not folder.is_dir():
    raise CheckpointError(f"checkpoint folder not found: {folder}")
  cfg_file = folder / "config.json"
  if not cfg_file.is_file():
    raise CheckpointError(f"no config.json in {folder}")
  try:
    hf = json.loads(cfg_file.read_text())
  except json.JSONDecodeError as e:
    raise CheckpointError(f"corrupt config.json in {folder}: {e}") from None
  return ModelConfig.from_hf_config(hf)


def _weight_files(folder: Path) -> dict[str, Path]:
  """HF tensor name -> file holding it."""
  index = folder / "model.safetensors.index.json"
  single = folder / "model.safetensors"
  if index.is_file():
    try:
      weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
      raise CheckpointError(f"corrupt {index}: {e}") from None
    files = {name: folder / fname for name, fname in weight_map.items()}
    absent = sorted({str(f.name) for f in files.values() if not f.is_file()})
    if absent:
      raise CheckpointError(f"{index.name} names shard files that do not exist: {', '.join(absent)}")
    return files
  if single.is_file():
    from safetensors import safe_open

    try:
      with safe_open(str(single), framework="numpy") as f:
        return {name: single for name in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
      raise CheckpointError(f"corrupt safetensors file {single}: {e}") from None
  raise CheckpointError(f"no model.safetensors or model.safetensors.index.json in {folder}")


def _tensor_shapes(files: dict[str, Path]) -> dict[str, tuple[int, ...]]:
  from safetensors import safe_open

  shapes = {}
  for file in sorted(set(files.values())):
    try:
      with safe_open(str(file), framework="numpy") as f:
        for name in f.keys():
          if files.get(name) == file:
            shapes[name] = tuple(f.get_slice(name).get_shape())
    except Exception as e:
      raise CheckpointError(f"corrupt safetensors file {file}: {e}") from None
  missing_in_files = sorted(set(files) - set(shapes))
  if missing_in_files:
    raise CheckpointError(f"index lists tensors absent from their shard: {', '.join(missing_in_files)}")
  return shapes


def check_checkpoint(config: ModelConfig, shapes: dict[str, tuple[int, ...]]) -> None:
  """Raise one ``CheckpointError`` listing every missing, unexpected and mis-shaped tensor."""
  table = {e.hf_name: e for e in hf_table(config)}
  ignorable = {"lm_head.weight"} if config.tie_embeddings else set()
  missing = sorted(set(table) - set(shapes))
  unexpected = sorted(
    n for n in set(shapes) - set(table) if n not in ignorable and not re.search(r"rotary_emb\.inv_freq$", n)
  )
  misshaped = sorted(
    f"{n}: file {shapes[n]} vs expected {table[n].hf_shape}"
    for n in set(table) & set(shapes)
    if tuple(shapes[n]) != table[n].hf_shape
  )
  parts = []
  if missing:
    parts.append(f"{len(missing)} missing: {', '.join(missing)}")
  if unexpected:
    parts.append(f"{len(unexpected)} unexpected: {', '.join(unexpected)}")
  if misshaped:
    parts.append(f"{len(misshaped)} mis-shaped: {'; '.join(misshaped)}")
  if parts:
    raise CheckpointError("checkpoint does not match its config: " + " | ".join(parts))


def _set_path(tree: dict, path: tuple, value: Any) -> None:
  node = tree
  for key in path[:-1]:
    node = node[key]
  node[path[-1]] = value


def _empty_tree(config: ModelConfig) -> dict[str, Any]:
  """Nested dict/list skeleton of the params (layers as a list while filling)."""
  specs = param_specs(config)
  skeleton = jax.tree.map(lambda _: None, specs, is_leaf=lambda x: hasattr(x, "axes"))
  skeleton["layers"] = list(skeleton["layers"])
  return skeleton


def load_hf(
  path: str | os.PathLike, *, dtype: Any = None, mesh: jax.sharding.Mesh | None = None
) -> tuple[ModelConfig, dict[str, Any]]:
  """Load a local HF folder into ``(config, params)``.

  Args:
    path: folder with ``config.json`` and safetensors weights (single file or sharded with an index).
    dtype: parameter dtype (e.g. ``jnp.float32``, ``jnp.bfloat16``); ``None`` keeps the stored dtype.
    mesh: when given, each tensor is placed directly with its ``NamedSharding`` from the logical-axis rules
      (``jaxeff.sharding.RULES``), one tensor at a time.

  Returns:
    ``(ModelConfig, params)`` with params following ``jaxeff.models.decoder``'s table.

  Raises:
    CheckpointError: missing folder or files, corrupt files, or (all at once) missing / unexpected /
      mis-shaped tensors. ``UnsupportedConfigError`` for config fields jaxeff does not implement.

  Example:
    >>> config, params = load_hf("/path/to/Llama-3.2-1B")  # doctest: +SKIP
  """
  from safetensors import safe_open

  folder = Path(path)
  config = read_config(folder)
  files = _weight_files(folder)
  shapes = _tensor_shapes(files)
  check_checkpoint(config, shapes)

  logical_axes = param_logical_axes(config) if mesh is not None else None

  params = _empty_tree(config)
  by_file: dict[Path, list[TableEntry]] = {}
  for entry in hf_table(config):
    by_file.setdefault(files[entry.hf_name], []).append(entry)
  for file, entries in by_file.items():
    with safe_open(str(file), framework="numpy") as f:
      for entry in entries:
        w = np.asarray(f.get_tensor(entry.hf_name))
        w = entry.to_jax(w)
        target_dtype = dtype if dtype is not None else w.dtype
        if logical_axes is not None:
          sh = shard_lib.logical_sharding(_get_path(logical_axes, entry.path), w.shape, mesh)
          arr = jax.device_put(np.asarray(w).astype(target_dtype), sh)
        else:
          arr = jnp.asarray(w, dtype=target_dtype)
        _set_path(params, entry.path, arr)
  params["layers"] = tuple(params["layers"])
  return config, params


# ------------------------------------------------------------------------------------------ writing
def _get_path(tree: Any, path: tuple) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _atomic_write_bytes(target: Path, data: bytes) -> None:
  fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as fh:
      fh.write(data)
      fh.flush()
      os.fsync(fh.fileno())
    os.replace(tmp, target)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def save_hf(
  path: str | os.PathLike,
  config: ModelConfig,
  params: dict[str, Any],
  *,
  dtype: Any = None,
  max_shard_bytes: int = 5 * 2**30,
) -> Path:
  """Write ``(config, params)`` as a HF folder that transformers' PyTorch class loads.

  Every file is written to a temporary name and renamed into place, so an interrupted save never leaves a
  half-written ``model.safetensors`` under the final name. Tensors are split into shards of at most
  ``max_shard_bytes`` with a ``model.safetensors.index.json`` when they do not fit in one file.

  Args:
    path: output folder (created if needed).
    config: the model config (``to_hf_config`` must be able to express it).
    params: parameters following the decoder table.
    dtype: storage dtype; ``None`` keeps each array's dtype.
    max_shard_bytes: shard size limit.

  Returns:
    The folder path.
  """
  from safetensors.numpy import save

  hf_cfg = config.to_hf_config()
  table = hf_table(config)
  problems = []
  tensors: dict[str, np.ndarray] = {}
  for entry in table:
    try:
      leaf = _get_path(params, entry.path)
    except (KeyError, IndexError, TypeError):
      problems.append(f"missing param {'/'.join(map(str, entry.path))}")
      continue
    w = np.asarray(jax.device_get(leaf))
    if dtype is not None:
      w = w.astype(dtype)
    hf_w = np.ascontiguousarray(entry.to_hf(w))
    if hf_w.shape != entry.hf_shape:
      problems.append(f"{entry.hf_name}: shape {hf_w.shape} vs expected {entry.hf_shape}")
    tensors[entry.hf_name] = hf_w
  if problems:
    raise CheckpointError("cannot save: " + "; ".join(problems))

  folder = Path(path)
  folder.mkdir(parents=True, exist_ok=True)
  dtypes = {str(t.dtype) for t in tensors.values()}
  hf_cfg["dtype"] = "bfloat16" if "bfloat16" in dtypes else "float32"

  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, w in tensors.items():
    if shards[-1] and size + w.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = w
    size += w.nbytes
  if len(shards) == 1:
    _atomic_write_bytes(folder / "model.safetensors", save(shards[0], metadata={"format": "pt"}))
    stale = folder / "model.safetensors.index.json"
    if stale.exists():
      stale.unlink()
  else:
    weight_map = {}
    for j, shard in enumerate(shards):
      fname = f"model-{j + 1:05d}-of-{len(shards):05d}.safetensors"
      _atomic_write_bytes(folder / fname, save(shard, metadata={"format": "pt"}))
      weight_map.update({name: fname for name in shard})
    index = {"metadata": {"total_size": int(sum(w.nbytes for w in tensors.values()))}, "weight_map": weight_map}
    _atomic_write_bytes(folder / "model.safetensors.index.json", json.dumps(index, indent=2).encode())
  _atomic_write_bytes(folder / "config.json", json.dumps(hf_cfg, indent=2).encode())
  return folder
