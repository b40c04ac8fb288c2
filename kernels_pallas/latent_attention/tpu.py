"""Pallas TPU latent decode: grid (B, K, S/bt); each step loads one tile of latents, rebuilds the tile's keys
for one kv head (``Bk c^T``, computed transposed so RoPE is elementwise on [H, bt] and ``rotate_half`` is a
fixed [H, H] matmul: no lane shuffles), scores its G query heads, and accumulates ``p c`` with an online
softmax in VMEM; the last step applies ``Bv``. The query position and each row's count of filled tiles are
scalar-prefetched (SMEM): steps past a row's last filled tile compute nothing and re-point at that tile (no new
copy), so a cache allocated for 32K tokens holding 2K costs 2K."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

_NEG = -1e30


def rotate_half_matrix(H: int):
  """R with ``x @ R = rotate_half(x) = concat(-x[H/2:], x[:H/2])``."""
  half = H // 2
  i = jnp.arange(half)
  R = jnp.zeros((H, H), jnp.float32)
  R = R.at[i + half, i].set(-1.0)
  return R.at[i, i + half].set(1.0)


def _kernel(
  qpos_ref,
  nfill_ref,
  q_ref,
  c_ref,
  pos_ref,
  kup_ref,
  vup_ref,
  freq_ref,
  rt_ref,
  o_ref,
  m_sc,
  l_sc,
  acc_sc,
  *,
  scale,
  window,
  nt,
):
  b, j = pl.program_id(0), pl.program_id(2)

  @pl.when(j == 0)
  def _init():
    m_sc[...] = jnp.full(m_sc.shape, _NEG, jnp.float32)
    l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
    acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

  @pl.when(j < nfill_ref[b])
  def _tile():
    _fold_tile(qpos_ref[b], q_ref, c_ref, pos_ref, kup_ref, freq_ref, rt_ref, m_sc, l_sc, acc_sc, scale, window)

  @pl.when(j == nt - 1)
  def _done():
    l = l_sc[:, :1]
    pc = acc_sc[...] / jnp.where(l > 0, l, 1.0)
    out = jax.lax.dot_general(
      pc, vup_ref[...].astype(jnp.float32), (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32
    )
    o_ref[...] = out.astype(o_ref.dtype)


def _fold_tile(qp, q_ref, c_ref, pos_ref, kup_ref, freq_ref, rt_ref, m_sc, l_sc, acc_sc, scale, window):
  """One tile of latents into the online softmax: keys rebuilt, rotated, scored; ``p c`` accumulated."""
  c = c_ref[...].astype(jnp.float32)  # [bt, r]
  pos = pos_ref[...]  # [1, bt]
  kT = jax.lax.dot_general(
    kup_ref[...].astype(jnp.float32), c, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32
  )  # [H, bt]
  ang = freq_ref[...] * jnp.maximum(pos, 0).astype(jnp.float32)  # [H, 1] * [1, bt]
  rot = jnp.dot(rt_ref[...], kT, preferred_element_type=jnp.float32)
  kT = kT * jnp.cos(ang) + rot * jnp.sin(ang)
  q = q_ref[...].astype(jnp.float32)  # [G, H]
  s = jnp.dot(q, kT, preferred_element_type=jnp.float32) * scale  # [G, bt]
  ok = (pos >= 0) & (pos <= qp)
  if window is not None:
    ok = ok & (qp - pos < window)
  s = jnp.where(ok, s, _NEG)
  m_prev = m_sc[:, :1]
  m_new = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))
  p = jnp.where(ok, jnp.exp(s - m_new), 0.0)
  corr = jnp.exp(m_prev - m_new)
  l_sc[...] = jnp.broadcast_to(l_sc[:, :1] * corr + p.sum(axis=1, keepdims=True), l_sc.shape)
  m_sc[...] = jnp.broadcast_to(m_new, m_sc.shape)
  acc_sc[...] = acc_sc[...] * corr + jnp.dot(p, c, preferred_element_type=jnp.float32)


@functools.partial(jax.jit, static_argnames=("block", "window", "scale", "interpret"))
def latent_decode_tpu(
  q, latent, pos, q_pos, k_up, v_up, inv_freq, *, block=512, window=None, scale=None, interpret=False
):
  """Pallas TPU latent decode; contract of ``latent_decode_reference`` (``S`` a multiple of ``block``, a
  multiple of 128 on real TPUs)."""
  B, N, H = q.shape
  S, r = latent.shape[1], latent.shape[2]
  K = k_up.shape[0]
  G = N // K
  nt = S // block
  scale = H**-0.5 if scale is None else scale
  freq = jnp.concatenate([inv_freq, inv_freq]).astype(jnp.float32)[:, None]  # [H, 1]
  kernel = functools.partial(_kernel, scale=scale, window=window, nt=nt)
  # tiles to visit per row: through the last filled slot (at least one, so every row writes its output)
  last = jnp.max(jnp.where(pos >= 0, jnp.arange(S) + 1, 0), axis=1)
  nfill = jnp.maximum((last + block - 1) // block, 1).astype(jnp.int32)
  tile = lambda b, j, nf: jnp.minimum(j, nf[b] - 1)  # past the filled tiles: the last one again (no new copy)
  grid_spec = pltpu.PrefetchScalarGridSpec(
    num_scalar_prefetch=2,
    grid=(B, K, nt),
    in_specs=[
      pl.BlockSpec((None, None, G, H), lambda b, k, j, qp, nf: (b, k, 0, 0)),
      pl.BlockSpec((None, block, r), lambda b, k, j, qp, nf: (b, tile(b, j, nf), 0)),
      pl.BlockSpec((None, 1, block), lambda b, k, j, qp, nf: (b, 0, tile(b, j, nf))),
      pl.BlockSpec((None, H, r), lambda b, k, j, qp, nf: (k, 0, 0)),
      pl.BlockSpec((None, H, r), lambda b, k, j, qp, nf: (k, 0, 0)),
      pl.BlockSpec((H, 1), lambda b, k, j, qp, nf: (0, 0)),
      pl.BlockSpec((H, H), lambda b, k, j, qp, nf: (0, 0)),
    ],
    out_specs=pl.BlockSpec((None, None, G, H), lambda b, k, j, qp, nf: (b, k, 0, 0)),
    scratch_shapes=[
      pltpu.VMEM((G, 128), jnp.float32),
      pltpu.VMEM((G, 128), jnp.float32),
      pltpu.VMEM((G, r), jnp.float32),
    ],
  )
  out = pl.pallas_call(
    kernel,
    grid_spec=grid_spec,
    out_shape=jax.ShapeDtypeStruct((B, K, G, H), jnp.float32),
    compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary")),
    interpret=interpret,
  )(
    q_pos.astype(jnp.int32),
    nfill,
    q.reshape(B, K, G, H),
    latent,
    pos.astype(jnp.int32)[:, None, :],
    k_up,
    v_up,
    freq,
    rotate_half_matrix(H).T,
  )
  return out.reshape(B, N, H)
