"""MLA-style attention layers: a decoupled RoPE key plus a NoPE key and value read from one low-rank latent.

A layer converted by ``jaxeff.kvcache.mla.to_mla`` (MHA2MLA's recipe: partial RoPE, then a joint SVD of the
NoPE key and value projections) holds, besides ``q`` and ``o``::

  k_rope    [K, R, D]        rows of W_k at the R = 2p RoPE dims (the p highest-frequency pairs)
  mla_down  [r, D]           A: the latent c = A x (r numbers per token)
  k_nope_up [K, H - R, r]    B_k: the NoPE key dims from the latent
  v_up      [K, H, r]        B_v: the values from the latent

and computes, per kv head, ``k = [RoPE_p(W_rope x) | B_k c]`` and ``v = B_v c`` (dims put back in the head's
order); the queries keep their weights, with RoPE on the same ``R`` dims only. RoPE's half-split layout pairs dim
``i`` with ``i + H/2`` at frequency ``inv_freq[i]``: the kept dims are ``[0, p) u [H/2, H/2 + p)``, and RoPE over
that R-vector with ``inv_freq[:p]`` is the model's RoPE restricted to them, so partial RoPE is the model's RoPE with
``inv_freq[i] = 0`` for ``i >= p`` (the identity the tests check). Because the NoPE dims carry no rotation, a
cache can keep ``c`` and the rotated ``k_rope`` (``r + K R`` numbers per token) and attend without ever rebuilding a
key: ``q.k = q_rope.k_rope + (q_nope B_k).c`` and ``sum_t p_t v_t = B_v sum_t p_t c_t``
(``jaxeff.kvcache.mla.MLACache``).

Reference: DeepSeek-V2 (arXiv 2405.04434) decoupled RoPE and absorbed latent attention; MHA2MLA (Ji et al.,
arXiv 2502.14837) partial RoPE + joint SVD of a pretrained model's K/V, then brief uptraining.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from jaxeff.config import ModelConfig
from jaxeff.models.layers import linear, rope

MLA_LEAVES = ("k_rope", "mla_down", "k_nope_up", "v_up")


def is_mla_layer(attn: dict[str, Any]) -> bool:
  """Whether a layer's attention parameters are MLA-style (``mla_down``)."""
  return "mla_down" in attn


def rope_dims(head_dim: int, pairs: int) -> tuple[np.ndarray, np.ndarray]:
  """The RoPE dims ``[0, p) u [H/2, H/2 + p)`` (in that order: a half-split R-vector) and the NoPE dims
  (ascending) of a head of ``head_dim`` with ``pairs`` rotated frequency pairs.

  Example:
    >>> r, n = rope_dims(8, 1)
    >>> r.tolist(), n.tolist()
    ([0, 4], [1, 2, 3, 5, 6, 7])
  """
  half = head_dim // 2
  if not 0 <= pairs <= half:
    raise ValueError(f"rope pairs must be in [0, {half}] for head_dim {head_dim}, got {pairs}")
  r = np.concatenate([np.arange(pairs), half + np.arange(pairs)])
  return r, np.setdiff1d(np.arange(head_dim), r)


def assemble(rope_part: Array, nope_part: Array, head_dim: int) -> Array:
  """Put ``[..., R]`` RoPE dims and ``[..., H - R]`` NoPE dims back in the head's order ``[..., H]``."""
  r, n = rope_dims(head_dim, rope_part.shape[-1] // 2)
  inv = np.argsort(np.concatenate([r, n]))
  return jnp.concatenate([rope_part, nope_part.astype(rope_part.dtype)], axis=-1)[..., inv]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MLAKV:
  """What an MLA layer hands its cache: this chunk's latents ``c`` [B, T, r] and rotated RoPE keys ``k_rope``
  [B, T, K, R], and the up-projections ``k_nope_up`` [K, H - R, r] and ``v_up`` [K, H, r].

  Example:
    >>> import jax.numpy as jnp
    >>> rec = MLAKV(jnp.ones((1, 2, 4)), jnp.ones((1, 2, 1, 2)), jnp.ones((1, 6, 4)), jnp.ones((1, 8, 4)))
    >>> rec.pairs, rec.head_dim
    (1, 8)
  """

  c: Array
  k_rope: Array
  k_nope_up: Array
  v_up: Array

  @property
  def pairs(self) -> int:
    return self.k_rope.shape[-1] // 2

  @property
  def head_dim(self) -> int:
    return self.v_up.shape[1]

  def rebuild(self, c_bsr: Array, k_rope_bskr: Array) -> tuple[Array, Array]:
    """Keys and values [B, S, K, H] of cached latents and rotated RoPE keys (the non-absorbed path)."""
    k = assemble(k_rope_bskr, linear(c_bsr, self.k_nope_up), self.head_dim)
    return k, linear(c_bsr, self.v_up)


def mla_projection(attn: dict[str, Array], h_btd: Array, positions_bt: Array, config: ModelConfig, inv_freq):
  """q [B, T, N, H] with RoPE on the kept dims only; k, v [B, T, K, H] from the latent and the RoPE key; and the
  ``MLAKV`` record. Layers with q/k/v biases, q/k norms or a clamp are refused by ``to_mla``."""
  H = config.head_dim
  p = attn["k_rope"].shape[1] // 2
  r_idx, n_idx = rope_dims(H, p)
  q = linear(h_btd, attn["q"])
  q = assemble(rope(q[..., r_idx], positions_bt, inv_freq[:p]), q[..., n_idx], H)
  c = linear(h_btd, attn["mla_down"])
  record = MLAKV(c, rope(linear(h_btd, attn["k_rope"]), positions_bt, inv_freq[:p]), attn["k_nope_up"], attn["v_up"])
  k, v = record.rebuild(record.c, record.k_rope)
  return q, k, v, record


__all__ = ["MLAKV", "MLA_LEAVES", "assemble", "is_mla_layer", "mla_projection", "rope_dims"]
