"""Hugging Face checkpoint I/O: local folders <-> (ModelConfig, params), through one table.

``hf_table(config)`` lists every tensor a HF checkpoint of ``config`` holds: its HF name, HF shape, the
jaxeff leaf path, and the transpose/reshape both ways (torch ``nn.Linear`` stores [out, in]; jaxeff stores
[in, ...out] with heads split out). Loading checks the files against the table and reports **all**
missing, unexpected and mis-shaped tensors in one error before any array is built.

Files: ``config.json``; ``model.safetensors`` or ``model.safetensors.index.json`` + shards; optional
``tokenizer.json``. Nothing is downloaded: ``path`` must be a local folder.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_dtypes
import numpy as np

from jaxeff import sharding as shard_lib
from jaxeff.config import ModelConfig
from jaxeff.config.hf import family
from jaxeff.io import read_text
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
  expert: int | None = None  # per-expert HF tensor: slice ``expert`` of the stacked [E, ...] leaf
  offset: float = 0.0  # jaxeff leaf = HF tensor + offset (Gemma's RMSNorm multiplies by 1 + w; jaxeff stores 1 + w)


def _reshape(*shape):
  return lambda w: w.reshape(shape)


def hf_table(config: ModelConfig) -> list[TableEntry]:
  """The rename/reshape table between HF tensor names and jaxeff parameter leaves (Llama family).

  jaxeff stores weights output-major like torch ``nn.Linear`` ([out, in]), so every entry is a pure reshape
  (e.g. ``q_proj.weight`` [N*H, D] <-> ``attn.q`` [N, H, D]): a memory-mapped tensor becomes a jaxeff leaf
  without a copy.
  """
  D, N, K, H, F, V = (
    config.d_model,
    config.n_heads,
    config.n_kv_heads,
    config.head_dim,
    config.d_ff,
    config.vocab_size,
  )

  offset = family(config.model_type).norm_offset

  def entry(name, hf_shape, path, jax_shape):
    return TableEntry(name, tuple(hf_shape), path, _reshape(*jax_shape), _reshape(*hf_shape))

  def norm(name, shape, path, jax_shape):
    return dataclasses.replace(entry(name, shape, path, jax_shape), offset=offset)

  t: list[TableEntry] = [entry("model.embed_tokens.weight", (V, D), ("embed",), (V, D))]
  for i in range(config.n_layers):
    p = f"model.layers.{i}."
    L = ("layers", i)
    # Gemma: HF's post_attention_layernorm is the norm *on* the attention output; the MLP's input norm is
    # pre_feedforward_layernorm
    mlp_norm = "pre_feedforward_layernorm" if config.post_norms else "post_attention_layernorm"
    t += [
      norm(p + "input_layernorm.weight", (D,), L + ("attn_norm",), (D,)),
      norm(p + f"{mlp_norm}.weight", (D,), L + ("mlp_norm",), (D,)),
    ]
    if config.post_norms:
      t += [
        norm(p + "post_attention_layernorm.weight", (D,), L + ("attn_post_norm",), (D,)),
        norm(p + "post_feedforward_layernorm.weight", (D,), L + ("mlp_post_norm",), (D,)),
      ]
    t += [
      entry(p + "self_attn.q_proj.weight", (N * H, D), L + ("attn", "q"), (N, H, D)),
      entry(p + "self_attn.k_proj.weight", (K * H, D), L + ("attn", "k"), (K, H, D)),
      entry(p + "self_attn.v_proj.weight", (K * H, D), L + ("attn", "v"), (K, H, D)),
      entry(p + "self_attn.o_proj.weight", (D, N * H), L + ("attn", "o"), (D, N, H)),
    ]
    if config.is_moe(i):
      t += _moe_entries(config, p, L)
    else:
      t += [
        entry(p + "mlp.gate_proj.weight", (F, D), L + ("mlp", "gate"), (F, D)),
        entry(p + "mlp.up_proj.weight", (F, D), L + ("mlp", "up"), (F, D)),
        entry(p + "mlp.down_proj.weight", (D, F), L + ("mlp", "down"), (D, F)),
      ]
    if config.qkv_bias:
      t += [
        entry(p + "self_attn.q_proj.bias", (N * H,), L + ("attn", "q_bias"), (N, H)),
        entry(p + "self_attn.k_proj.bias", (K * H,), L + ("attn", "k_bias"), (K, H)),
        entry(p + "self_attn.v_proj.bias", (K * H,), L + ("attn", "v_bias"), (K, H)),
      ]
    if config.o_bias:
      t.append(entry(p + "self_attn.o_proj.bias", (D,), L + ("attn", "o_bias"), (D,)))
    if config.qk_norm and config.qk_norm_scope == "full":
      t += [
        entry(p + "self_attn.q_norm.weight", (N * H,), L + ("attn", "q_norm"), (N, H)),
        entry(p + "self_attn.k_norm.weight", (K * H,), L + ("attn", "k_norm"), (K, H)),
      ]
    elif config.qk_norm:
      t += [
        norm(p + "self_attn.q_norm.weight", (H,), L + ("attn", "q_norm"), (H,)),
        norm(p + "self_attn.k_norm.weight", (H,), L + ("attn", "k_norm"), (H,)),
      ]
  t.append(norm("model.norm.weight", (D,), ("final_norm",), (D,)))
  if not config.tie_embeddings:
    t.append(entry("lm_head.weight", (V, D), ("lm_head",), (V, D)))
  return t


def _moe_entries(config: ModelConfig, p: str, L: tuple) -> list[TableEntry]:
  """Per-expert hub keys of one MoE layer (Mixtral ``block_sparse_moe.experts.{e}.w1/w3/w2``, Qwen-MoE
  ``mlp.experts.{e}.gate_proj/up_proj/down_proj``; routers, Qwen2-MoE's shared expert and its gate)."""
  D, E, I, S = config.d_model, config.n_experts, config.d_expert, config.d_shared
  same = lambda shape: (_reshape(*shape), _reshape(*shape))
  out = []
  if config.model_type == "mixtral":
    names, router = {"gate": "w1", "up": "w3", "down": "w2"}, p + "block_sparse_moe.gate.weight"
    fmt = p + "block_sparse_moe.experts.{e}.{n}.weight"
  else:
    names, router = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}, p + "mlp.gate.weight"
    fmt = p + "mlp.experts.{e}.{n}.weight"
  out.append(TableEntry(router, (E, D), L + ("mlp", "router"), *same((E, D))))
  for e in range(E):
    for leaf, n in names.items():
      shape = (D, I) if leaf == "down" else (I, D)
      out.append(TableEntry(fmt.format(e=e, n=n), shape, L + ("mlp", leaf), *same(shape), expert=e))
  if S:
    for leaf in ("gate", "up", "down"):
      shape = (D, S) if leaf == "down" else (S, D)
      out.append(
        TableEntry(p + f"mlp.shared_expert.{leaf}_proj.weight", shape, L + ("mlp", "shared", leaf), *same(shape))
      )
    if config.shared_gate:
      out.append(TableEntry(p + "mlp.shared_expert_gate.weight", (1, D), L + ("mlp", "shared_gate"), *same((1, D))))
  return out


