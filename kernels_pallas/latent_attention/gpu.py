"""Pallas GPU (Triton) latent decode: one program per (batch row, kv head) loops over latent tiles in-kernel
(``fori_loop`` up to the row's last filled tile), rebuilding and rotating each tile's keys and accumulating ``p c``; ``Bv`` at the end. Query
heads of the group are padded to 16 rows (Triton's minimum dot size); shapes must be powers of two."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from kernels_pallas.latent_attention.tpu import rotate_half_matrix

_NEG = -1e30


def _kernel(qpos_ref, q_ref, c_ref, pos_ref, kup_ref, vup_ref, freq_ref, rt_ref, o_ref, *, block, scale, window):
  q = q_ref[...].astype(jnp.float32)  # [Gp, H]
  qp, nfill = qpos_ref[0], qpos_ref[1]  # the query's position; the row's tiles through its last filled slot
  kup = kup_ref[...].astype(jnp.float32)
  freq = freq_ref[...]
  rt = rt_ref[...]
  gp = q.shape[0]
  r = c_ref.shape[-1]

  def body(j, carry):
    m, l, acc = carry
    c = c_ref[pl.ds(j * block, block), :].astype(jnp.float32)  # [bt, r]
    pos = pos_ref[:, pl.ds(j * block, block)]  # [1, bt]
    kT = jax.lax.dot_general(kup, c, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)  # [H, bt]
    ang = freq * jnp.maximum(pos, 0).astype(jnp.float32)
    kT = kT * jnp.cos(ang) + jnp.dot(rt, kT, preferred_element_type=jnp.float32) * jnp.sin(ang)
    s = jnp.dot(q, kT, preferred_element_type=jnp.float32) * scale
    ok = (pos >= 0) & (pos <= qp)
    if window is not None:
      ok = ok & (qp - pos < window)
    s = jnp.where(ok, s, _NEG)
    m_new = jnp.maximum(m, jnp.max(s, axis=1))
    p = jnp.where(ok, jnp.exp(s - m_new[:, None]), 0.0)
    corr = jnp.exp(m - m_new)
    return m_new, l * corr + p.sum(axis=1), acc * corr[:, None] + jnp.dot(p, c, preferred_element_type=jnp.float32)

  init = (jnp.full((gp,), _NEG, jnp.float32), jnp.zeros((gp,), jnp.float32), jnp.zeros((gp, r), jnp.float32))
  m, l, acc = jax.lax.fori_loop(0, nfill, body, init)
  pc = acc / jnp.where(l > 0, l, 1.0)[:, None]
  out = jax.lax.dot_general(
    pc, vup_ref[...].astype(jnp.float32), (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32
  )
  o_ref[...] = out.astype(o_ref.dtype)


@functools.partial(jax.jit, static_argnames=("block", "window", "scale", "interpret", "num_warps"))
def latent_decode_gpu(
  q, latent, pos, q_pos, k_up, v_up, inv_freq, *, block=64, window=None, scale=None, interpret=False, num_warps=4
):
  """Pallas GPU latent decode; contract of ``latent_decode_reference``."""
  from jax.experimental.pallas import triton as pltr

  B, N, H = q.shape
  S, r = latent.shape[1], latent.shape[2]
  K = k_up.shape[0]
  G = N // K
  Gp = max(16, 1 << (G - 1).bit_length())
  qg = jnp.pad(q.reshape(B, K, G, H), ((0, 0), (0, 0), (0, Gp - G), (0, 0)))
  scale = H**-0.5 if scale is None else scale
  freq = jnp.concatenate([inv_freq, inv_freq]).astype(jnp.float32)[:, None]
  kernel = functools.partial(_kernel, block=block, scale=scale, window=window)
  last = jnp.max(jnp.where(pos >= 0, jnp.arange(S) + 1, 0), axis=1)
  qinfo = jnp.stack([q_pos.astype(jnp.int32), ((last + block - 1) // block).astype(jnp.int32)], axis=1)  # [B, 2]
  out = pl.pallas_call(
    kernel,
    grid=(B, K),
    in_specs=[
      pl.BlockSpec((None, 2), lambda b, k: (b, 0)),
      pl.BlockSpec((None, None, Gp, H), lambda b, k: (b, k, 0, 0)),
      pl.BlockSpec((None, S, r), lambda b, k: (b, 0, 0)),
      pl.BlockSpec((None, 1, S), lambda b, k: (b, 0, 0)),
      pl.BlockSpec((None, H, r), lambda b, k: (k, 0, 0)),
      pl.BlockSpec((None, H, r), lambda b, k: (k, 0, 0)),
      pl.BlockSpec((H, 1), lambda b, k: (0, 0)),
      pl.BlockSpec((H, H), lambda b, k: (0, 0)),
    ],
    out_specs=pl.BlockSpec((None, None, Gp, H), lambda b, k: (b, k, 0, 0)),
    out_shape=jax.ShapeDtypeStruct((B, K, Gp, H), jnp.float32),
    compiler_params=pltr.CompilerParams(num_warps=num_warps, num_stages=2),
    interpret=interpret,
  )(
    qinfo,
    qg,
    latent,
    pos.astype(jnp.int32)[:, None, :],
    k_up,
    v_up,
    freq,
    rotate_half_matrix(H).T,
  )
  return out[:, :, :G].reshape(B, N, H)
