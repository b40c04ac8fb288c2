"""Quantized KV cache: int8 / int4 (two codes per byte) group quantization, dequantized inside attention.

Asymmetric uniform quantization of a group ``x_1..x_g``: ``scale = (max - min) / (2^b - 1)``,
``code_i = round((x_i - min) / scale)`` in ``[0, 2^b - 1]``, ``x_i ~ min + scale * code_i``; the error of every
entry is at most ``scale / 2``. Two layouts (KIVI, Liu et al. 2024, arXiv 2402.02750):

* ``per_token``: groups of ``group_size`` consecutive channels of one token and kv head (values, and keys
  by default);
* ``per_channel`` (keys): groups of ``group_size`` consecutive *tokens* of one channel. Key outliers live in
  fixed channels, so per-channel groups quantize keys far better. A group is quantized once it is complete;
  until then its tokens stay in a full-precision residual buffer of ``group_size`` slots (KIVI's residual),
  so the freshest tokens are exact.

The cache follows jaxeff's protocol (``prefill`` / ``append`` / ``attend``) and reports its real bytes
(``nbytes``) and the analytic bytes per token (``bytes_per_token``). Per-channel keys assume the prefill
starts at an empty row (what the sampler does); appends may come one or several tokens at a time.

Example:
  >>> from jaxeff.config import ModelConfig
  >>> c = QuantizedCache.init(ModelConfig.tiny(), batch=1, max_len=64, bits=4)
  >>> c.layers[0].k_codes.shape  # [B, S, K, H/2]: two 4-bit codes per byte
  (1, 64, 2, 8)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from jaxtyping import Array

from jaxeff.attention.dense import masked_attention, position_mask, tiled_cache_attention
from jaxeff.config import ModelConfig
from jaxeff.kvcache.base import _cache_tiles, _with_layer, _write_rows

BITS = (8, 4)
KEY_MODES = ("per_token", "per_channel")


# ------------------------------------------------------------------------------------------------ codecs
def quantize(x: Array, bits: int, axis: int = -1, group_size: int = 32):
  """Group-quantize ``x`` along ``axis`` (its length a multiple of ``group_size``).

  Returns ``(codes uint8, scale, minimum)``; codes have x's shape (int4 codes are not packed here),
  ``scale``/``minimum`` have ``axis`` divided by ``group_size`` (float32)."""
  x = jnp.moveaxis(jnp.asarray(x, jnp.float32), axis, -1)
  n = x.shape[-1]
  if n % group_size:
    raise ValueError(f"axis length {n} is not a multiple of group_size {group_size}")
  g = x.reshape(*x.shape[:-1], n // group_size, group_size)
  lo, hi = g.min(-1, keepdims=True), g.max(-1, keepdims=True)
  qmax = 2**bits - 1
  scale = (hi - lo) / qmax
  safe = jnp.where(scale > 0, scale, 1.0)
  codes = jnp.clip(jnp.round((g - lo) / safe), 0, qmax).astype(jnp.uint8).reshape(x.shape)
  return jnp.moveaxis(codes, -1, axis), jnp.moveaxis(scale[..., 0], -1, axis), jnp.moveaxis(lo[..., 0], -1, axis)


def dequantize(codes: Array, scale: Array, minimum: Array, axis: int = -1, group_size: int = 32) -> Array:
  """Inverse of ``quantize``: ``minimum + scale * code`` per group (float32)."""
  c = jnp.moveaxis(codes, axis, -1).astype(jnp.float32)
  s = jnp.repeat(jnp.moveaxis(scale, axis, -1), group_size, axis=-1)
  m = jnp.repeat(jnp.moveaxis(minimum, axis, -1), group_size, axis=-1)
  return jnp.moveaxis(m + s * c, -1, axis)


def pack_int4(codes: Array) -> Array:
  """Two 4-bit codes per byte along the last axis (even index in the low nibble)."""
  return (codes[..., 0::2] & 0xF) | (codes[..., 1::2] << 4)


def unpack_int4(packed: Array) -> Array:
  """Inverse of ``pack_int4``: uint8 bytes [..., n] -> 4-bit codes [..., 2n] (low nibble first)."""
  lo, hi = packed & 0xF, packed >> 4
  return jnp.stack([lo, hi], axis=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)


# ------------------------------------------------------------------------------------------------ cache
@flax.struct.dataclass
class QuantLayer:
  """One layer. Codes ``[B, S, K, H]`` (``H/2`` bytes when int4). Keys per token: ``k_scale/k_min
  [B, S, K, H/g]``; keys per channel: ``[B, S/g, K, H]`` plus the residual ``k_tail [B, g, K, H]`` (full
  precision, slot s of the open group at ``s % g``). Values per token: ``v_scale/v_min [B, S, K, H/g]``."""

  k_codes: Array
  k_scale: Array
  k_min: Array
  v_codes: Array
  v_scale: Array
  v_min: Array
  k_tail: Array
  pos: Array
  length: Array
  bits: int = flax.struct.field(pytree_node=False, default=8)
  key_mode: str = flax.struct.field(pytree_node=False, default="per_token")
  group_size: int = flax.struct.field(pytree_node=False, default=32)


def _encode_tokens(x, bits, g):
  """Per-token codes/scale/min for x [B, T, K, H] (codes packed for int4)."""
  codes, scale, mn = quantize(x, bits, axis=-1, group_size=g)
  return (pack_int4(codes) if bits == 4 else codes), scale, mn


def _decode_tokens(codes, scale, mn, bits, g):
  c = unpack_int4(codes) if bits == 4 else codes
  return dequantize(c, scale, mn, axis=-1, group_size=g)


def _decode_tile(codes, scale, mn, bits, g):
  """A tile for ``tiled_cache_attention``: int8 dequantized whole; int4 as its two nibble parts (even and odd
  channels), each dequantized on its own: channel ``2i + r`` lies in group ``(2i + r) // g = i // (g / 2)``,
  so each part is a per-token layout with groups of ``g / 2``."""
  if bits == 8:
    return dequantize(codes, scale, mn, axis=-1, group_size=g)
  return tuple(dequantize(c, scale, mn, axis=-1, group_size=g // 2) for c in (codes & 0xF, codes >> 4))


@flax.struct.dataclass
class QuantizedCache:
  """int8/int4 KV cache behind jaxeff's cache protocol (module docstring)."""

  layers: tuple[QuantLayer, ...]

  @classmethod
  def init(
    cls,
    config: ModelConfig,
    batch: int,
    max_len: int,
    dtype: Any = jnp.float32,
    *,
    bits: int = 8,
    key_mode: str = "per_token",
    group_size: int = 32,
  ) -> QuantizedCache:
    """Empty cache. ``bits`` in {8, 4}; ``key_mode`` 'per_token' or 'per_channel' (values are always per
    token); ``group_size`` divides ``head_dim`` (per-token groups) and ``max_len`` (per-channel key groups).
    ``dtype`` is the dtype of the residual buffer and of dequantized entries."""
    H, K = config.head_dim, config.n_kv_heads
    g = min(group_size, H)
    if bits not in BITS:
      raise ValueError(f"bits must be one of {BITS}, got {bits}")
    if key_mode not in KEY_MODES:
      raise ValueError(f"key_mode must be one of {KEY_MODES}, got {key_mode!r}")
    if H % g or (bits == 4 and (H % 2 or g % 2)):
      raise ValueError(f"group_size {g} must divide head_dim {H} (and both must be even for int4)")
    if key_mode == "per_channel" and max_len % group_size:
      raise ValueError(f"per-channel keys need max_len {max_len} to be a multiple of group_size {group_size}")
    if batch <= 0 or max_len <= 0:
      raise ValueError(f"cache needs batch > 0 and max_len > 0, got batch={batch}, max_len={max_len}")
    width = H // 2 if bits == 4 else H
    tok_stats = (batch, max_len, K, H // g)
    k_stats = (batch, max_len // group_size, K, H) if key_mode == "per_channel" else tok_stats
    tail = (batch, group_size if key_mode == "per_channel" else 1, K, H)

    def layer():
      return QuantLayer(
        k_codes=jnp.zeros((batch, max_len, K, width), jnp.uint8),
        k_scale=jnp.zeros(k_stats, jnp.float32),
        k_min=jnp.zeros(k_stats, jnp.float32),
        v_codes=jnp.zeros((batch, max_len, K, width), jnp.uint8),
        v_scale=jnp.zeros(tok_stats, jnp.float32),
        v_min=jnp.zeros(tok_stats, jnp.float32),
        k_tail=jnp.zeros(tail, dtype),
        pos=jnp.full((batch, max_len), -1, jnp.int32),
        length=jnp.zeros((batch,), jnp.int32),
        bits=bits,
        key_mode=key_mode,
        group_size=group_size if key_mode == "per_channel" else g,
      )

    return cls(layers=tuple(layer() for _ in range(config.n_layers)))

  # -------------------------------------------------------------------- protocol
  @property
  def length(self) -> Array:
    return self.layers[0].length

  @property
  def max_len(self) -> int:
    return self.layers[0].pos.shape[1]

  def _replace_layer(self, layer: int, new: QuantLayer) -> QuantizedCache:
    return _with_layer(self, layer, new)

  def prefill(self, layer, k_btkh, v_btkh, positions_bt, **_) -> QuantizedCache:
    e = self.layers[layer]
    if e.key_mode == "per_token":
      return self._replace_layer(layer, _write_per_token(e, k_btkh, v_btkh, positions_bt))
    return self._replace_layer(layer, _prefill_per_channel(e, k_btkh, v_btkh, positions_bt))

  def append(self, layer, k_btkh, v_btkh, positions_bt, **_) -> QuantizedCache:
    e = self.layers[layer]
    if e.key_mode == "per_token":
      return self._replace_layer(layer, _write_per_token(e, k_btkh, v_btkh, positions_bt))
    for t in range(k_btkh.shape[1]):  # decode writes are a token or a few: one at a time
      e = _append_one_per_channel(e, k_btkh[:, t : t + 1], v_btkh[:, t : t + 1], positions_bt[:, t : t + 1])
    return self._replace_layer(layer, e)

  supports_softcap = True  # attend honours ``softcap=`` (Gemma's attention-logit cap)

  def attend(self, layer, q_btnh, q_pos_bt, *, window=None, tile: int = 256, softcap=None, **_) -> Array:
    """Per-token layouts are read ``tile`` slots at a time, each tile dequantized inside the attention loop
    (never the whole cache), up to the last filled slot; per-channel keys (groups along the slots, plus the
    residual) are dequantized whole."""
    e = self.layers[layer]
    if e.key_mode == "per_token":
      read, n_tiles = _cache_tiles(e.pos, tile)

      def load(j):
        sl, pos = read(j)
        k = _decode_tile(sl(e.k_codes), sl(e.k_scale), sl(e.k_min), e.bits, e.group_size)
        v = _decode_tile(sl(e.v_codes), sl(e.v_scale), sl(e.v_min), e.bits, e.group_size)
        return k, v, pos

      return tiled_cache_attention(q_btnh, load, n_tiles, q_pos_bt, window=window, softcap=softcap)
    k, v = self.dequantized(layer, q_btnh.dtype)
    return masked_attention(q_btnh, k, v, position_mask(q_pos_bt, e.pos, window), softcap=softcap)

  def dequantized(self, layer: int, dtype=jnp.float32) -> tuple[Array, Array]:
    """The layer's keys and values as the attention sees them, [B, S, K, H] each."""
    e = self.layers[layer]
    v = _decode_tokens(e.v_codes, e.v_scale, e.v_min, e.bits, e.group_size if e.key_mode == "per_token" else _vg(e))
    if e.key_mode == "per_token":
      k = _decode_tokens(e.k_codes, e.k_scale, e.k_min, e.bits, e.group_size)
    else:
      g = e.group_size
      c = unpack_int4(e.k_codes) if e.bits == 4 else e.k_codes
      k = dequantize(c, e.k_scale, e.k_min, axis=1, group_size=g)
      # Slots of each row's open group come from the full-precision residual.
      S = c.shape[1]
      s = jnp.arange(S)
      open_start = (e.length // g) * g
      in_open = (s[None] >= open_start[:, None]) & (s[None] < e.length[:, None])
      tail = jnp.take(e.k_tail, s % g, axis=1)  # [B, S, K, H]
      k = jnp.where(in_open[..., None, None], tail.astype(jnp.float32), k)
    return k.astype(dtype), v.astype(dtype)

  def repeat(self, n: int) -> QuantizedCache:
    return jax.tree.map(lambda x: jnp.repeat(x, n, axis=0), self)

  def nbytes(self) -> int:
    """Bytes held by the cache arrays (codes, scales, residual, positions)."""
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self))

  def bytes_per_token(self) -> float:
    """Analytic bytes per cached token over all layers: codes + per-token stats (+ per-channel key stats
    amortised over their token group); the fixed residual and positions are excluded."""
    total = 0.0
    for e in self.layers:
      K, width = e.k_codes.shape[2], e.k_codes.shape[3]
      codes = 2 * K * width
      v_stats = 2 * 4 * e.v_scale.shape[2] * e.v_scale.shape[3]
      if e.key_mode == "per_token":
        k_stats = 2 * 4 * e.k_scale.shape[2] * e.k_scale.shape[3]
      else:
        k_stats = 2 * 4 * e.k_scale.shape[2] * e.k_scale.shape[3] / e.group_size
      total += codes + v_stats + k_stats
    return total


def _vg(e: QuantLayer) -> int:
  """Value group size (channels) for per-channel-key layers: head_dim / number of value groups."""
  return (e.v_codes.shape[3] * (2 if e.bits == 4 else 1)) // e.v_scale.shape[3]


def _write_per_token(e: QuantLayer, k, v, positions) -> QuantLayer:
  g = e.group_size
  kc, ks, km = _encode_tokens(k, e.bits, g)
  vc, vs, vm = _encode_tokens(v, e.bits, g)
  w = lambda buf, new: _write_rows(buf, new, e.length)
  advance = jnp.sum(positions >= 0, axis=1).astype(jnp.int32)
  return e.replace(
    k_codes=w(e.k_codes, kc),
    k_scale=w(e.k_scale, ks),
    k_min=w(e.k_min, km),
    v_codes=w(e.v_codes, vc),
    v_scale=w(e.v_scale, vs),
    v_min=w(e.v_min, vm),
    pos=w(e.pos, positions.astype(jnp.int32)),
    length=e.length + advance,
  )


def _write_values(e: QuantLayer, v, positions):
  vc, vs, vm = _encode_tokens(v, e.bits, _vg(e))
  w = lambda buf, new: _write_rows(buf, new, e.length)
  return dict(v_codes=w(e.v_codes, vc), v_scale=w(e.v_scale, vs), v_min=w(e.v_min, vm))


def _prefill_per_channel(e: QuantLayer, k, v, positions) -> QuantLayer:
  """Prefill into an empty row: complete token groups are quantized per channel, the rest goes to the
  residual. (Rows must start empty: per-channel groups are aligned to slot 0.)"""
  B, T, K, H = k.shape
  g = e.group_size
  Tp = -(-T // g) * g
  kp = jnp.pad(k.astype(jnp.float32), ((0, 0), (0, Tp - T), (0, 0), (0, 0)))
  codes, scale, mn = quantize(kp, e.bits, axis=1, group_size=g)  # groups along tokens
  if e.bits == 4:
    codes = pack_int4(codes)
  n = jnp.sum(positions >= 0, axis=1).astype(jnp.int32)  # real tokens (right padding)
  zero = jnp.zeros_like(e.length)
  out = dict(
    k_codes=_write_rows(e.k_codes, codes[:, :T], zero),
    k_scale=_write_rows(e.k_scale, scale, zero),
    k_min=_write_rows(e.k_min, mn, zero),
  )
  # Residual: the open group's tokens [floor(n/g) g, n) at slots s % g.
  start = (n // g) * g
  tail = jax.vmap(lambda x, s0: jax.lax.dynamic_slice_in_dim(x, s0, g, axis=0))(
    jnp.pad(k, ((0, 0), (0, g), (0, 0), (0, 0))), start
  )
  out.update(_write_values(e, v, positions))
  return e.replace(
    k_tail=tail.astype(e.k_tail.dtype), pos=_write_rows(e.pos, positions.astype(jnp.int32), zero), length=n, **out
  )


def _append_one_per_channel(e: QuantLayer, k, v, positions) -> QuantLayer:
  """One token per row: into the residual at slot ``length % g``; when the group completes it is quantized."""
  g = e.group_size
  valid = positions[:, 0] >= 0
  slot = e.length % g
  tail = jax.vmap(lambda t, x, s: jax.lax.dynamic_update_slice_in_dim(t, x.astype(t.dtype), s, axis=0))(
    e.k_tail, k, slot
  )
  tail = jnp.where(valid[:, None, None, None], tail, e.k_tail)
  vals = _write_values(e, v, positions)
  pos = _write_rows(e.pos, positions.astype(jnp.int32), e.length)
  new_len = e.length + valid.astype(jnp.int32)
  done = valid & (new_len % g == 0)
  grp = (new_len - 1) // g
  codes, scale, mn = quantize(tail.astype(jnp.float32), e.bits, axis=1, group_size=g)  # [B, g, K, H]
  if e.bits == 4:
    codes = pack_int4(codes)

  def put(buf, new, at):
    upd = _write_rows(buf, new, at)
    return jnp.where(done.reshape((-1,) + (1,) * (buf.ndim - 1)), upd, buf)

  return e.replace(
    k_codes=put(e.k_codes, codes, grp * g),
    k_scale=put(e.k_scale, scale, grp),
    k_min=put(e.k_min, mn, grp),
    k_tail=tail,
    pos=pos,
    length=new_len,
    **vals,
  )


@dataclasses.dataclass(frozen=True)
class Quantized:
  """Cache factory for the sampler: ``Sampler(..., cache=Quantized(bits=4, key_mode='per_channel'))``."""

  bits: int = 8
  key_mode: str = "per_token"
  group_size: int = 32

  def init(self, config, batch, max_len, dtype=jnp.float32):
    if self.key_mode == "per_channel":
      max_len = -(-max_len // self.group_size) * self.group_size
    return QuantizedCache.init(
      config, batch, max_len, dtype, bits=self.bits, key_mode=self.key_mode, group_size=self.group_size
    )