# ------------------------------------------------------------------------------------------ reading
def read_config(path: str | os.PathLike) -> ModelConfig:
  """Read and validate ``config.json`` of a local HF folder."""
  folder = Path(path)
  if not folder.is_dir():
    what = "is not a folder (a checkpoint is a folder holding config.json)" if folder.exists() else "not found"
    raise CheckpointError(f"checkpoint folder {what}: {folder}")
  cfg_file = folder / "config.json"
  if not cfg_file.is_file():
    raise CheckpointError(f"no config.json in {folder}")
  try:
    hf = json.loads(read_text(cfg_file))
  except (json.JSONDecodeError, ValueError) as e:
    raise CheckpointError(f"corrupt config.json in {folder}: {e}") from None
  return ModelConfig.from_hf_config(hf)


_ST_DTYPES = {
  "F64": np.float64,
  "F32": np.float32,
  "F16": np.float16,
  "BF16": ml_dtypes.bfloat16,
  "I64": np.int64,
  "I32": np.int32,
  "I16": np.int16,
  "I8": np.int8,
  "U8": np.uint8,
  "BOOL": np.bool_,
}


class SafetensorsFile:
  """A memory-mapped safetensors file: the header is validated up front; tensors are zero-copy views.

  Layout (huggingface/safetensors): 8-byte little-endian header length n, n bytes of JSON
  ``{name: {dtype, shape, data_offsets: [begin, end]}}``, then the data. The mapping is copy-on-write
  (``mode='c'``), so nothing can write back into the file, and files replaced by ``save_hf``'s atomic rename
  stay valid for arrays that alias them.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    size = self.path.stat().st_size
    try:
      with open(self.path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
          raise ValueError("file shorter than its 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
          raise ValueError(f"header length {n} exceeds the file size {size}")
        header = json.loads(fh.read(n))
      if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
      header.pop("__metadata__", None)
      data_size = size - 8 - n
      self._entries = {}
      for name, info in header.items():
        dtype = _ST_DTYPES.get(info.get("dtype"))
        if dtype is None:
          raise ValueError(f"tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
        shape = tuple(int(d) for d in info["shape"])
        begin, end = (int(o) for o in info["data_offsets"])
        if not 0 <= begin <= end <= data_size or end - begin != int(np.prod(shape)) * np.dtype(dtype).itemsize:
          raise ValueError(f"tensor {name!r} has inconsistent offsets {begin}..{end} for shape {shape}")
        if any(d < 0 for d in shape):
          raise ValueError(f"tensor {name!r} has a negative dimension in {shape}")
        self._entries[name] = (dtype, shape, begin, end)
      # the safetensors library's rule: sorted by offset, the tensors tile the data section exactly (no overlap,
      # no gap, nothing after the last one)
      expect = 0
      for name, (_, _, begin, end) in sorted(self._entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin != expect:
          what = "overlaps the previous tensor" if begin < expect else "leaves a gap before it"
          raise ValueError(f"tensor {name!r} at offsets {begin}..{end} {what} (expected to start at {expect})")
        expect = end
      if expect != data_size:
        raise ValueError(f"the tensors cover {expect} of the {data_size} data bytes")
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as e:
      raise CheckpointError(f"corrupt safetensors file {self.path}: {e}") from None
    self._base = 8 + n
    self._mm = np.memmap(self.path, dtype=np.uint8, mode="c") if data_size > 0 else None

  def keys(self) -> list[str]:
    return list(self._entries)

  def shape(self, name: str) -> tuple[int, ...]:
    return self._entries[name][1]

  def get(self, name: str) -> np.ndarray:
    """Zero-copy view of tensor ``name``."""
    dtype, shape, begin, end = self._entries[name]
    if self._mm is None or begin == end:
      return np.zeros(shape, dtype)
    return self._mm[self._base + begin : self._base + end].view(dtype).reshape(shape)


_LOAD_THREADS = min(8, os.cpu_count() or 1)  # load_hf's reader threads (one per core, at most 8)


_PIECE = 1 << 22  # bytes per copy / check task: big tensors are split so every reader thread has work


def _leaf_plan(srcs: list[tuple[np.ndarray, SafetensorsFile, str]], dtype) -> tuple[tuple, np.dtype, bool]:
  """``(leaf shape, leaf dtype, copy needed)`` for one leaf's ``(mapped view, file, name)`` sources."""
  view = srcs[0][0]
  dtype = np.dtype(view.dtype if dtype is None else dtype)
  shape = (len(srcs), *view.shape) if len(srcs) > 1 else view.shape
  in_place = len(srcs) == 1 and view.dtype == dtype and (view.ctypes.data % ALIGN == 0 or view.nbytes == 0)
  return shape, dtype, not in_place


