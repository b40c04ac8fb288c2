"""Block-sparse causal prefill attention: one entry point over the XLA, Pallas-TPU and Pallas-GPU paths.

``block_sparse_attention(q, k, v, block_idx, block_cnt, ...)`` pads the length to a multiple of the block
size (padded keys are masked through ``kv_len``, padded query rows dropped), dispatches to the chosen
implementation, and carries a ``custom_vjp`` whose backward pass is a flash-style XLA backward (the forward and
its log-sum-exp recomputed tile by tile, gradients per kept block: memory O(L d)), so prefill through a Pallas
kernel can be differentiated (Pallas scalar-prefetch calls have no JVP rule).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from kernels_pallas.block_sparse_attention.gpu import block_sparse_attention_gpu
from kernels_pallas.block_sparse_attention.reference import (
  block_sparse_attention_reference,
  index_dtype,
  indices_to_mask,
  pad_indices,
  window_indices,
)
from kernels_pallas.block_sparse_attention.tpu import block_sparse_attention_tpu
from kernels_pallas.block_sparse_attention.xla import (
  block_sparse_attention_xla,
  block_sparse_attention_xla_bwd,
  block_sparse_attention_xla_grouped,
)

IMPLEMENTATIONS = ("xla", "xla_per_head", "pallas_tpu", "pallas_gpu", "reference")


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Tuning of the XLA paths: ``blocks_per_step`` key blocks per scan step; None (default) picks it from the head
  dimension (``default_blocks_per_step``). The block edge itself (``block_size``) is part of the mask, not a
  tuning knob."""

  blocks_per_step: int | None = None

  def __post_init__(self):
    if self.blocks_per_step is not None and self.blocks_per_step < 1:
      raise ValueError(f"BlockSizes.blocks_per_step must be >= 1, got {self.blocks_per_step}")


