"""Pallas GPU (Triton) kernel: each program owns one (batch, query head, query block) and loops over its
index list in-kernel (``fori_loop(0, cnt)``), loading key/value tiles with ``pl.ds(id * bs, bs)`` from its
kv head (no scalar prefetch on GPU backends). Online softmax in registers; causal diagonal and right padding
masked at token level, and a sliding window if given. Triton needs power-of-two tile shapes: ``block_size``, ``d`` and the index-list width
(padded here) must be powers of two.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from kernels_pallas.block_sparse_attention.reference import visible

_NEG = -1e30


def _kernel(idx_ref, cnt_ref, kvlen_ref, q_ref, k_ref, v_ref, o_ref, *, bs, scale, window):
  i = pl.program_id(2)
  q = q_ref[...]
  cnt = cnt_ref[0]
  kv_len = kvlen_ref[0]
  d = q.shape[-1]
  q_tok = i * bs + jax.lax.broadcasted_iota(jnp.int32, (bs, bs), 0)

  def body(j, carry):
    m, l, acc = carry
    kblk = idx_ref[j]
    k = k_ref[pl.ds(kblk * bs, bs), :]
    v = v_ref[pl.ds(kblk * bs, bs), :]
    s = jax.lax.dot_general(q, k, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32) * scale
    k_tok = kblk * bs + jax.lax.broadcasted_iota(jnp.int32, (bs, bs), 1)
    ok = visible(k_tok, q_tok, window) & (k_tok < kv_len)
    s = jnp.where(ok, s, _NEG)
    m_new = jnp.maximum(m, jnp.max(s, axis=1))
    p = jnp.where(ok, jnp.exp(s - m_new[:, None]), 0.0)
    corr = jnp.exp(m - m_new)
    pv = jax.lax.dot_general(p.astype(v.dtype), v, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    return m_new, l * corr + p.sum(axis=1), acc * corr[:, None] + pv

  init = (jnp.full((bs,), _NEG, jnp.float32), jnp.zeros((bs,), jnp.float32), jnp.zeros((bs, d), jnp.float32))
  m, l, acc = jax.lax.fori_loop(0, cnt, body, init)
  o_ref[...] = (acc / jnp.where(l > 0, l, 1.0)[:, None]).astype(o_ref.dtype)


@functools.partial(jax.jit, static_argnames=("block_size", "scale", "interpret", "num_warps", "num_stages", "window"))
def block_sparse_attention_gpu(
  q,
  k,
  v,
  block_idx,
  block_cnt,
  kv_len,
  *,
  block_size: int,
  scale: float | None = None,
  interpret: bool = False,
  num_warps: int = 4,
  num_stages: int = 2,
  window: int | None = None,
):
  """Pallas GPU block-sparse attention (Triton backend). Shapes and ``window`` as ``block_sparse_attention_xla``."""
  from jax.experimental.pallas import triton as pltr

  B, Hq, Lp, d = q.shape
  Hkv = k.shape[1]
  r = Hq // Hkv
  bs = block_size
  nq = Lp // bs
  kmax = block_idx.shape[-1]
  kpow = 1 << max(0, (kmax - 1).bit_length())
  idx = jnp.pad(block_idx.astype(jnp.int32), ((0, 0), (0, 0), (0, 0), (0, kpow - kmax)))
  scale = d**-0.5 if scale is None else scale
  kernel = functools.partial(_kernel, bs=bs, scale=scale, window=window)
  return pl.pallas_call(
    kernel,
    grid=(B, Hq, nq),
    in_specs=[
      pl.BlockSpec((None, None, None, kpow), lambda b, h, i: (b, h, i, 0)),
      pl.BlockSpec((None, None, None, 1), lambda b, h, i: (b, h, i, 0)),
      pl.BlockSpec((None, 1), lambda b, h, i: (b, 0)),
      pl.BlockSpec((None, None, bs, d), lambda b, h, i: (b, h, i, 0)),
      pl.BlockSpec((None, None, Lp, d), lambda b, h, i: (b, h // r, 0, 0)),
      pl.BlockSpec((None, None, Lp, d), lambda b, h, i: (b, h // r, 0, 0)),
    ],
    out_specs=pl.BlockSpec((None, None, bs, d), lambda b, h, i: (b, h, i, 0)),
    out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
    compiler_params=pltr.CompilerParams(num_warps=num_warps, num_stages=num_stages),
    interpret=interpret,
  )(idx, block_cnt.astype(jnp.int32)[..., None], kv_len.astype(jnp.int32)[:, None], q, k, v)
