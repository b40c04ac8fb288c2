"""Shared low-rank K/V layers: the attention projection of a CommonKV-compressed layer and the record it hands
its cache.

A latent layer's parameter table holds, besides ``q`` (and ``o``), ``kv_down`` [r, D] (the layer's block of
the cross-layer down-projection A), ``k_up`` / ``v_up`` [K, H, r] (B_k, B_v), and optionally the biases and
k-norm of the original layer. The layer computes the latent c = A x [B, T, r] and rebuilds

    k = RoPE(norm(B_k c + b_k)),   v = B_v c + b_v

so a cache may keep c (r numbers per token) instead of k and v (2 K H). ``forward`` finds these layers through
``is_latent_layer`` (registered with ``jaxeff.models.decoder.register_projection``) and passes the cache one
typed ``LatentKV`` record; the surgery that writes the table is ``jaxeff.kvcache.commonkv.compress``.

Reference: CommonKV (arXiv 2508.16134), cross-layer SVD of the concatenated K/V weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from jaxtyping import Array

from jaxeff.config import ModelConfig
from jaxeff.models.layers import finish_head, linear

LATENT_LEAVES = ("kv_down", "k_up", "v_up")


def is_latent_layer(attn: dict[str, Any]) -> bool:
  """Whether a layer's attention parameters hold the shared latent projection (``kv_down``)."""
  return "kv_down" in attn


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LatentKV:
  """What a latent layer hands its cache at prefill, append and attend.

  Attributes:
    c: this chunk's latents [B, T, r].
    k_up, v_up: B_k, B_v [K, H, r].
    k_bias, v_bias: [K, H] or ``None``; k_norm: [H] / [K, H] or ``None``.
    inv_freq: RoPE inverse frequencies [H / 2].
    eps, clip: the model's RMSNorm epsilon and q/k/v clamp (static).

  ``rebuild(c, positions)`` gives keys and values for any latents; ``absorbable`` says the keys are exactly
  ``RoPE(B_k c)`` (no bias, no norm), the form the Pallas latent-decode kernel computes in-kernel.

  Example:
    >>> import jax.numpy as jnp
    >>> rec = LatentKV(jnp.ones((1, 2, 4)), jnp.ones((1, 8, 4)), jnp.ones((1, 8, 4)), None, None, None,
    ...                jnp.ones(4), 1e-6, None)
    >>> k, v = rec.rebuild(rec.c, jnp.arange(2)[None])
    >>> k.shape, rec.absorbable
    ((1, 2, 1, 8), True)
  """

  c: Array
  k_up: Array
  v_up: Array
  k_bias: Array | None
  v_bias: Array | None
  k_norm: Array | None
  inv_freq: Array
  eps: float = dataclasses.field(metadata=dict(static=True))
  clip: float | None = dataclasses.field(metadata=dict(static=True))

  @property
  def absorbable(self) -> bool:
    return self.k_bias is None and self.k_norm is None

  def with_latent(self, c: Array) -> LatentKV:
    """The same layer with other latents (a press keeps a subset of the rows)."""
    return dataclasses.replace(self, c=c)

  def rebuild(self, c_bsr: Array, positions_bs: Array) -> tuple[Array, Array]:
    """Keys and values [B, S, K, H] of latents ``c_bsr`` [B, S, r] at ``positions_bs`` (>= 0)."""
    k = linear(c_bsr, self.k_up)
    k = finish_head(k, self.k_bias, self.k_norm, self.eps, self.clip, positions_bs, self.inv_freq)
    return k, finish_head(linear(c_bsr, self.v_up), self.v_bias, None, self.eps, self.clip)


def latent_projection(attn: dict[str, Array], h_btd: Array, positions_bt: Array, config: ModelConfig, inv_freq):
  """q [B, T, N, H] as usual; k, v rebuilt from c = A h; returns (q, k, v, LatentKV)."""
  eps, clip = config.rms_norm_eps, config.clip_qkv
  q = finish_head(linear(h_btd, attn["q"]), attn.get("q_bias"), attn.get("q_norm"), eps, clip, positions_bt, inv_freq)
  record = LatentKV(
    c=linear(h_btd, attn["kv_down"]),
    k_up=attn["k_up"],
    v_up=attn["v_up"],
    k_bias=attn.get("k_bias"),
    v_bias=attn.get("v_bias"),
    k_norm=attn.get("k_norm"),
    inv_freq=inv_freq,
    eps=eps,
    clip=clip,
  )
  k, v = record.rebuild(record.c, positions_bt)
  return q, k, v, record
