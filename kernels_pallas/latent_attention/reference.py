"""Float32 oracle for CommonKV latent decode attention (keys rebuilt with RoPE after the rebuild).

Shapes (shared by every implementation here): query ``q [B, N, H]`` (one decode token per row, RoPE already
applied at its position), latents ``c [B, S, r]`` with slot positions ``pos [B, S]`` (-1 = empty), per kv head
up-projections ``k_up, v_up [K, H, r]``, RoPE inverse frequencies ``inv_freq [H/2]``, the query position
``q_pos [B]``. For query head n (kv head ``n // (N/K)``)::

  k_t = RoPE_{pos_t}(Bk c_t),   s_t = q . k_t / sqrt(H),   visible iff 0 <= pos_t <= q_pos (and in the window)
  o = Bv (sum_t softmax(s)_t c_t)            (values absorbed: Bv applied once to the weighted latent)

Optionally the latents are int8 with a per-token scale and minimum (``c = min + scale * code``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rope_rows(x, pos, inv_freq):
  """RoPE (half-split, HF rotate_half) of rows ``x [..., T, H]`` at positions ``pos [..., T]``."""
  ang = pos.astype(jnp.float32)[..., None] * inv_freq
  ang = jnp.concatenate([ang, ang], axis=-1)
  half = x.shape[-1] // 2
  rot = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * jnp.cos(ang) + rot * jnp.sin(ang)


def dequantize_latent(codes, scale, minimum):
  """int8 latents with a per-token scale/min ``[B, S]`` -> float32 ``[B, S, r]``."""
  return minimum[..., None] + scale[..., None] * codes.astype(jnp.float32)


def latent_decode_reference(q, latent, pos, q_pos, k_up, v_up, inv_freq, *, window=None, scale=None):
  """Dense float32 latent decode attention (module docstring). Returns ``[B, N, H]`` float32."""
  B, N, H = q.shape
  K = k_up.shape[0]
  G = N // K
  scale = H**-0.5 if scale is None else scale
  c = latent.astype(jnp.float32)
  k = jnp.einsum("bsr,khr->bksh", c, k_up.astype(jnp.float32))
  k = rope_rows(k, jnp.maximum(pos, 0)[:, None, :], inv_freq)  # [B, K, S, H]
  qg = q.astype(jnp.float32).reshape(B, K, G, H)
  s = jnp.einsum("bkgh,bksh->bkgs", qg, k) * scale
  ok = (pos >= 0) & (pos <= q_pos[:, None])
  if window is not None:
    ok &= q_pos[:, None] - pos < window
  s = jnp.where(ok[:, None, None, :], s, -jnp.inf)
  p = jax.nn.softmax(s, axis=-1)
  p = jnp.where(ok.any(-1)[:, None, None, None], p, 0.0)  # rows with no visible key: 0 (a NaN score stays NaN)
  pc = jnp.einsum("bkgs,bsr->bkgr", p, c)
  return jnp.einsum("bkgr,khr->bkgh", pc, v_up.astype(jnp.float32)).reshape(B, N, H)
