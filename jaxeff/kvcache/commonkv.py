"""CommonKV, offline step: one SVD of the stacked K and V projections of G adjacent layers.

Size (over 500 lines): the offline factorisation, the latent cache and the cross-layer merge share the latent
layout and its bookkeeping; they are one method.

CommonKV (arXiv 2508.16134) shares one down-projection across the K and V projections of a group of ``G``
adjacent layers so that their latent caches live in one basis (and can be merged across layers). For a group
with layers ``l_1..l_G`` (PyTorch ``[out, in]`` rows, ``d_kv = n_kv_heads * head_dim``)::

  M = [Wk^{l_1}; ...; Wk^{l_G}; Wv^{l_1}; ...; Wv^{l_G}]      (2 G d_kv) x d_model
  M = U S V^T,   A = sqrt(S_r) V_r^T  [r, d_model],   B = U_r sqrt(S_r)  [(2 G d_kv), r]
  Wk^{l} ~ Bk^{l} A,   Wv^{l} ~ Bv^{l} A                  (B cut into per-layer row blocks)

exact at ``r = rank(M)``; by Eckart-Young ``||M - B A||_F^2 = sum_{i > r} s_i^2``. SVD of the raw weights in
float32 (float64 where x64 is enabled), no whitening, as the official code does.

Rank rules (``rank_policy``): a fixed rank; a fixed ratio of the group's maximum rank
``min(2 G d_kv, d_model)``; or a Fisher-style allocation: per-layer scores (e.g. the Fisher information of
``v_proj`` from calibration data, or any positive sensitivities) turned into ranks proportional to the group's
mean score, rounded to a multiple and equal inside a group (latents must share a width to be mergeable).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxeff.attention.dense import masked_attention, position_mask, tiled_cache_attention
from jaxeff.config import ModelConfig
from jaxeff.kvcache.base import _cache_tiles, _SlotLayers, _with_layer, _write_entries, _write_rows
from jaxeff.models.latent import LATENT_LEAVES, LatentKV, is_latent_layer


def _kv_matrices(params: dict, layer: int) -> tuple[np.ndarray, np.ndarray]:
  a = params["layers"][layer]["attn"]
  K, H, D = a["k"].shape
  return np.asarray(a["k"], np.float64).reshape(K * H, D), np.asarray(a["v"], np.float64).reshape(K * H, D)


def group_svd_share(wk_list: Sequence[np.ndarray], wv_list: Sequence[np.ndarray], rank: int):
  """Shared factors for one layer group (see module docstring).

  Args:
    wk_list, wv_list: per-layer ``[d_kv, d_model]`` K and V projections (output-major, PyTorch layout).
    rank: latent width r, at most ``min(2 G d_kv, d_model)``.

  Returns:
    ``(A [r, d_model], Bk list of [d_kv, r], Bv list of [d_kv, r], singular values [min(...)])`` as float64
    NumPy arrays.

  Example:
    >>> import numpy as np
    >>> w = [np.random.default_rng(i).normal(size=(8, 16)) for i in range(4)]
    >>> A, Bk, Bv, s = group_svd_share(w[:2], w[2:], rank=16)
    >>> bool(np.allclose(Bk[0] @ A, w[0]))
    True
  """
  G = len(wk_list)
  if G == 0 or len(wv_list) != G:
    raise ValueError("group_svd_share needs one K and one V matrix per layer")
  M = np.concatenate([np.asarray(w, np.float64) for w in list(wk_list) + list(wv_list)], axis=0)
  rmax = min(M.shape)
  if not 1 <= rank <= rmax:
    raise ValueError(f"rank {rank} out of range: the group's maximum feasible rank is {rmax}")
  U, S, Vt = np.linalg.svd(M, full_matrices=False)
  root = np.sqrt(S[:rank])
  A = root[:, None] * Vt[:rank]
  B = U[:, :rank] * root[None, :]
  d_kv = wk_list[0].shape[0]
  Bk = [B[i * d_kv : (i + 1) * d_kv] for i in range(G)]
  Bv = [B[(G + i) * d_kv : (G + i + 1) * d_kv] for i in range(G)]
  return A, Bk, Bv, S


def max_group_rank(config: ModelConfig, group_size: int) -> int:
  r"""Largest useful latent rank of a group: ``min(2 G K H, D)`` (the stacked K/V projections' rank bound)."""
  return min(2 * group_size * config.n_kv_heads * config.head_dim, config.d_model)


def layer_groups(config: ModelConfig, group_size: int) -> tuple[tuple[int, ...], ...]:
  """The layers that share a latent: ``group_size`` adjacent layers, or, in a model whose layers have
  different attention types (Gemma 3's local sliding-window layers interleaved with global ones), consecutive
  layers *of one type* (a group never mixes a local with a global layer: their keys see different spans and
  RoPE bases); the last group of a type may be smaller.

  Example:
    >>> cfg = ModelConfig.tiny(n_layers=6, model_type="gemma3_text", sliding_window=8,
    ...   layer_types=("sliding_attention",) * 2 + ("full_attention",) + ("sliding_attention",) * 3)
    >>> layer_groups(cfg, 2)
    ((0, 1), (3, 4), (5,), (2,))
  """
  L = config.n_layers
  if group_size <= 0:
    raise ValueError(f"group size must be positive, got {group_size}")
  types = config.layer_types
  if not config.mixed_layer_types:
    if L % group_size:
      raise ValueError(f"group size {group_size} must divide the layer count {L}")
    return tuple(tuple(range(g * group_size, (g + 1) * group_size)) for g in range(L // group_size))
  out = []
  for kind in dict.fromkeys(types):  # first-seen order of the types
    members = [i for i, t in enumerate(types) if t == kind]
    out += [tuple(members[j : j + group_size]) for j in range(0, len(members), group_size)]
  return tuple(out)


def allocate_ranks(
  config: ModelConfig,
  group_size: int,
  *,
  rank: int | None = None,
  ratio: float | None = None,
  layer_scores: Sequence[float] | None = None,
  multiple: int = 32,
  groups: Sequence[Sequence[int]] | None = None,
) -> list[int]:
  """One rank per group: fixed ``rank`` (capped at a smaller group's own maximum); or ``ratio`` of the group's
  maximum feasible rank; or Fisher-style:
  ``ratio * rmax * mean(score of the group) / mean(all scores)`` rounded to ``multiple`` and clipped to
  ``[multiple, rmax]`` (scores are per layer; exactly one of rank / ratio must be given, scores optional
  with ratio). ``groups``: the member layers of each group (default ``layer_groups(config, group_size)``)."""
  L = config.n_layers
  groups = layer_groups(config, group_size) if groups is None else tuple(tuple(g) for g in groups)
  if (rank is None) == (ratio is None):
    raise ValueError("give exactly one of rank or ratio")
  rmax = [max_group_rank(config, len(g)) for g in groups]
  if rank is not None:  # a smaller group (the last of a layer type) is capped at its own maximum: lossless there
    if not 1 <= rank <= max(rmax):
      raise ValueError(
        f"rank {rank} out of range: the maximum feasible rank for groups of {group_size} is {max(rmax)}"
      )
    return [min(int(rank), r) for r in rmax]
  if not 0.0 < ratio <= 1.0:
    raise ValueError(f"ratio must be in (0, 1], got {ratio}")
  if layer_scores is None:
    return [max(1, int(round(ratio * r))) for r in rmax]
  scores = np.asarray(layer_scores, np.float64)
  if scores.shape != (L,) or np.any(scores <= 0):
    raise ValueError(f"layer_scores must be {L} positive numbers")
  group = np.array([scores[list(g)].mean() for g in groups])
  raw = ratio * np.asarray(rmax) * group / group.mean()
  out = []
  for x, r in zip(raw, rmax):
    m = min(multiple, r)
    out.append(int(np.clip(round(x / m) * m, m, r)))
  return out


@dataclasses.dataclass(frozen=True)
class LatentSpec:
  """Where the shared latent lives: ``ranks[g]`` per group; group g's layers are ``groups[g]`` (``None``:
  ``group_size`` adjacent layers per group, group g = layers ``g G .. g G + G - 1``)."""

  group_size: int
  ranks: tuple[int, ...]
  groups: tuple[tuple[int, ...], ...] | None = None

  def members(self, g: int) -> tuple[int, ...]:
    """The layers of group ``g`` (ascending)."""
    if self.groups is not None:
      return self.groups[g]
    return tuple(range(g * self.group_size, (g + 1) * self.group_size))

  def group_of(self, layer: int) -> int:
    if self.groups is None:
      return layer // self.group_size
    return next(g for g, m in enumerate(self.groups) if layer in m)

  @property
  def n_layers(self) -> int:
    return sum(len(self.members(g)) for g in range(len(self.ranks)))

  def rank_of(self, layer: int) -> int:
    return self.ranks[self.group_of(layer)]


def compress(
  config: ModelConfig,
  params: dict,
  *,
  group_size: int = 4,
  rank: int | None = None,
  ratio: float | None = None,
  layer_scores: Sequence[float] | None = None,
  multiple: int = 32,
) -> tuple[ModelConfig, dict, LatentSpec, dict]:
  """CommonKV surgery ``(config, params) -> (config, params)``: every layer's attention gains ``kv_down``
  (A, shared in its group, [r, D]), ``k_up`` [K, H, r] and ``v_up`` [K, H, r] in place of ``k``/``v``.

  Groups are ``layer_groups(config, group_size)``: adjacent layers, or, in a model with local and global
  layers (Gemma 3), consecutive layers of one type, so a group never mixes the two. Returns ``(config, new
  params, LatentSpec, report)`` with per-group relative Frobenius truncation errors and the Eckart-Young tail.
  The config is unchanged (the latent layout is read from the parameters).
  """
  if is_latent_layer(params["layers"][0]["attn"]):
    raise ValueError("parameters are already CommonKV-compressed")
  groups = layer_groups(config, group_size)
  ranks = allocate_ranks(
    config, group_size, rank=rank, ratio=ratio, layer_scores=layer_scores, multiple=multiple, groups=groups
  )
  K, H = config.n_kv_heads, config.head_dim
  down, k_up, v_up = LATENT_LEAVES  # the leaf names of jaxeff.models.latent
  layers = [dict(lp) for lp in params["layers"]]
  report = {"ranks": ranks, "rel_error": [], "tail_energy": []}
  for idx, r in zip(groups, ranks):
    mats = [_kv_matrices(params, i) for i in idx]
    A, Bk, Bv, S = group_svd_share([m[0] for m in mats], [m[1] for m in mats], r)
    M = np.concatenate([m[0] for m in mats] + [m[1] for m in mats])
    report["rel_error"].append(float(np.linalg.norm(M - np.concatenate(Bk + Bv) @ A) / np.linalg.norm(M)))
    report["tail_energy"].append(float(np.sqrt((S[r:] ** 2).sum())))
    dtype = params["layers"][idx[0]]["attn"]["k"].dtype
    A_shared = jnp.asarray(A, dtype)  # one array for the whole group
    for j, i in enumerate(idx):
      attn = {k_: v_ for k_, v_ in layers[i]["attn"].items() if k_ not in ("k", "v")}
      attn[down] = A_shared
      attn[k_up] = jnp.asarray(Bk[j].reshape(K, H, r), dtype)
      attn[v_up] = jnp.asarray(Bv[j].reshape(K, H, r), dtype)
      layers[i] = dict(layers[i], attn=attn)
  new = dict(params, layers=tuple(layers))
  contiguous = groups == tuple(tuple(range(g * group_size, (g + 1) * group_size)) for g in range(len(groups)))
  return config, new, LatentSpec(group_size, tuple(ranks), None if contiguous else groups), report


# ------------------------------------------------------------------------------------------------ latent cache
VALUE_MODES = ("rebuild", "absorb")


@flax.struct.dataclass
class LatentLayer:
  """One layer's latents ``c [B, S, r]`` (or uint8 codes, ``r/2`` bytes for int4, with per-token ``scale``
  and ``minimum`` [B, S]), slot positions ``[B, S]`` and fill ``[B]``; with selective reconstruction also
  ``key_max`` / ``key_min [B, ceil(S / tile), K, H]``: each tile's channel-wise max and min of its (RoPE'd)
  keys (-inf / +inf while empty)."""

  latent: jax.Array
  pos: jax.Array
  length: jax.Array
  scale: jax.Array | None = None
  minimum: jax.Array | None = None
  key_max: jax.Array | None = None
  key_min: jax.Array | None = None


@flax.struct.dataclass
class LatentCache(_SlotLayers):
  """CommonKV cache: ONE latent per token per layer (``r`` floats instead of ``2 d_kv``).

  ``attend`` rebuilds keys ``RoPE(Bk c)`` at the cached positions (RoPE sits after the rebuild, so ``Bk`` cannot
  be absorbed into the query) and either rebuilds values ``Bv c`` (``value_mode='rebuild'``) or attends over
  the latents and applies ``Bv`` to the weighted latent (``'absorb'``: ``sum_t p_t Bv c_t = Bv sum_t p_t c_t``,
  the value never exists per token; equivalent to fusing ``Bv`` into the output projection; the default).

  Selective reconstruction (``select_tiles``; xKV's and ShadowKV's selective reconstruction with Quest's
  page bound as the selector): rebuilding every cached key at every step costs ``r K H`` MACs per token, about
  16x the attention itself, which made latent decode slower than the full cache. With ``select_tiles=n`` the
  cache also keeps, per tile of ``tile`` slots, the channel-wise max and min of its RoPE'd keys (``2 K H /
  tile`` floats per token: 1/16 of a full cache's keys at the default tile 32). A decode step scores each tile
  by ``max_heads sum_i max(q_i kmax_i, q_i kmin_i)``, an upper bound of the tile's largest attention logit (so
  one needle token lifts its tile; a mean would dilute it), keeps the ``n`` best tiles (the first tile, a sink,
  and the newest one always), and rebuilds keys (and dequantizes quantized latents) for those tiles only: work
  and reads bounded by ``n tile`` tokens whatever the context. ``n >= ceil(S / tile)`` gives exact attention.
  One-token decode steps only (prefill and multi-token chunks attend over everything). An earlier version
  scored tiles by their mean logit (sum of keys): on tiny-recall it kept 6 % needle accuracy at 1K.

  Example:
    >>> from jaxeff.config import ModelConfig
    >>> cache = LatentCache.init(ModelConfig.tiny(), LatentSpec(2, (24,)), batch=1, max_len=8)
    >>> cache.layers[0].latent.shape
    (1, 8, 24)
  """

  layers: tuple[LatentLayer, ...]
  spec: LatentSpec = flax.struct.field(pytree_node=False, default=None)
  value_mode: str = flax.struct.field(pytree_node=False, default="absorb")
  kernel: str | None = flax.struct.field(pytree_node=False, default=None)
  bits: int | None = flax.struct.field(pytree_node=False, default=None)
  select_tiles: int | None = flax.struct.field(pytree_node=False, default=None)
  tile: int = flax.struct.field(pytree_node=False, default=32)

  @classmethod
  def init(
    cls,
    config: ModelConfig,
    spec: LatentSpec,
    batch: int,
    max_len: int,
    dtype=jnp.float32,
    *,
    value_mode: str = "absorb",
    kernel: str | None = None,
    bits: int | None = None,
    select_tiles: int | None = None,
    tile: int = 32,
  ) -> LatentCache:
    """``kernel``: None (jnp attention over rebuilt keys) or an implementation of
    ``kernels_pallas.latent_attention`` ('xla', 'pallas_tpu', 'pallas_gpu') for one-token decode steps
    (values absorbed in-kernel; layers with k/v biases or q/k norms use the jnp path). ``bits`` (8 or 4)
    stores the latents quantized per token (CommonKV composed with quantization). ``select_tiles`` / ``tile``:
    selective reconstruction (class docstring); None rebuilds every cached key."""
    if bits not in (None, 8, 4):
      raise ValueError(f"bits must be None, 8 or 4, got {bits}")
    if select_tiles is not None and (select_tiles < 2 or tile < 1):
      raise ValueError(f"select_tiles must be >= 2 (sink + newest tile) and tile >= 1, got {select_tiles}, {tile}")
    if value_mode not in VALUE_MODES:
      raise ValueError(f"value_mode must be one of {VALUE_MODES}, got {value_mode!r}")
    if config.n_layers != spec.n_layers:
      raise ValueError(f"LatentSpec covers {spec.n_layers} layers; the model has {config.n_layers}")

    bounds = (None, None)
    if select_tiles is not None:
      shape = (batch, -(-max_len // tile), config.n_kv_heads, config.head_dim)
      bounds = (jnp.full(shape, -jnp.inf, jnp.float32), jnp.full(shape, jnp.inf, jnp.float32))

    def layer(r):
      pos, length = jnp.full((batch, max_len), -1, jnp.int32), jnp.zeros((batch,), jnp.int32)
      if bits is None:
        return LatentLayer(jnp.zeros((batch, max_len, r), dtype), pos, length, None, None, *bounds)
      if bits == 4 and r % 2:
        raise ValueError(f"int4 latents need an even rank, got {r}")
      width = r // 2 if bits == 4 else r
      stats = jnp.zeros((batch, max_len), jnp.float32)
      return LatentLayer(jnp.zeros((batch, max_len, width), jnp.uint8), pos, length, stats, stats, *bounds)

    layers = tuple(layer(spec.rank_of(i)) for i in range(config.n_layers))
    return cls(
      layers=layers,
      spec=spec,
      value_mode=value_mode,
      kernel=kernel,
      bits=bits,
      select_tiles=select_tiles,
      tile=tile,
    )

  def latent_values(self, layer: int) -> jax.Array:
    """Layer ``layer``'s latents as floats [B, S, r] (dequantized when stored quantized)."""
    e = self.layers[layer]
    return self._floats(e.latent, e.scale, e.minimum)

  def _floats(self, latent, scale, minimum):
    if self.bits is None:
      return latent
    from jaxeff.kvcache.quantized import unpack_int4

    codes = unpack_int4(latent) if self.bits == 4 else latent
    return minimum[..., None] + scale[..., None] * codes.astype(jnp.float32)

  def selected(self, layer: int, q_btnh, q_pos_bt, window=None) -> tuple[jax.Array, jax.Array]:
    """Selective reconstruction's read of one decode step: the latents (as floats, only these dequantized)
    and positions of the ``select_tiles`` best tiles, ``[B, n tile, r]`` and ``[B, n tile]`` (-1 for slots
    past the cache or empty). Tile score: ``max_heads sum_i max(q_i kmax_i, q_i kmin_i)`` (a bound of the tile's
    largest logit, Quest's); the first tile and the newest one are always kept; empty or out-of-window tiles
    never outrank a filled one."""
    e = self.layers[layer]
    B, S = e.pos.shape
    nt, K, H = e.key_max.shape[1:]
    n = min(self.select_tiles, nt)
    tok = jnp.arange(nt * self.tile)
    pos_t = jnp.where(tok < S, jnp.take(e.pos, jnp.minimum(tok, S - 1), axis=1), -1).reshape(B, nt, self.tile)
    qp = q_pos_bt[:, :1, None]
    ok = (pos_t >= 0) & (pos_t <= qp)
    if window is not None:
      ok &= qp - pos_t < window
    q = q_btnh[:, 0].reshape(B, K, -1, H).astype(jnp.float32)[:, None]  # [B, 1, K, G, H]
    bound = jnp.maximum(q * e.key_max[:, :, :, None], q * e.key_min[:, :, :, None]).sum(-1)  # [B, nt, K, G]
    score = bound.max((-1, -2))  # [B, nt]
    newest = jnp.max(jnp.where(pos_t >= 0, tok.reshape(nt, self.tile), -1), axis=(1, 2)) // self.tile  # [B]
    forced = (jnp.arange(nt) == 0) | (jnp.arange(nt) == newest[:, None])
    live = ok.any(-1)
    score = jnp.where(live, jnp.where(forced, jnp.inf, score), -jnp.inf)
    _, idx = jax.lax.top_k(score, n)  # [B, n]
    tok_sel = (idx[..., None] * self.tile + jnp.arange(self.tile)).reshape(B, n * self.tile)
    inside = tok_sel < S
    take = lambda x: jnp.take_along_axis(x, jnp.minimum(tok_sel, S - 1).reshape((B, -1) + (1,) * (x.ndim - 2)), 1)
    pos = jnp.where(inside & jnp.take_along_axis(live, idx, 1).repeat(self.tile, 1), take(e.pos), -1)
    if self.bits is None:
      return take(e.latent), pos
    return self._floats(take(e.latent), take(e.scale), take(e.minimum)), pos

  def _write(self, layer, positions_bt, latent, k_btkh=None):
    e = self.layers[layer]
    extra, rows = {}, {}
    if e.key_max is not None:  # fold the new keys into their tiles' bounds (padding changes nothing)
      valid = (positions_bt >= 0)[..., None, None]
      slot = e.length[:, None] + jnp.cumsum(positions_bt >= 0, axis=1) - 1
      ix = (jnp.arange(slot.shape[0])[:, None], jnp.clip(slot // self.tile, 0, e.key_max.shape[1] - 1))
      k = k_btkh.astype(jnp.float32)
      extra["key_max"] = e.key_max.at[ix].max(jnp.where(valid, k, -jnp.inf))
      extra["key_min"] = e.key_min.at[ix].min(jnp.where(valid, k, jnp.inf))
    if self.bits is not None:
      from jaxeff.kvcache.quantized import pack_int4, quantize

      codes, sc, mn = quantize(latent, self.bits, axis=-1, group_size=latent.shape[-1])  # per token
      latent = pack_int4(codes) if self.bits == 4 else codes
      rows.update(scale=sc[..., 0], minimum=mn[..., 0])  # per-token statistics, written beside the codes
    return _with_layer(self, layer, _write_entries(e.replace(**extra), positions_bt, latent=latent, **rows))

  def prefill(self, layer, k_btkh, v_btkh, positions_bt, *, latent: LatentKV | None = None, **_) -> LatentCache:
    return self._write(layer, positions_bt, _latents(latent, "LatentCache"), k_btkh)

  def append(self, layer, k_btkh, v_btkh, positions_bt, *, latent: LatentKV | None = None, **_) -> LatentCache:
    return self._write(layer, positions_bt, _latents(latent, "LatentCache"), k_btkh)

  def attend(self, layer, q_btnh, q_pos_bt, *, window=None, latent: LatentKV | None = None, **_):
    _latents(latent, "LatentCache")
    e = self.layers[layer]
    if self.select_tiles is not None and q_btnh.shape[1] == 1:
      lat, pos = self.selected(layer, q_btnh, q_pos_bt, window)
    elif self.bits is not None and self.kernel is None:  # quantized latents: dequantized tile by tile
      return self._tiled_attention(layer, q_btnh, q_pos_bt, window, latent)
    else:
      lat, pos = self.latent_values(layer), e.pos
    if self.kernel is not None and q_btnh.shape[1] == 1 and latent.absorbable:
      from kernels_pallas.latent_attention import latent_decode_attention

      out = latent_decode_attention(
        q_btnh[:, 0],
        lat,
        pos,
        q_pos_bt[:, 0],
        latent.k_up,
        latent.v_up,
        latent.inv_freq,
        window=window,
        implementation=self.kernel,
      )
      return out[:, None].astype(q_btnh.dtype)
    return _latent_attention(q_btnh, lat, pos, q_pos_bt, latent, window, self.value_mode)

  def _tiled_attention(self, layer, q_btnh, q_pos_bt, window, rec: LatentKV, tile: int = 256):
    """Quantized latents read ``tile`` slots at a time up to the last filled slot (``tiled_cache_attention``):
    each tile dequantized, its keys rebuilt, its values rebuilt or (``absorb``) attended as latents with ``Bv``
    applied once to the weighted sum; the whole cache is never dequantized."""
    e = self.layers[layer]
    read, n_tiles = _cache_tiles(e.pos, tile)
    absorb = self.value_mode == "absorb"
    K = rec.k_up.shape[0]

    def load(j):
      sl, pos = read(j)
      lat = self._floats(sl(e.latent), sl(e.scale), sl(e.minimum))
      k, v = rec.rebuild(lat, jnp.maximum(pos, 0))
      if absorb:
        v = jnp.broadcast_to(lat[:, :, None, :], (*lat.shape[:2], K, lat.shape[-1]))
      return k, v, pos

    out = tiled_cache_attention(q_btnh, load, n_tiles, q_pos_bt, window=window)
    if not absorb:
      return out
    B, T, N, _ = out.shape
    pc = out.reshape(B, T, K, N // K, -1).astype(jnp.float32)
    o = jnp.einsum("btkgr,khr->btkgh", pc, rec.v_up.astype(jnp.float32))
    if rec.v_bias is not None:
      o = o + rec.v_bias[None, None, :, None, :]
    return o.reshape(B, T, N, -1).astype(q_btnh.dtype)

  def repeat(self, n: int) -> LatentCache:
    return jax.tree.map(lambda x: jnp.repeat(x, n, axis=0), self)

  def nbytes(self) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self))

  def bytes_per_token(self) -> float:
    """Analytic bytes per cached token: latents (codes + per-token scale/min when quantized) and, with selective
    reconstruction, the tile bounds (``2 x 4 K H / tile``); positions excluded."""
    stats = 0 if self.bits is None else 8
    marks = lambda e: 0 if e.key_max is None else 8 * e.key_max.shape[2] * e.key_max.shape[3] / self.tile
    return float(sum(e.latent.shape[-1] * e.latent.dtype.itemsize + stats + marks(e) for e in self.layers))


def _latents(latent: LatentKV | None, who: str) -> jax.Array:
  if not isinstance(latent, LatentKV):  # None (a plain layer) or another layer type's record (MLA)
    raise ValueError(
      f"{who} stores CommonKV latents: compress the model with jaxeff.kvcache.commonkv.compress (its layers then "
      "hand each cache call their LatentKV record)"
    )
  return latent.c


def _latent_attention(q_btnh, lat_bsr, pos_bs, q_pos_bt, latent: LatentKV, window, value_mode):
  """Queries over cached latents: keys (and values, ``value_mode='rebuild'``) rebuilt from them."""
  k, v = latent.rebuild(lat_bsr, jnp.maximum(pos_bs, 0))
  mask = position_mask(q_pos_bt, pos_bs, window)
  if value_mode == "rebuild":
    return masked_attention(q_btnh, k.astype(q_btnh.dtype), v.astype(q_btnh.dtype), mask)
  return _absorbed_attention(q_btnh, k, lat_bsr, latent, mask)


def _absorbed_attention(q_btnh, k_bskh, latent_bsr, rec: LatentKV, mask_bts):
  """softmax(q k^T / sqrt(H)) applied to the latents, then ``Bv`` per kv head (plus the value bias)."""
  B, T, N, H = q_btnh.shape
  K = k_bskh.shape[2]
  G = N // K
  q = q_btnh.reshape(B, T, K, G, H).astype(jnp.float32)
  s = jnp.einsum("btkgh,bskh->bkgts", q, k_bskh.astype(jnp.float32)) * H**-0.5
  s = jnp.where(mask_bts[:, None, None], s, -1e30)
  p = jax.nn.softmax(s, axis=-1)
  pc = jnp.einsum("bkgts,bsr->btkgr", p, latent_bsr.astype(jnp.float32))
  out = jnp.einsum("btkgr,khr->btkgh", pc, rec.v_up.astype(jnp.float32))
  if rec.v_bias is not None:
    out = out + rec.v_bias[None, None, :, None, :]
  return out.reshape(B, T, N, H).astype(q_btnh.dtype)


# ------------------------------------------------------------------------------------------------ merging
@flax.struct.dataclass
class MergedLatentCache:
  """CommonKV cache after the cross-layer merge: per group ONE ``shared [B, S, r]`` latent (the merged
  ``sum_l w_l c^l`` at merged slots), per layer ``own [B, U, r]`` entries for the unmerged slots (listed in
  the group's ``own_slot [B, U]``, -1 = empty) and for every decoded token (decode tokens never merge).
  ``U`` (``capacity``) is static, so the memory really drops: ``nbytes`` counts the arrays held.
  """

  shared: tuple[jax.Array, ...]  # per group [B, S, r]
  own: tuple[jax.Array, ...]  # per layer [B, U, r]
  own_slot: tuple[jax.Array, ...]  # per group [B, U]
  own_len: jax.Array  # [B] (same for every group: decode appends go to all)
  own_count: tuple[jax.Array, ...]  # per group [B] unmerged prompt entries
  prompt_len: jax.Array  # [B] tokens at merge time
  pos: jax.Array  # [B, S]
  length: jax.Array  # [B]
  spec: LatentSpec = flax.struct.field(pytree_node=False, default=None)
  value_mode: str = flax.struct.field(pytree_node=False, default="absorb")

  @property
  def max_len(self) -> int:
    return self.pos.shape[1]

  def prefill(self, *a, **k):
    raise ValueError("a merged CommonKV cache is built after prefill; prefill into a LatentCache, then merge")

  def append(self, layer, k_btkh, v_btkh, positions_bt, *, latent: LatentKV | None = None, **_) -> MergedLatentCache:
    c = _latents(latent, "MergedLatentCache")
    g = self.spec.group_of(layer)
    own = list(self.own)
    own[layer] = _write_rows(own[layer], c, self.own_len)
    last_of_group = layer == self.spec.members(g)[-1]
    return append_bookkeeping(self.replace(own=tuple(own)), g, last_of_group, layer == len(self.own) - 1, positions_bt)

  def latent_of(self, layer: int) -> jax.Array:
    """Layer ``layer``'s latents for every slot [B, S, r]: shared values, own entries scattered over them."""
    g = self.spec.group_of(layer)
    return scatter_own(self.shared[g], self.own_slot[g], self.own_len, self.own[layer])

  def attend(self, layer, q_btnh, q_pos_bt, *, window=None, latent: LatentKV | None = None, **_):
    c = _latents(latent, "MergedLatentCache")
    lat = self.latent_of(layer)
    pos, length = self.pos, self.length
    if layer != len(self.own) - 1:
      # Earlier layers of this decode step see the new token before the shared counters advance (the last
      # layer advances them): place it at its slot explicitly.
      lat = _write_rows(lat, c, length)
      pos = _write_rows(pos, q_pos_bt.astype(jnp.int32), length)
    return _latent_attention(q_btnh, lat, pos, q_pos_bt, latent, window, self.value_mode)

  def repeat(self, n: int) -> MergedLatentCache:
    return jax.tree.map(lambda x: jnp.repeat(x, n, axis=0), self)

  def nbytes(self) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self))

  def unmerged_fraction(self) -> jax.Array:
    """Share of (group, prompt token) pairs kept unmerged, per the merge decision."""
    return sum(c.sum() for c in self.own_count) / (len(self.own_count) * self.prompt_len.sum())


def append_bookkeeping(cache, group: int, record: bool, advance: bool, positions_bt):
  """Shared by the merged caches (CommonKV, MiniCache): after a layer's own entries are written at
  ``own_len``, ``record`` writes the decoded tokens' slots (``length + t``, -1 for padding) into
  ``own_slot[group]`` (once per group: at its last layer), and ``advance`` (the model's last layer) writes the
  positions and moves ``length`` and ``own_len``."""
  if record:
    slots = jnp.where(positions_bt >= 0, cache.length[:, None] + jnp.arange(positions_bt.shape[1])[None], -1)
    own_slot = list(cache.own_slot)
    own_slot[group] = _write_rows(own_slot[group], slots.astype(jnp.int32), cache.own_len)
    cache = cache.replace(own_slot=tuple(own_slot))
  if advance:
    n = jnp.sum(positions_bt >= 0, axis=1).astype(jnp.int32)
    cache = cache.replace(
      pos=_write_rows(cache.pos, positions_bt.astype(jnp.int32), cache.length),
      length=cache.length + n,
      own_len=cache.own_len + n,
    )
  return cache


def scatter_own(full, slot, own_len, own):
  """``full [B, S, ...]`` with the valid own entries ``own [B, U, ...]`` written at their slots ``slot [B, U]``
  (entries past ``own_len`` or with slot -1 are dropped)."""
  S, U = full.shape[1], slot.shape[1]
  valid = (jnp.arange(U)[None] < own_len[:, None]) & (slot >= 0)
  idx = jnp.where(valid, slot, S)  # out of bounds -> dropped
  return jax.vmap(lambda f, i, o: f.at[i].set(o, mode="drop"))(full, idx, own)


def merge_after_prefill(
  cache: LatentCache,
  *,
  rho: float = 0.4,
  n_sink: int = 4,
  n_recent: int = 128,
  weights: Sequence[Sequence[float]] | None = None,
  capacity: int | None = None,
) -> MergedLatentCache:
  r"""CommonKV's cross-layer merge of a prefilled ``LatentCache`` (official ``merge_all_kv``).

  1. Per group g and prompt token t: ``s_gt = cos(c_t^{first(g)}, c_t^{last(g)})``.
  2. Over all (row, token, group) pairs, the globally least similar fraction ``rho`` stays unmerged (a less
     similar group keeps more); sinks (``t < n_sink``) and each row's last ``n_recent`` prompt tokens never
     merge.
  3. Other entries become ``hbar_t = sum_{l in g} w_l c_t^l`` (``weights[g]`` sums to 1; uniform by default,
     or from ``layer_sensitivity``), stored once per group.

  ``capacity`` (static) is the per-layer room for unmerged prompt entries plus decoded tokens; default: the
  largest unmerged set plus room for the cache to fill (``S - shortest prompt``), computed from the concrete
  cache (pass it explicitly under ``jit``). If a group needs more unmerged entries than fit, its most similar
  candidates merge instead; appends past the capacity are an error of the caller (size it for decoding).
  ``rho = 1`` keeps everything unmerged (the identity).

  Example:
    >>> # cache = LatentCache.init(...); _, cache = forward(params, prompt, pos, cache, config=cfg)
    >>> # merged = merge_after_prefill(cache, rho=0.4)
  """
  spec = cache.spec
  n_groups = len(spec.ranks)
  members = [spec.members(g) for g in range(n_groups)]
  if not 0.0 <= rho <= 1.0:
    raise ValueError(f"rho must be in [0, 1], got {rho}")
  if weights is None:
    weights = [[1.0 / len(m)] * len(m) for m in members]
  sizes = [len(m) for m in members]
  w = [np.asarray(row, np.float64) for row in weights]
  if len(w) != n_groups or any(x.shape != (n,) or abs(x.sum() - 1) > 1e-6 for x, n in zip(w, sizes)):
    raise ValueError(f"weights must be {n_groups} rows (of {sizes} numbers) each summing to 1")
  e0 = cache.layers[0]
  B, S = e0.pos.shape
  length = e0.length
  slots = jnp.arange(S)
  valid = slots[None] < length[:, None]  # [B, S]
  protected = (slots[None] < n_sink) | (slots[None] >= length[:, None] - n_recent)
  sims = []
  for m in members:
    a = cache.latent_values(m[0]).astype(jnp.float32)
    b = cache.latent_values(m[-1]).astype(jnp.float32)
    cos = (a * b).sum(-1) / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1) + 1e-12)
    sims.append(cos)
  sim = jnp.stack(sims)  # [n_groups, B, S]
  # Global rank over candidates and protected tokens alike (the official pools every (b, t, g) score).
  flat = jnp.where(valid[None], sim, jnp.inf).reshape(-1)
  n_valid = valid.sum() * n_groups
  k_low = jnp.ceil(rho * n_valid).astype(jnp.int32)
  rank = jnp.argsort(jnp.argsort(flat, stable=True), stable=True).reshape(sim.shape)
  unmerged = valid[None] & (protected[None] | (rank < k_low))
  if capacity is None:
    try:  # room for the largest unmerged set plus every future decoded token (needs concrete lengths)
      need = int(jnp.max(unmerged.sum(-1)))
      cap = min(S, need + S - int(jnp.min(length)))
    except jax.errors.ConcretizationTypeError:
      raise ValueError("merge_after_prefill under jit needs an explicit capacity") from None
  else:
    cap = int(capacity)
  if not 1 <= cap <= S:
    raise ValueError(f"capacity must be in [1, {S}], got {cap}")
  shared, own_slot, own_count = [], [], []
  own = [None] * len(cache.layers)
  for g in range(n_groups):
    um = unmerged[g]  # [B, S]
    # Keep at most `cap` unmerged per row: protected first, then by ascending similarity.
    key = jnp.where(um, jnp.where(protected, -jnp.inf, sim[g]), jnp.inf)
    order = jnp.argsort(key, axis=1, stable=True)[:, :cap]  # [B, cap]
    count = jnp.minimum(um.sum(1), cap).astype(jnp.int32)
    keep = jnp.arange(cap)[None] < count[:, None]
    slot_ids = jnp.where(keep, order, -1).astype(jnp.int32)
    really = jnp.zeros((B, S), bool).at[jnp.arange(B)[:, None], jnp.where(keep, order, S)].set(True, mode="drop")
    merged_val = sum(float(w[g][j]) * cache.latent_values(i).astype(jnp.float32) for j, i in enumerate(members[g]))
    merged_val = jnp.where((valid & ~really)[..., None], merged_val, 0.0).astype(jnp.float32)
    shared.append(merged_val)
    own_slot.append(slot_ids)
    own_count.append(count)
    for i in members[g]:
      lat = cache.latent_values(i).astype(jnp.float32)
      own[i] = jnp.where(keep[..., None], jnp.take_along_axis(lat, jnp.maximum(order, 0)[..., None], 1), 0)
  # Every group's unmerged list has its own length; decode appends go after the longest (one own_len).
  own_len = jnp.max(jnp.stack(own_count), axis=0)
  own_slot = [jnp.where(jnp.arange(cap)[None] < c[:, None], s, -1) for s, c in zip(own_slot, own_count)]
  return MergedLatentCache(
    shared=tuple(shared),
    own=tuple(own),
    own_slot=tuple(own_slot),
    own_len=own_len,
    own_count=tuple(own_count),
    prompt_len=length,
    pos=e0.pos,
    length=length,
    spec=spec,
    value_mode=cache.value_mode,
  )


# ------------------------------------------------------------------------------------------------ factory
@dataclasses.dataclass(frozen=True)
class CommonKV:
  """Cache factory for the sampler (``Sampler(..., cache=CommonKV(spec, ...))``): a ``LatentCache`` per
  call, optionally int8/int4 latents, and optionally the cross-layer merge right after prefill.

  The merged cache's static capacity is ``min(S, ceil(slack * rho * P) + n_sink + n_recent + M)`` for a prompt
  of ``P`` padded tokens and ``M`` new tokens (a group needing more merges its most similar candidates).
  ``select_tiles`` / ``tile``: selective reconstruction at decode (``LatentCache``); not with ``merge``.
  """

  spec: LatentSpec
  bits: int | None = None
  merge: bool = False
  rho: float = 0.4
  n_sink: int = 4
  n_recent: int = 128
  weights: tuple[tuple[float, ...], ...] | None = None
  slack: float = 1.0
  kernel: str | None = None
  value_mode: str = "absorb"
  select_tiles: int | None = None
  tile: int = 32

  def __post_init__(self):
    if self.merge and self.select_tiles is not None:
      raise ValueError("CommonKV: select_tiles (selective reconstruction) is not available with merge=True")

  def init(self, config, batch, max_len, dtype=jnp.float32):
    return LatentCache.init(
      config,
      self.spec,
      batch,
      max_len,
      dtype,
      value_mode=self.value_mode,
      kernel=self.kernel,
      bits=self.bits,
      select_tiles=self.select_tiles,
      tile=self.tile,
    )

  def after_prefill(self, cache, *, max_new_tokens: int):
    if not self.merge:
      return cache
    S = cache.max_len
    P = S - max_new_tokens
    cap = min(S, int(np.ceil(self.slack * self.rho * P)) + self.n_sink + self.n_recent + max_new_tokens)
    return merge_after_prefill(
      cache, rho=self.rho, n_sink=self.n_sink, n_recent=self.n_recent, weights=self.weights, capacity=cap
    )


# ------------------------------------------------------------------------------------------------ calibration
def _mean_nll(params, config, tokens):
  from jaxeff.models.decoder import forward

  B, T = tokens.shape
  logits, _ = forward(params, tokens[:, :-1], jnp.broadcast_to(jnp.arange(T - 1), (B, T - 1)), config=config)
  lp = jax.nn.log_softmax(logits, -1)
  return -jnp.take_along_axis(lp, tokens[:, 1:, None], -1).mean()


def fisher_scores(config: ModelConfig, params: dict, batches: Sequence[np.ndarray]) -> list[float]:
  """Per-layer empirical Fisher of ``v_proj`` (Palu's rank search): mean over calibration batches of
  ``||d loss / d Wv^l||_F^2``. Feed to ``compress(..., ratio=, layer_scores=)``.

  Args:
    batches: token arrays [B, T+1] (e.g. ``PackedIterator`` rows of the trainer's data pipeline).
  """
  grad_fn = jax.jit(jax.grad(lambda p, t: _mean_nll(p, config, t)))
  tot = np.zeros(config.n_layers)
  for tokens in batches:
    g = grad_fn(params, jnp.asarray(tokens, jnp.int32))
    tot += np.array([float(jnp.sum(lp["attn"]["v"].astype(jnp.float32) ** 2)) for lp in g["layers"]])
  return (tot / max(len(batches), 1)).tolist()


def layer_sensitivity(
  config: ModelConfig, params: dict, spec: LatentSpec, batches: Sequence[np.ndarray], *, seed: int = 0
) -> tuple[tuple[float, ...], ...]:
  """Merge weights from a layer-sensitivity calibration (official ``layer_sensitivity.py``): replace layer l's
  rebuilt keys by noise — here its key up-projection ``Bk^l`` by Gaussian noise of the same scale, so the keys
  become uninformative — measure the rise of the calibration loss, and normalise the rises within each group
  (sum to 1). Layers whose damage is larger weigh more in the merged latent. Compressed parameters required.
  """
  if "kv_down" not in params["layers"][0]["attn"]:
    raise ValueError("layer_sensitivity needs CommonKV-compressed parameters (jaxeff.kvcache.commonkv.compress)")
  loss = jax.jit(lambda p, t: _mean_nll(p, config, t))
  base = np.mean([float(loss(params, jnp.asarray(t, jnp.int32))) for t in batches])
  rise = []
  key = jax.random.key(seed)
  for i in range(config.n_layers):
    layers = list(params["layers"])
    ku = layers[i]["attn"]["k_up"]
    noisy = jax.random.normal(jax.random.fold_in(key, i), ku.shape, ku.dtype) * jnp.std(ku)
    layers[i] = dict(layers[i], attn=dict(layers[i]["attn"], k_up=noisy))
    p = dict(params, layers=tuple(layers))
    rise.append(max(np.mean([float(loss(p, jnp.asarray(t, jnp.int32))) for t in batches]) - base, 1e-6))
  out = []
  for g in range(len(spec.ranks)):
    r = np.asarray([rise[i] for i in spec.members(g)])
    out.append(tuple((r / r.sum()).tolist()))
  return tuple(out)
