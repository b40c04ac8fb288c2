"""XLA latent decode: tiles of ``block`` cached tokens, keys rebuilt and rotated per tile, online softmax over
tiles, values absorbed (``Bv`` applied once at the end). Memory stays at one tile of rebuilt keys, and the loop
stops after the last filled tile (a cache allocated for 32K tokens holding 2K costs 2K)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels_pallas.latent_attention.reference import rope_rows

_NEG = -1e30


@functools.partial(jax.jit, static_argnames=("block", "window", "scale"))
def latent_decode_xla(q, latent, pos, q_pos, k_up, v_up, inv_freq, *, block=512, window=None, scale=None):
  """Same contract as ``latent_decode_reference`` (``S`` a multiple of ``block``, padded by the caller)."""
  B, N, H = q.shape
  S, r = latent.shape[1], latent.shape[2]
  K = k_up.shape[0]
  G = N // K
  scale = H**-0.5 if scale is None else scale
  qg = q.astype(jnp.float32).reshape(B, K, G, H) * scale
  kup = k_up.astype(jnp.float32)

  def step(j, carry):
    m, l, acc = carry
    c = jax.lax.dynamic_slice_in_dim(latent, j * block, block, axis=1).astype(jnp.float32)  # [B, bt, r]
    p_ = jax.lax.dynamic_slice_in_dim(pos, j * block, block, axis=1)
    k = rope_rows(jnp.einsum("bsr,khr->bksh", c, kup), jnp.maximum(p_, 0)[:, None, :], inv_freq)
    s = jnp.einsum("bkgh,bksh->bkgs", qg, k)
    ok = (p_ >= 0) & (p_ <= q_pos[:, None])
    if window is not None:
      ok &= q_pos[:, None] - p_ < window
    s = jnp.where(ok[:, None, None, :], s, _NEG)
    m_new = jnp.maximum(m, s.max(-1))
    p = jnp.where(ok[:, None, None, :], jnp.exp(s - m_new[..., None]), 0.0)
    corr = jnp.exp(m - m_new)
    return m_new, l * corr + p.sum(-1), acc * corr[..., None] + jnp.einsum("bkgs,bsr->bkgr", p, c)

  init = (jnp.full((B, K, G), _NEG), jnp.zeros((B, K, G)), jnp.zeros((B, K, G, r)))
  filled = jnp.max(jnp.where(pos >= 0, jnp.arange(S) + 1, 0))  # past the last filled slot of any row
  m, l, acc = jax.lax.fori_loop(0, (filled + block - 1) // block, step, init)
  pc = acc / jnp.where(l > 0, l, 1.0)[..., None]
  return jnp.einsum("bkgr,khr->bkgh", pc, v_up.astype(jnp.float32)).reshape(B, N, H)
