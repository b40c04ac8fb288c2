"""Pallas TPU kernel: scalar-prefetched index lists drive the K/V ``index_map``.

Grid ``(B, Hq, nq, Kmax)``; step ``(b, h, i, j)`` loads key/value block ``block_idx[b, h, i, j]`` of kv head
``h // r`` into VMEM (the pipeline skips the copy when the id repeats, which is why padded slots repeat the
last valid id) and, under ``pl.when(j < block_cnt[b, h, i])``, folds it into an online softmax kept in VMEM
scratch (running max, normaliser, accumulator). The causal diagonal and right padding are masked at token
level from ``kv_len`` (scalar-prefetched too). The last grid axis is ``arbitrary`` (sequential); the others
are ``parallel`` (megacore sharding). Index lists live in SMEM, flattened to 1-D (SMEM pads the minor
dimensions of multi-dimensional arrays); at very long contexts cap ``Kmax`` to keep them small.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

_NEG = -1e30


def _kernel(idx_ref, cnt_ref, kvlen_ref, q_ref, k_ref, v_ref, o_ref, m_sc, l_sc, acc_sc, *, bs, kmax, nq, hq, scale):
  b, h, i, j = pl.program_id(0), pl.program_id(1), pl.program_id(2), pl.program_id(3)
  row = (b * hq + h) * nq + i

  @pl.when(j == 0)
  def _init():
    m_sc[...] = jnp.full(m_sc.shape, _NEG, jnp.float32)
    l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
    acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

  @pl.when(j < cnt_ref[row])
  def _step():
    kblk = idx_ref[row * kmax + j]
    q = q_ref[...]
    k = k_ref[...]
    s = jax.lax.dot_general(q, k, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32) * scale
    q_tok = i * bs + jax.lax.broadcasted_iota(jnp.int32, s.shape, 0)
    k_tok = kblk * bs + jax.lax.broadcasted_iota(jnp.int32, s.shape, 1)
    ok = (k_tok <= q_tok) & (k_tok < kvlen_ref[b])
    s = jnp.where(ok, s, _NEG)
    m_prev = m_sc[...]  # [bs, 128] lanes replicated
    m_cur = jnp.max(s, axis=1, keepdims=True)
    m_new = jnp.maximum(m_prev[:, :1], m_cur)
    p = jnp.where(ok, jnp.exp(s - m_new), 0.0)
    corr = jnp.exp(m_prev[:, :1] - m_new)
    l_sc[...] = jnp.broadcast_to(l_sc[:, :1] * corr + p.sum(axis=1, keepdims=True), l_sc.shape)
    m_sc[...] = jnp.broadcast_to(m_new, m_sc.shape)
    pv = jax.lax.dot_general(
      p.astype(v_ref.dtype), v_ref[...], (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32
    )
    acc_sc[...] = acc_sc[...] * corr + pv

  @pl.when(j == kmax - 1)
  def _done():
    l = l_sc[:, :1]
    o_ref[...] = (acc_sc[...] / jnp.where(l > 0, l, 1.0)).astype(o_ref.dtype)


@functools.partial(jax.jit, static_argnames=("block_size", "scale", "interpret"))
def block_sparse_attention_tpu(
  q, k, v, block_idx, block_cnt, kv_len, *, block_size: int, scale: float | None = None, interpret=False
):
  """Pallas TPU block-sparse attention. Shapes as ``block_sparse_attention_xla`` (``Lp`` a multiple of
  ``block_size``; on real TPUs ``block_size`` a multiple of 8 (128 recommended) and ``d`` = the full head
  dim). ``interpret`` may be ``True`` or ``pltpu.InterpretParams()`` for CPU checks."""
  B, Hq, Lp, d = q.shape
  Hkv = k.shape[1]
  r = Hq // Hkv
  bs = block_size
  nq = Lp // bs
  kmax = block_idx.shape[-1]
  scale = d**-0.5 if scale is None else scale
  kernel = functools.partial(_kernel, bs=bs, kmax=kmax, nq=nq, hq=Hq, scale=scale)

  def kv_map(b, h, i, j, idx, cnt, kvl):
    return (b, jax.lax.div(h, r), idx[((b * Hq + h) * nq + i) * kmax + j], 0)  # lax.div: no sign fix-ups

  grid_spec = pltpu.PrefetchScalarGridSpec(
    num_scalar_prefetch=3,
    grid=(B, Hq, nq, kmax),
    in_specs=[
      pl.BlockSpec((None, None, bs, d), lambda b, h, i, j, idx, cnt, kvl: (b, h, i, 0)),
      pl.BlockSpec((None, None, bs, d), kv_map),
      pl.BlockSpec((None, None, bs, d), kv_map),
    ],
    out_specs=pl.BlockSpec((None, None, bs, d), lambda b, h, i, j, idx, cnt, kvl: (b, h, i, 0)),
    scratch_shapes=[
      pltpu.VMEM((bs, 128), jnp.float32),
      pltpu.VMEM((bs, 128), jnp.float32),
      pltpu.VMEM((bs, d), jnp.float32),
    ],
  )
  return pl.pallas_call(
    kernel,
    grid_spec=grid_spec,
    out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
    compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
    interpret=interpret,
  )(
    block_idx.reshape(-1).astype(jnp.int32),
    block_cnt.reshape(-1).astype(jnp.int32),
    kv_len.astype(jnp.int32),
    q,
    k,
    v,
  )