def _host_leaves(groups: dict[tuple, list], dtype, check: bool) -> dict[tuple, tuple[np.ndarray, bool]]:
  """Every parameter leaf on the host, ready for ``device_put(may_alias=True)``, with its finiteness.

  A leaf is the mapped view itself when it is one tensor, 64-byte aligned and already in ``dtype`` (files
  ``save_hf`` writes: no copy at all); else its bytes are copied out of the mapping (converted to ``dtype`` in
  the same pass) into one shared, 64-byte aligned arena. Files written elsewhere put tensors at arbitrary
  offsets, which XLA:CPU cannot use in place. Measured on 180 MB (45 M float32 parameters, 2 cores): one arena
  instead of a buffer per leaf halves the page-fault cost of fresh memory (huge pages: 16 vs 34 ms), numpy's
  copy out of the mapping is about 3x faster than ``pread`` into the buffer (15 vs 44 ms incl. faults), and
  the copy and the finiteness check run in pieces of 4 MB over all threads. The arena lives as long as any
  leaf carved from it. The layouts are pure reshapes, so the bytes are already in the leaf's order.
  """
  plans = {path: _leaf_plan(srcs, dtype) for path, srcs in groups.items()}
  sizes = {path: -(-int(np.prod(shape)) * dt.itemsize // ALIGN) * ALIGN for path, (shape, dt, copy) in plans.items()}
  total = sum(sizes[path] for path, (_, _, copy) in plans.items() if copy)
  arena = np.empty(total + ALIGN, np.uint8)
  at = -arena.ctypes.data % ALIGN
  out: dict[tuple, np.ndarray] = {}
  tasks = []  # (destination piece or None, source piece, leaf path)
  for path, srcs in groups.items():
    shape, dt, copy = plans[path]
    if copy:
      n = int(np.prod(shape))
      leaf = arena[at : at + n * dt.itemsize].view(dt).reshape(shape)
      at += sizes[path]
      dests = [leaf[i] for i in range(len(srcs))] if len(srcs) > 1 else [leaf]
    else:
      leaf = srcs[0][0]
      dests = [None]
    out[path] = leaf
    for dst, (src, _, _) in zip(dests, srcs):
      flat_src = src.reshape(-1)
      flat_dst = None if dst is None else dst.reshape(-1)
      step = max(1, _PIECE // max(src.itemsize, 1))
      for k in range(0, max(flat_src.size, 1), step):
        tasks.append((None if flat_dst is None else flat_dst[k : k + step], flat_src[k : k + step], path))

  def run(task):  # numpy's copy and sum release the GIL: the pieces go in parallel
    dst, src, path = task
    if dst is not None:
      np.copyto(dst, src, casting="unsafe")
    return path, not check or _all_finite(src if dst is None else dst)

  finite = dict.fromkeys(groups, True)
  with concurrent.futures.ThreadPoolExecutor(max_workers=_LOAD_THREADS) as pool:
    for path, ok in pool.map(run, tasks):
      finite[path] &= ok
  return {path: (out[path], finite[path]) for path in groups}


def with_offset(w: np.ndarray, offset: float) -> np.ndarray:
  """``w + offset`` computed in float32 (as Gemma's ``1.0 + weight.float()``), in ``w``'s dtype; ``w`` itself
  when the offset is 0."""
  if not offset:
    return w
  return (w.astype(np.float32) + np.float32(offset)).astype(w.dtype)


def _all_finite(w: np.ndarray) -> bool:
  """No NaN / infinity in ``w``: one float32 sum (a non-finite entry makes it non-finite), confirmed by the
  exact element test only when the sum is not finite (a finite tensor whose sum overflows)."""
  if not (np.issubdtype(w.dtype, np.floating) or w.dtype == np.dtype(ml_dtypes.bfloat16)):
    return True
  with np.errstate(over="ignore", invalid="ignore"):
    return bool(np.isfinite(w.sum(dtype=np.float32))) or bool(np.isfinite(w).all())


def _open_weights(folder: Path) -> dict[str, SafetensorsFile]:
  """HF tensor name -> the (opened) file holding it."""
  index = folder / "model.safetensors.index.json"
  single = folder / "model.safetensors"
  if index.is_file():
    try:
      weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
      raise CheckpointError(f"corrupt {index}: {e}") from None
    absent = sorted({f for f in weight_map.values() if not (folder / f).is_file()})
    if absent:
      raise CheckpointError(f"{index.name} names shard files that do not exist: {', '.join(absent)}")
    opened = {f: SafetensorsFile(folder / f) for f in sorted(set(weight_map.values()))}
    stray = sorted(name for name, f in weight_map.items() if name not in opened[f].keys())
    if stray:
      raise CheckpointError(f"index lists tensors absent from their shard: {', '.join(stray)}")
    return {name: opened[f] for name, f in weight_map.items()}
  if single.is_file():
    f = SafetensorsFile(single)
    return {name: f for name in f.keys()}
  raise CheckpointError(f"no model.safetensors or model.safetensors.index.json in {folder}")


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
  path: str | os.PathLike,
  *,
  dtype: Any = None,
  mesh: jax.sharding.Mesh | None = None,
  allow_nonfinite: bool = False,
) -> tuple[ModelConfig, dict[str, Any]]:
  """Load a local HF folder into ``(config, params)``.

  Args:
    path: folder with ``config.json`` and safetensors weights (single file or sharded with an index).
    dtype: parameter dtype (e.g. ``jnp.float32``, ``jnp.bfloat16``); ``None`` keeps the stored dtype.
    mesh: when given, each tensor is placed directly with its ``NamedSharding`` from the logical-axis rules
      (``jaxeff.sharding.RULES``).
    allow_nonfinite: load tensors holding NaN or infinity (by default they are refused, by name: a corrupt
      checkpoint must not load as a model that computes finite-looking wrong numbers).

  Returns:
    ``(ModelConfig, params)`` with params following ``jaxeff.models.decoder``'s table.

  Raises:
    CheckpointError: missing folder or files, corrupt files, or (all at once) missing / unexpected /
      mis-shaped tensors; (all at once) tensors with NaN or infinity unless ``allow_nonfinite``.
      ``UnsupportedConfigError`` for config fields jaxeff does not implement.

  Example:
    >>> config, params = load_hf("/path/to/Llama-3.2-1B")  # doctest: +SKIP
  """
  folder = Path(path)
  config = read_config(folder)
  files = _open_weights(folder)
  check_checkpoint(config, {name: f.shape(name) for name, f in files.items()})
  logical_axes = param_logical_axes(config) if mesh is not None else None

  params = _empty_tree(config)
  table = hf_table(config)
  groups: dict[tuple, list] = {}  # leaf path -> its sources (several for per-expert tensors)
  for e in table:
    f = files[e.hf_name]
    groups.setdefault(e.path, []).append((e.to_jax(f.get(e.hf_name)), f, e.hf_name))
  offsets = {e.path: e.offset for e in table if e.offset}

  loaded = _host_leaves(groups, dtype, check=not allow_nonfinite)
  if not allow_nonfinite:
    names = {e.path: e.hf_name for e in table}
    bad = [names.get(path, ".".join(map(str, path))) for path, (_, ok) in loaded.items() if not ok]
    if bad:
      raise CheckpointError(
        f"{folder}: {len(bad)} tensor(s) hold NaN or infinity: {', '.join(sorted(bad))} (a corrupt checkpoint; "
        "load_hf(..., allow_nonfinite=True) loads it anyway)"
      )
  paths = list(loaded)
  hosts = [with_offset(loaded[path][0], offsets.get(path, 0.0)) for path in paths]
  shardings = [None] * len(paths)
  if logical_axes is not None:
    shardings = [shard_lib.logical_sharding(_get_path(logical_axes, p), w.shape, mesh) for p, w in zip(paths, hosts)]
  # One batched put (half the per-leaf dispatch cost). may_alias: on CPU a 64-byte aligned host array is used in
  # place (no copy); elsewhere this is the host->device copy.
  for path, arr in zip(paths, jax.device_put(hosts, shardings, may_alias=True)):
    _set_path(params, path, arr)
  params["layers"] = tuple(params["layers"])
  return config, params


# ------------------------------------------------------------------------------------------ writing
def _get_path(tree: Any, path: tuple) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _atomic_write(target: Path, write: Callable[[Any], None]) -> None:
  """Write through ``write(fh)`` into a temporary file beside ``target``, fsync, then rename into place."""
  fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as fh:
      write(fh)
      fh.flush()
      os.fsync(fh.fileno())
    os.replace(tmp, target)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def _atomic_write_bytes(target: Path, data: bytes) -> None:
  _atomic_write(target, lambda fh: fh.write(data))


_ST_NAMES = {np.dtype(v): k for k, v in _ST_DTYPES.items()}
ALIGN = 64  # XLA:CPU uses host buffers in place only when 64-byte aligned


def write_safetensors(target: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
  """Write a safetensors file whose tensors start on 64-byte boundaries (when their sizes allow).

  Standard format (readable by the ``safetensors`` library and transformers); the header is padded with
  spaces so the data starts aligned, and tensors whose byte size is a multiple of 64 come first, so each of
  them is aligned and later loads map them without a copy. Streams tensor by tensor (no second copy of the
  model in memory) and renames into place atomically.
  """
  order = sorted(tensors, key=lambda k: (tensors[k].nbytes % ALIGN != 0, k))
  header: dict[str, Any] = {"__metadata__": metadata or {}}
  offset = 0
  for name in order:
    w = tensors[name]
    header[name] = {"dtype": _ST_NAMES[w.dtype], "shape": list(w.shape), "data_offsets": [offset, offset + w.nbytes]}
    offset += w.nbytes
  raw = json.dumps(header, separators=(",", ":")).encode()
  raw += b" " * (-(8 + len(raw)) % ALIGN)

  def write(fh):
    fh.write(struct.pack("<Q", len(raw)))
    fh.write(raw)
    for name in order:
      fh.write(memoryview(np.ascontiguousarray(tensors[name]).reshape(-1).view(np.uint8)))

  _atomic_write(target, write)


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
  hf_cfg = config.to_hf_config()
  table = hf_table(config)
  problems = []
  tensors: dict[str, np.ndarray] = {}
  for entry in table:
    try:
      leaf = _get_path(params, entry.path)
      if entry.expert is not None:
        leaf = leaf[entry.expert]
    except (KeyError, IndexError, TypeError):
      problems.append(f"missing param {'/'.join(map(str, entry.path))}")
      continue
    w = np.asarray(jax.device_get(leaf))
    if dtype is not None:
      w = w.astype(dtype)
    hf_w = np.ascontiguousarray(entry.to_hf(with_offset(w, -entry.offset)))
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
    write_safetensors(folder / "model.safetensors", shards[0], {"format": "pt"})
    stale = folder / "model.safetensors.index.json"
    if stale.exists():
      stale.unlink()
  else:
    weight_map = {}
    for j, shard in enumerate(shards):
      fname = f"model-{j + 1:05d}-of-{len(shards):05d}.safetensors"
      write_safetensors(folder / fname, shard, {"format": "pt"})
      weight_map.update({name: fname for name in shard})
    index = {"metadata": {"total_size": int(sum(w.nbytes for w in tensors.values()))}, "weight_map": weight_map}
    _atomic_write_bytes(folder / "model.safetensors.index.json", json.dumps(index, indent=2).encode())
  _atomic_write_bytes(folder / "config.json", json.dumps(hf_cfg, indent=2).encode())
  return folder