def default_blocks_per_step(head_dim: int, block_size: int) -> int:
  r"""Key blocks per step of the XLA walk: ``clip(2^22 / (d^2 bs), 1, 16)``, i.e. 256 keys a step at d = 128 and
  1,024 at d = 64 (2 and 8 blocks of 128).

  Each step's matmuls are ``[r bs, d] x [d, C bs]``: at a small head dimension a 2-block step is too little work
  for XLA:CPU's per-step overhead. Measured on 2 cores, ProxyAttn's lists (estimation included) against
  ``Dense`` in the same run: SmolLM2's layer (9 / 3 heads, d 64) at 16K 1.13x / 1.17x / 1.46x / 1.31x with 2 /
  4 / 8 / 16 blocks a step, at 8K 1.12x / 1.20x / 1.24x (2 / 4 / 8); the bench layer (8 / 2 heads, d 128) at
  16K 1.55x / 1.32x (2 / 4), at 8K 1.33x / 1.29x / 1.15x (2 / 4 / 8). Two points fitted, not a model of the
  machine: pass ``blocks_per_step`` to tune elsewhere.

  Example:
    >>> default_blocks_per_step(128, 128), default_blocks_per_step(64, 128), default_blocks_per_step(256, 128)
    (2, 8, 1)
  """
  return max(1, min(16, (1 << 22) // (head_dim * head_dim * block_size)))


def default_implementation() -> str:
  """``pallas_tpu`` on TPU, ``pallas_gpu`` on GPU, ``xla`` elsewhere."""
  backend = jax.default_backend()
  return {"tpu": "pallas_tpu", "gpu": "pallas_gpu", "cuda": "pallas_gpu", "rocm": "pallas_gpu"}.get(backend, "xla")


_T = lambda x: x.transpose(0, 2, 1, 3)  # [B, L, H, d] <-> [B, H, L, d]


def _run(impl, q, k, v, idx, cnt, kv_len, block_size, scale, interpret, blocks_per_step, layout="bhld", window=None):
  if impl == "xla":  # per kv head over the union of its query heads' lists (forward only; see _attend_bwd)
    return block_sparse_attention_xla_grouped(
      q,
      k,
      v,
      idx,
      cnt,
      kv_len,
      block_size=block_size,
      blocks_per_step=blocks_per_step,
      scale=scale,
      differentiable=False,
      layout=layout,
      window=window,
    )
  if layout == "blhd":  # the other paths are head-major: transpose in and out
    out = _run(
      impl, _T(q), _T(k), _T(v), idx, cnt, kv_len, block_size, scale, interpret, blocks_per_step, "bhld", window
    )
    return _T(out)
  kw = dict(block_size=block_size, scale=scale, window=window)
  if impl == "xla_per_head":
    return block_sparse_attention_xla(q, k, v, idx, cnt, kv_len, blocks_per_step=blocks_per_step, **kw)
  if impl == "pallas_tpu":
    return block_sparse_attention_tpu(q, k, v, idx, cnt, kv_len, interpret=interpret, **kw)
  if impl == "pallas_gpu":
    return block_sparse_attention_gpu(q, k, v, idx, cnt, kv_len, interpret=interpret, **kw)
  mask = indices_to_mask(idx, cnt, q.shape[2] // block_size)
  return block_sparse_attention_reference(q, k, v, mask, kv_len=kv_len, **kw).astype(q.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9, 10, 11, 12))
def _attend(q, k, v, idx, cnt, kv_len, impl, block_size, scale, interpret, blocks_per_step, layout, window):
  return _run(impl, q, k, v, idx, cnt, kv_len, block_size, scale, interpret, blocks_per_step, layout, window)


def _attend_fwd(q, k, v, idx, cnt, kv_len, impl, block_size, scale, interpret, blocks_per_step, layout, window):
  out = _run(impl, q, k, v, idx, cnt, kv_len, block_size, scale, interpret, blocks_per_step, layout, window)
  return out, (q, k, v, idx, cnt, kv_len)


def _attend_bwd(impl, block_size, scale, interpret, blocks_per_step, layout, window, res, g):
  # Flash-style: recompute O and the log-sum-exp tile by tile, then the gradients per kept block (memory O(L d)).
  q, k, v, idx, cnt, kv_len = res
  bwd = lambda q_, k_, v_, g_: block_sparse_attention_xla_bwd(
    q_,
    k_,
    v_,
    g_,
    idx,
    cnt,
    kv_len,
    block_size=block_size,
    scale=scale,
    blocks_per_step=blocks_per_step,
    window=window,
  )
  if layout == "blhd":
    return (*(_T(x) for x in bwd(_T(q), _T(k), _T(v), _T(g))), None, None, None)
  return (*bwd(q, k, v, g), None, None, None)


_attend.defvjp(_attend_fwd, _attend_bwd)


def block_sparse_attention(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  block_idx: jax.Array,
  block_cnt: jax.Array,
  *,
  block_size: int,
  kv_len: jax.Array | None = None,
  scale: float | None = None,
  implementation: str | None = None,
  interpret=False,
  blocks_per_step: int | None = None,
  block_sizes: BlockSizes = BlockSizes(),
  layout: str = "bhld",
  window: int | None = None,
) -> jax.Array:
  r"""Causal attention restricted to kept key blocks: for query t in block i,

    o_t = \sum_{s \in S(t)} softmax_s(q_t . k_s * scale) v_s,
    S(t) = {s : s // bs in block_idx[i, :block_cnt[i]],  s <= t,  s < kv_len,  t - s < window},

  with GQA (query head h reads kv head h // (Hq // Hkv); K/V are never repeated in memory). Padded slots
  (``j >= block_cnt``) are ignored whatever id they hold; repeated ids among valid slots are the caller's
  error (estimators never produce them).

  Args:
    q: [B, Hq, L, d]; k, v: [B, Hkv, L, d].
    block_idx: integer [B, Hq, nb, Kmax], nb = ceil(L / block_size) (kept as ``index_dtype(nb)``: int16 up to
      nb = 32767); block_cnt: int32 [B, Hq, nb].
    block_size: tile edge for queries and keys.
    kv_len: [B] real keys per row (right padding); default L.
    scale: default 1/sqrt(d).
    implementation: 'xla' (CPU fast path: per kv head, the group's query heads walk the union of their
      lists together), 'xla_per_head' (each head its own list), 'pallas_tpu', 'pallas_gpu', 'reference'
      (dense f32 oracle); default by backend (``default_implementation``).
    interpret: run a Pallas kernel in interpret mode (CPU tests); ``pltpu.InterpretParams()`` for the TPU
      simulator.
    block_sizes: tuning (``BlockSizes``); ``blocks_per_step``, if given, overrides ``block_sizes.blocks_per_step``
      (None in both: ``default_blocks_per_step(d, block_size)``).
    layout: ``"bhld"`` (the shapes above) or ``"blhd"`` (q [B, L, Hq, d], k / v [B, L, Hkv, d], output
      [B, L, Hq, d]: the model's layout). The XLA path reads and writes it tile by tile, so no transposed copy
      of q, k, v or the output is made (at 128K tokens of Llama-3.1-8B's layer those copies are 5 GiB); the
      other paths transpose.
    window: sliding window (a sliding-window layer): the block mask and the window intersect. Blocks wholly
      outside the window are dropped from the lists before the kernel runs (``window_indices``), the window's
      edge block is masked at token level. None = full causal.

  Returns:
    [B, Hq, L, d] in q's dtype; a query with no visible key gives zeros.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> q = k = v = jax.random.normal(jax.random.key(0), (1, 2, 256, 64))
    >>> idx = jnp.broadcast_to(jnp.arange(2, dtype=jnp.int32), (1, 2, 2, 2)); cnt = jnp.array([[[1, 2]] * 2])
    >>> block_sparse_attention(q, k, v, idx, cnt, block_size=128).shape
    (1, 2, 256, 64)

  Reference: ProxyAttn (arXiv 2509.24745) uses block-sparse prefill attention with per-head masks.
  """
  if layout not in ("bhld", "blhd"):
    raise ValueError(f"layout must be 'bhld' or 'blhd', got {layout!r}")
  tm = layout == "blhd"
  if q.ndim != 4 or k.ndim != 4:
    raise ValueError(f"q, k and v must be 4-D ({layout}), got q {q.shape}, k {k.shape}")
  B, Hq, L, d = (q.shape[0], q.shape[2], q.shape[1], q.shape[3]) if tm else q.shape
  Hkv = k.shape[2] if tm else k.shape[1]
  want = (B, L, Hkv, d) if tm else (B, Hkv, L, d)
  if k.shape != want or v.shape != k.shape:
    what = "[B, L, Hkv, d]" if tm else "[B, Hkv, L, d]"
    raise ValueError(f"k and v must be {what} matching q {q.shape}, got k {k.shape}, v {v.shape}")
  if Hq % Hkv:
    raise ValueError(f"query heads {Hq} must be a multiple of kv heads {Hkv}")
  nb = -(-L // block_size)
  if block_idx.shape[:3] != (B, Hq, nb) or block_cnt.shape != (B, Hq, nb):
    raise ValueError(
      f"block_idx must be [B, Hq, nb, Kmax] = [{B}, {Hq}, {nb}, Kmax] and block_cnt [{B}, {Hq}, {nb}], got "
      f"{block_idx.shape} and {block_cnt.shape}"
    )
  if window is not None:
    if isinstance(window, bool) or not hasattr(window, "__index__") or window < 1:
      raise ValueError(f"window must be a positive int or None, got {window!r}")
    window = int(window)
  if blocks_per_step is None:
    blocks_per_step = block_sizes.blocks_per_step
  if blocks_per_step is None:
    blocks_per_step = default_blocks_per_step(d, block_size)
  elif isinstance(blocks_per_step, bool) or not isinstance(blocks_per_step, int) or blocks_per_step < 1:
    raise ValueError(f"blocks_per_step must be a positive int or None, got {blocks_per_step!r}")
  impl = implementation or default_implementation()
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {impl!r}")
  Lp = nb * block_size
  kv_len = jnp.full((B,), L, jnp.int32) if kv_len is None else jnp.minimum(jnp.asarray(kv_len, jnp.int32), L)
  if Lp != L:
    padw = ((0, 0), (0, Lp - L), (0, 0), (0, 0)) if tm else ((0, 0), (0, 0), (0, Lp - L), (0, 0))
    q, k, v = jnp.pad(q, padw), jnp.pad(k, padw), jnp.pad(v, padw)
  block_cnt = jnp.asarray(block_cnt, jnp.int32)
  block_idx = jnp.asarray(block_idx)
  if not jnp.issubdtype(block_idx.dtype, jnp.integer):
    raise ValueError(f"block_idx must hold integer block ids, got dtype {block_idx.dtype}")
  idx = pad_indices(block_idx.astype(index_dtype(nb)), block_cnt)  # compact ids (int16 up to 4M tokens)
  if window is not None:
    idx, block_cnt = window_indices(idx, block_cnt, window, block_size)
  out = _attend(q, k, v, idx, block_cnt, kv_len, impl, block_size, scale, interpret, blocks_per_step, layout, window)
  return out[:, :L] if tm else out[:, :, :L]
