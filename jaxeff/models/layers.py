"""The decoder's building blocks: RMSNorm, RoPE, q/k norm, the q/k/v clamp and the output-major linear map.

Shared by ``jaxeff.models.decoder`` (the standard q/k/v projection) and ``jaxeff.models.latent`` (the shared
low-rank K/V projection of CommonKV layers), so neither imports the other's internals.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int


def rms_norm(x: Array, weight: Array, eps: float) -> Array:
  r"""y = w * x / sqrt(mean(x^2) + eps), statistics in float32 (as HF's LlamaRMSNorm)."""
  xf = x.astype(jnp.float32)
  y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
  return weight * y.astype(x.dtype)


def rope(x_btnh: Float[Array, "B T N H"], positions_bt: Int[Array, "B T"], inv_freq: Array) -> Array:
  r"""Rotary embedding, half-split layout (HF ``rotate_half``): x * cos + rotate_half(x) * sin.

  angle[b, t, i] = positions[b, t] * inv_freq[i], duplicated over both halves of H.
  """
  ang = positions_bt.astype(jnp.float32)[:, :, None] * inv_freq[None, None, :]
  ang = jnp.concatenate([ang, ang], axis=-1)[:, :, None, :]
  cos, sin = jnp.cos(ang).astype(x_btnh.dtype), jnp.sin(ang).astype(x_btnh.dtype)
  half = x_btnh.shape[-1] // 2
  rot = jnp.concatenate([-x_btnh[..., half:], x_btnh[..., :half]], axis=-1)
  return x_btnh * cos + rot * sin


def qk_norm(x_btnh: Array, w: Array, eps: float) -> Array:
  """RMSNorm of q or k: per head for an [H] weight (Qwen3), over all heads' dims for an [N, H] weight (OLMoE)."""
  if w.ndim == 1:
    return rms_norm(x_btnh, w, eps)
  xf = x_btnh.astype(jnp.float32)
  y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=(-2, -1), keepdims=True) + eps)
  return w * y.astype(x_btnh.dtype)


def finish_head(
  x_btnh: Array,
  bias: Array | None,
  norm: Array | None,
  eps: float,
  clip: float | None,
  positions_bt: Array | None = None,
  inv_freq: Array | None = None,
) -> Array:
  """A projected q, k or v [B, T, heads, H] made ready for attention, in the order HF applies the steps:
  + bias (Qwen2 / ``attention_bias``), q/k RMSNorm (Qwen3, OLMoE), clamp to [-clip, clip] (OLMoE ``clip_qkv``),
  RoPE when ``positions_bt`` is given (queries and keys; never values). Each step is skipped when its argument is
  ``None``. The one place the standard and the latent (CommonKV) projections share."""
  if bias is not None:
    x_btnh = x_btnh + bias
  if norm is not None:
    x_btnh = qk_norm(x_btnh, norm, eps)
  if clip is not None:
    x_btnh = jnp.clip(x_btnh, -clip, clip)
  return x_btnh if positions_bt is None else rope(x_btnh, positions_bt, inv_freq)


def linear(x: Array, w: Array, n_in: int = 1) -> Array:
  """y = x W^T for an output-major weight ``w`` [*out, *in] whose last ``n_in`` axes match x's last axes.

  The weight is viewed as a 2-D [out, in] matrix (a free reshape under jit) so XLA emits one plain GEMM.
  """
  out_shape, in_shape = w.shape[: w.ndim - n_in], w.shape[w.ndim - n_in :]
  lead = x.shape[: x.ndim - n_in]
  x2 = x.reshape(int(np.prod(lead)), int(np.prod(in_shape)))
  w2 = w.reshape(int(np.prod(out_shape)), int(np.prod(in_shape)))
  return jnp.einsum("ni,oi->no", x2, w2).reshape(*lead, *out_shape)
