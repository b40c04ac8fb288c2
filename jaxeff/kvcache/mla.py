"""MLA-style conversion of a pretrained GQA/MHA model and its latent cache (MHA2MLA's recipe).

``to_mla`` rewrites every layer's K/V projections (``jaxeff.models.mla`` has the layer's formulas):

1. **Partial RoPE** (MHA2MLA's S_high): keep RoPE on the ``p`` highest-frequency pairs of each head (dims
   ``[0, p) u [H/2, H/2 + p)``), drop it on the rest (NoPE). This *changes the model* unless ``p = H/2``; it is
   what makes the rest of the key absorbable. UNVERIFIED alternative: MHA2MLA's best selection, S_2-norm (the
   pairs with the largest ``||q_i|| ||k_i||`` on calibration data, per head), needs per-head frequencies at run
   time; only the uniform high-frequency selection is implemented (low frequencies rotate slowly, so they are
   the dims closest to NoPE already).
2. **Joint SVD** of the NoPE key rows and the value rows of one layer (MHA2MLA's SVD_joint)::

     M = [W_k^{nope} ; W_v]            (K (H - R) + K H) x D
     M = U S V^T,   A = sqrt(S_r) V_r^T [r, D],   [B_k ; B_v] = U_r sqrt(S_r)

   exact at ``r = rank(M)``; ``||M - B A||_F^2 = sum_{i > r} s_i^2`` (Eckart-Young).

The cache (``MLACache``) keeps per token the latent ``c`` (r numbers) and the rotated RoPE key (``K R``), against
``2 K H`` for a full cache, and attends absorbed: scores ``q_rope.k_rope + (q_nope B_k).c``, values
``B_v sum_t p_t c_t``; no key or value is ever rebuilt per cached token (unlike CommonKV, whose RoPE'd keys must
be). The conversion loses accuracy at small ``p`` and ``r``: MHA2MLA recovers it by uptraining on a fraction of
a percent of the pretraining tokens (``jaxeff.training.mla.uptrain``).

Reference: MHA2MLA (Ji et al., arXiv 2502.14837); DeepSeek-V2 (arXiv 2405.04434) for the decoupled RoPE key
and absorbed decoding.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxeff.attention.dense import position_mask
from jaxeff.config import ModelConfig
from jaxeff.kvcache.base import _SlotLayers, _with_layer, _write_entries
from jaxeff.models.mla import MLA_LEAVES, MLAKV, is_mla_layer, rope_dims


@dataclasses.dataclass(frozen=True)
class MLASpec:
  """The converted layout: ``pairs`` RoPE frequency pairs per head (every layer) and the latent rank per layer."""

  pairs: int
  ranks: tuple[int, ...]

  def floats_per_token(self, config: ModelConfig) -> int:
    """Cached numbers per token, all layers: ``sum_l r_l + L K 2p`` (a full cache: ``2 L K H``)."""
    return int(sum(self.ranks) + len(self.ranks) * config.n_kv_heads * 2 * self.pairs)


def max_mla_rank(config: ModelConfig, pairs: int) -> int:
  """Largest useful rank: ``min(K (H - 2p) + K H, D)``."""
  K, H = config.n_kv_heads, config.head_dim
  return min(K * (H - 2 * pairs) + K * H, config.d_model)


def _check_convertible(config: ModelConfig, params: dict) -> None:
  problems = []
  if config.attn_logit_softcap is not None:
    problems.append("attention logit soft-capping")
  if config.clip_qkv is not None:
    problems.append("clip_qkv")
  if config.query_scale != 1.0:
    problems.append("query_pre_attn_scalar")
  if config.head_dim % 2:
    problems.append(f"odd head_dim {config.head_dim}")
  attn = params["layers"][0]["attn"]
  if is_mla_layer(attn):
    raise ValueError("parameters are already MLA-converted")
  if "kv_down" in attn:
    problems.append("CommonKV latent layers (convert the original model)")
  problems += [f"attention leaf {k!r}" for k in ("q_bias", "k_bias", "v_bias", "q_norm", "k_norm") if k in attn]
  if problems:
    raise ValueError(f"to_mla supports plain Llama-style attention; this model has: {', '.join(problems)}")


def to_mla(
  config: ModelConfig,
  params: dict,
  *,
  pairs: int,
  rank: int | None = None,
  cache_ratio: float | None = None,
) -> tuple[ModelConfig, dict, MLASpec, dict]:
  """MHA2MLA surgery ``(config, params) -> (config, params, MLASpec, report)`` (module docstring).

  Args:
    pairs: RoPE frequency pairs kept per head, ``0 <= p <= H/2`` (``H/2``: RoPE untouched).
    rank: latent width ``r`` per layer, ``1 <= r <= max_mla_rank``; or
    cache_ratio: the cache's size as a fraction of the full cache's ``2 K H`` per token per layer:
      ``r = round(cache_ratio 2 K H) - 2 K p`` (exactly one of rank / cache_ratio).

  Returns:
    the config (unchanged), the new parameters (``q``/``o`` kept; ``k``/``v`` replaced by ``k_rope``,
    ``mla_down``, ``k_nope_up``, ``v_up``), the spec, and ``report`` (per-layer relative Frobenius error of the
    factorised ``M`` and its Eckart-Young tail).

  Example:
    >>> import jax
    >>> from jaxeff.models import init_params
    >>> cfg = ModelConfig.tiny()
    >>> _, p, spec, _ = to_mla(cfg, init_params(cfg, jax.random.key(0)), pairs=2, cache_ratio=0.5)
    >>> spec.floats_per_token(cfg) <= cfg.n_layers * cfg.n_kv_heads * cfg.head_dim
    True
  """
  _check_convertible(config, params)
  K, H, D = config.n_kv_heads, config.head_dim, config.d_model
  r_idx, n_idx = rope_dims(H, pairs)  # raises on a bad pair count
  if (rank is None) == (cache_ratio is None):
    raise ValueError("give exactly one of rank or cache_ratio")
  rmax = max_mla_rank(config, pairs)
  if cache_ratio is not None:
    if not 0.0 < cache_ratio <= 1.0:
      raise ValueError(f"cache_ratio must be in (0, 1], got {cache_ratio}")
    rank = int(round(cache_ratio * 2 * K * H)) - 2 * K * pairs
    if rank < 1:
      raise ValueError(
        f"cache_ratio {cache_ratio} leaves no room for a latent beside {pairs} RoPE pairs per head "
        f"({2 * K * pairs} of the {2 * K * H} numbers per token)"
      )
    rank = min(rank, rmax)
  if not 1 <= rank <= rmax:
    raise ValueError(f"rank {rank} out of range: at most {rmax} with {pairs} RoPE pairs")
  layers, report = [], {"rel_error": [], "tail_energy": []}
  for lp in params["layers"]:
    a = lp["attn"]
    wk, wv = np.asarray(a["k"], np.float64), np.asarray(a["v"], np.float64)  # [K, H, D]
    M = np.concatenate([wk[:, n_idx].reshape(-1, D), wv.reshape(-1, D)])
    U, S, Vt = np.linalg.svd(M, full_matrices=False)
    root = np.sqrt(S[:rank])
    A, B = root[:, None] * Vt[:rank], U[:, :rank] * root[None, :]
    nk = K * len(n_idx)
    report["rel_error"].append(float(np.linalg.norm(M - B @ A) / max(np.linalg.norm(M), 1e-30)))
    report["tail_energy"].append(float(np.sqrt((S[rank:] ** 2).sum())))
    dt = a["k"].dtype
    attn = {k: v for k, v in a.items() if k not in ("k", "v")}
    attn.update(
      k_rope=jnp.asarray(wk[:, r_idx], dt),
      mla_down=jnp.asarray(A, dt),
      k_nope_up=jnp.asarray(B[:nk].reshape(K, len(n_idx), rank), dt),
      v_up=jnp.asarray(B[nk:].reshape(K, H, rank), dt),
    )
    layers.append(dict(lp, attn=attn))
  spec = MLASpec(pairs, (rank,) * config.n_layers)
  return config, dict(params, layers=tuple(layers)), spec, report


@flax.struct.dataclass
class MLALayer:
  """One layer's cached latents ``c [B, S, r]``, rotated RoPE keys ``k_rope [B, S, K, R]``, slot positions
  ``[B, S]`` and fill ``[B]``."""

  c: jax.Array
  k_rope: jax.Array
  pos: jax.Array
  length: jax.Array


@flax.struct.dataclass
class MLACache(_SlotLayers):
  """The MLA cache: ``r + K R`` numbers per token per layer, attended absorbed (module docstring).

  Example:
    >>> cfg = ModelConfig.tiny()
    >>> cache = MLACache.init(cfg, MLASpec(2, (24,) * cfg.n_layers), batch=1, max_len=8)
    >>> cache.layers[0].c.shape, cache.layers[0].k_rope.shape
    ((1, 8, 24), (1, 8, 2, 4))
  """

  layers: tuple[MLALayer, ...]
  spec: MLASpec = flax.struct.field(pytree_node=False, default=None)

  @classmethod
  def init(cls, config: ModelConfig, spec: MLASpec, batch: int, max_len: int, dtype=jnp.float32) -> MLACache:
    if len(spec.ranks) != config.n_layers:
      raise ValueError(f"MLASpec covers {len(spec.ranks)} layers; the model has {config.n_layers}")
    K, R = config.n_kv_heads, 2 * spec.pairs

    def layer(r):
      pos = jnp.full((batch, max_len), -1, jnp.int32)
      zeros = jnp.zeros((batch, max_len, r), dtype), jnp.zeros((batch, max_len, K, R), dtype)
      return MLALayer(*zeros, pos, jnp.zeros((batch,), jnp.int32))

    return cls(tuple(layer(r) for r in spec.ranks), spec)

  def _write(self, layer, positions_bt, rec):
    return _with_layer(self, layer, _write_entries(self.layers[layer], positions_bt, c=rec.c, k_rope=rec.k_rope))

  def prefill(self, layer, k_btkh, v_btkh, positions_bt, *, latent: MLAKV | None = None, **_) -> MLACache:
    return self._write(layer, positions_bt, _record(latent))

  def append(self, layer, k_btkh, v_btkh, positions_bt, *, latent: MLAKV | None = None, **_) -> MLACache:
    return self._write(layer, positions_bt, _record(latent))

  def attend(self, layer, q_btnh, q_pos_bt, *, window=None, latent: MLAKV | None = None, **_):
    rec = _record(latent)
    e = self.layers[layer]
    return absorbed_mla_attention(q_btnh, e.c, e.k_rope, position_mask(q_pos_bt, e.pos, window), rec)

  def repeat(self, n: int) -> MLACache:
    return jax.tree.map(lambda x: jnp.repeat(x, n, axis=0), self)

  def nbytes(self) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self))

  def bytes_per_token(self) -> float:
    """Analytic bytes per cached token (latents and RoPE keys; positions excluded)."""
    return float(
      sum(e.c.shape[-1] * e.c.dtype.itemsize + e.k_rope[0, 0].size * e.k_rope.dtype.itemsize for e in self.layers)
    )


def _record(latent) -> MLAKV:
  if not isinstance(latent, MLAKV):
    raise ValueError(
      "MLACache stores MLA latents: convert the model with jaxeff.kvcache.mla.to_mla (its layers then hand each "
      f"cache call their MLAKV record); got {type(latent).__name__}"
    )
  return latent


def absorbed_mla_attention(q_btnh, c_bsr, k_rope_bskr, mask_bts, rec: MLAKV):
  r"""Attention over MLA latents without rebuilding keys or values.

  ``s = (q_rope . k_rope + (q_nope B_k) . c) / sqrt(H)``, ``out = B_v sum_s softmax(s) c_s`` per query head
  (kv head ``n // G``); float32 scores. Shapes: q [B, T, N, H], c [B, S, r], k_rope [B, S, K, R], mask
  [B, T, S]; returns [B, T, N, H] in q's dtype. Equal to ``masked_attention`` over ``rec.rebuild(c, k_rope)``
  (tested).
  """
  B, T, N, H = q_btnh.shape
  K = k_rope_bskr.shape[2]
  G = N // K
  r_idx, n_idx = rope_dims(H, rec.pairs)
  q = q_btnh.astype(jnp.float32).reshape(B, T, K, G, H)
  f32 = lambda x: x.astype(jnp.float32)
  q_abs = jnp.einsum("btkgh,khr->btkgr", q[..., n_idx], f32(rec.k_nope_up))  # the query in latent space
  s = jnp.einsum("btkgr,bsr->bkgts", q_abs, f32(c_bsr))
  s = s + jnp.einsum("btkgh,bskh->bkgts", q[..., r_idx], f32(k_rope_bskr))
  s = jnp.where(mask_bts[:, None, None], s * H**-0.5, -1e30)
  p = jax.nn.softmax(s, axis=-1)
  pc = jnp.einsum("bkgts,bsr->btkgr", p, f32(c_bsr))
  out = jnp.einsum("btkgr,khr->btkgh", pc, f32(rec.v_up))
  return out.reshape(B, T, N, H).astype(q_btnh.dtype)


@dataclasses.dataclass(frozen=True)
class MLA:
  """Cache factory for the sampler (``Sampler(..., cache=MLA(spec))``): an ``MLACache`` per call.

  Example:
    >>> cfg = ModelConfig.tiny()
    >>> MLA(MLASpec(2, (24,) * cfg.n_layers)).init(cfg, 1, 8).bytes_per_token() == cfg.n_layers * (24 + 2 * 4) * 4
    True
  """

  spec: MLASpec

  def init(self, config, batch, max_len, dtype=jnp.float32):
    return MLACache.init(config, self.spec, batch, max_len, dtype)


__all__ = ["MLA", "MLACache", "MLALayer", "MLASpec", "MLA_LEAVES", "absorbed_mla_attention", "max_mla_rank", "to_mla"]
