"""Pallas TPU kernel: per kv head, the group's query heads walk the union of their index lists together.

Grid ``(G, qc, U)`` per call: step ``(g, i, j)`` loads key/value block ``id`` of kv head ``g // sub`` into VMEM
once and folds it into the online softmax of every query head of the group whose own list holds ``id`` (a bit of
the slot's head mask); the ``rg`` query heads' tiles (``[rg, bs, d]``) stay resident across the walk. A slot
packs ``id << 16 | head bits`` into one int32 (``pack_group_lists``), so K/V traffic is once per group, not
once per query head (the GQA ratio saved), and the grid is ``nq x U`` with ``U`` the longest union, not
``Hq x nq x Kmax``. Padded slots repeat the last valid id (the pipeline skips the copy) and are not scored.

Index lists live in SMEM (1 MiB per core on v4 / v5e / v6e, 16 KiB on v2 / v3), far too small for 128K tokens
(8 kv heads x 1024 query blocks x 1024 slots x 4 B = 32 MiB). They are delivered in pieces: a ``lax.scan`` over
(batch row, run of ``qc`` query blocks) calls the kernel once per piece with just that piece's lists
scalar-prefetched, ``qc`` the largest divisor of the block count whose piece fits ``smem_budget`` (computed and
checked before any work; ``ValueError`` names the numbers when even one query block does not fit). The output
buffer is aliased through the calls (``input_output_aliases``): each call writes only its own query blocks, in
place. One kernel is compiled whatever the length.

Causal diagonal, right padding (``kv_len``, scalar-prefetched) and a sliding window are masked at token level. The slot axis
is ``arbitrary`` (sequential); the others are ``parallel`` (megacore sharding).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from kernels_pallas.block_sparse_attention.reference import visible

_NEG = -1e30
SMEM_BUDGET_BYTES = 256 * 1024  # a quarter of the 1 MiB SMEM per core of v4 / v5e / v6e
MAX_GROUP = 16  # head bits per packed slot (ids take the upper 15 bits)
_EMPTY = jnp.iinfo(jnp.int32).max


def group_size(r: int) -> int:
  """Query heads walked together: the largest divisor of the GQA ratio ``r`` that is <= 16 (a kv head with more
  query heads is split into several groups, each fetching its K/V tiles once)."""
  return max(g for g in range(1, min(r, MAX_GROUP) + 1) if r % g == 0)


def pack_group_lists(block_idx: jax.Array, block_cnt: jax.Array, rg: int, nb: int) -> tuple[jax.Array, jax.Array]:
  """The union of each group's ``rg`` query heads' lists, with which heads keep each block:
  ``packed[b, g, i, s] = id << 16 | sum_{h keeps id} 2^h`` ascending by id, valid slots first (``U = min(rg Kmax,
  nb)``; slots past the count repeat the last valid entry, or 0), and counts ``[B, G, nb]``.

  A sorted merge of ``id * rg + h`` keys; a head mask is the sum of its run's ``2^h`` (the heads in a run are
  distinct, so the sum is their OR), read off a cumulative sum. Memory O(nb rg Kmax) per group: never an
  ``[nb, nb]`` mask nor a one-hot.

  Args:
    block_idx: int32 [B, Hq, nb, Kmax]; block_cnt: int32 [B, Hq, nb]; query head ``h`` is member ``h % rg``
      of group ``h // rg``.
    rg: heads per group (<= 16); nb: key blocks (< 2^15).

  Example:
    >>> idx = jnp.array([[[[2, 0]], [[1, 2]]]]); cnt = jnp.array([[[2], [2]]])  # head 0 {2, 0}, head 1 {1, 2}
    >>> packed, n = pack_group_lists(idx, cnt, rg=2, nb=4)
    >>> [(int(p) >> 16, int(p) & 0xFFFF) for p in packed[0, 0, 0, : int(n[0, 0, 0])]]
    [(0, 1), (1, 2), (2, 3)]
  """
  if rg > MAX_GROUP or nb >= 2**15:
    raise ValueError(f"pack_group_lists needs rg <= {MAX_GROUP} and nb < 32768, got rg {rg}, nb {nb}")
  B, Hq, nbq, kmax = block_idx.shape
  G = Hq // rg
  valid = jnp.arange(kmax) < block_cnt[..., None]
  member = (jnp.arange(Hq) % rg)[None, :, None, None]
  key = jnp.where(valid, block_idx * rg + member, nb * rg).astype(jnp.int32)
  key = jnp.sort(key.reshape(B, G, rg, nbq, kmax).transpose(0, 1, 3, 2, 4).reshape(B, G, nbq, rg * kmax), axis=-1)
  ids, head = key // rg, key % rg
  real = ids < nb
  cs = jnp.cumsum(jnp.where(real, jnp.left_shift(1, head), 0), axis=-1)
  last = jnp.concatenate([ids[..., 1:] != ids[..., :-1], jnp.ones_like(ids[..., :1], bool)], axis=-1)
  seen = jax.lax.cummax(jnp.where(last, cs, 0), axis=cs.ndim - 1)
  bits = cs - jnp.concatenate([jnp.zeros_like(cs[..., :1]), seen[..., :-1]], axis=-1)
  packed = jnp.where(last & real, jnp.left_shift(ids, 16) | bits, _EMPTY)
  packed = jnp.sort(packed, axis=-1)[..., : min(rg * kmax, nb)]
  n = (packed != _EMPTY).sum(-1).astype(jnp.int32)
  tail = jnp.take_along_axis(packed, jnp.maximum(n - 1, 0)[..., None], axis=-1)
  packed = jnp.where(jnp.arange(packed.shape[-1]) < n[..., None], packed, jnp.where(n[..., None] > 0, tail, 0))
  return packed.astype(jnp.int32), n


def smem_bytes(G: int, qc: int, U: int, B: int) -> int:
  """SMEM one call prefetches: packed slots ``G qc U``, counts ``G qc``, ``kv_len`` ``B`` and the piece's
  (batch row, first query block), 4 bytes each."""
  return 4 * (G * qc * U + G * qc + B + 2)


def query_blocks_per_call(nb: int, G: int, U: int, B: int, smem_budget: int) -> int:
  """The largest divisor ``qc`` of ``nb`` whose piece fits ``smem_budget`` bytes; ``ValueError`` if none does."""
  for qc in sorted((c for c in range(1, nb + 1) if nb % c == 0), reverse=True):
    if smem_bytes(G, qc, U, B) <= smem_budget:
      return qc
  raise ValueError(
    f"block-sparse TPU kernel: one query block's index lists need {smem_bytes(G, 1, U, B)} bytes of SMEM "
    f"({G} head groups x {U} slots), over the budget of {smem_budget}; use larger blocks, a smaller max_blocks, "
    "or raise smem_budget (1 MiB per core on v4 / v5e / v6e)"
  )


def _kernel(pk_ref, cnt_ref, kvlen_ref, pos_ref, q_ref, k_ref, v_ref, o_in_ref, o_ref, m_sc, l_sc, acc_sc, **kw):
  del o_in_ref  # aliased to o_ref: the blocks this call does not visit keep what earlier calls wrote
  bs, U, qc, rg, scale, window = kw["bs"], kw["U"], kw["qc"], kw["rg"], kw["scale"], kw["window"]
  g, i, j = pl.program_id(0), pl.program_id(1), pl.program_id(2)
  row = g * qc + i

  @pl.when(j == 0)
  def _init():
    m_sc[...] = jnp.full(m_sc.shape, _NEG, jnp.float32)
    l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
    acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

  @pl.when(j < cnt_ref[row])
  def _step():
    slot = pk_ref[row * U + j]
    kblk = jax.lax.shift_right_arithmetic(slot, 16)
    k = k_ref[...]
    v = v_ref[...]
    q_tok = (pos_ref[1] + i) * bs + jax.lax.broadcasted_iota(jnp.int32, (bs, bs), 0)
    k_tok = kblk * bs + jax.lax.broadcasted_iota(jnp.int32, (bs, bs), 1)
    ok = visible(k_tok, q_tok, window) & (k_tok < kvlen_ref[pos_ref[0]])
    for h in range(rg):  # static: each member head scores the resident K tile if its own list keeps it

      @pl.when(jax.lax.shift_right_logical(slot, h) & 1 == 1)
      def _head(h=h):
        s = jax.lax.dot_general(q_ref[h], k, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32) * scale
        s = jnp.where(ok, s, _NEG)
        m_prev = m_sc[h]  # [bs, 128] lanes replicated
        m_new = jnp.maximum(m_prev[:, :1], jnp.max(s, axis=1, keepdims=True))
        p = jnp.where(ok, jnp.exp(s - m_new), 0.0)
        corr = jnp.exp(m_prev[:, :1] - m_new)
        l_sc[h] = jnp.broadcast_to(l_sc[h][:, :1] * corr + p.sum(axis=1, keepdims=True), (bs, 128))
        m_sc[h] = jnp.broadcast_to(m_new, (bs, 128))
        pv = jax.lax.dot_general(p.astype(v.dtype), v, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
        acc_sc[h] = acc_sc[h] * corr + pv

  @pl.when(j == U - 1)
  def _done():
    for h in range(rg):
      l = l_sc[h][:, :1]
      o_ref[h] = (acc_sc[h] / jnp.where(l > 0, l, 1.0)).astype(o_ref.dtype)


@functools.partial(jax.jit, static_argnames=("block_size", "scale", "interpret", "smem_budget", "window"))
def block_sparse_attention_tpu(
  q,
  k,
  v,
  block_idx,
  block_cnt,
  kv_len,
  *,
  block_size: int,
  scale: float | None = None,
  interpret=False,
  smem_budget: int = SMEM_BUDGET_BYTES,
  window: int | None = None,
):
  """Pallas TPU block-sparse attention. Shapes as ``block_sparse_attention_xla`` (``Lp`` a multiple of
  ``block_size``; on real TPUs ``block_size`` a multiple of 8 (128 recommended) and ``d`` = the full head
  dim). ``interpret`` may be ``True`` or ``pltpu.InterpretParams()`` for CPU checks. ``smem_budget``: bytes of
  index lists one call may scalar-prefetch (module docstring); the pieces are sized to it. ``window``: sliding
  window intersected with the block mask."""
  B, Hq, Lp, d = q.shape
  Hkv = k.shape[1]
  bs = block_size
  nb = Lp // bs
  rg = group_size(Hq // Hkv)
  G = Hq // rg
  sub = G // Hkv  # groups per kv head (> 1 only when the GQA ratio exceeds 16)
  scale = d**-0.5 if scale is None else scale
  packed, n = pack_group_lists(block_idx.astype(jnp.int32), block_cnt.astype(jnp.int32), rg, nb)
  U = packed.shape[-1]
  qc = query_blocks_per_call(nb, G, U, B, smem_budget)
  nc = nb // qc
  # Pieces ordered (batch row, query-block run); each holds its groups' lists flattened (SMEM pads 2-D arrays).
  pk = packed.reshape(B, G, nc, qc, U).transpose(0, 2, 1, 3, 4).reshape(B * nc, G * qc * U)
  cn = n.reshape(B, G, nc, qc).transpose(0, 2, 1, 3).reshape(B * nc, G * qc)
  pos = jnp.stack(jnp.meshgrid(jnp.arange(B), jnp.arange(nc) * qc, indexing="ij"), -1).reshape(B * nc, 2)
  kernel = functools.partial(_kernel, bs=bs, U=U, qc=qc, rg=rg, scale=scale, window=window)

  def q_map(g, i, j, pk, cnt, kvl, pos):
    return (pos[0], g, 0, pos[1] + i, 0)

  def kv_map(g, i, j, pk, cnt, kvl, pos):
    blk = jax.lax.shift_right_arithmetic(pk[(g * qc + i) * U + j], 16)
    return (pos[0], jax.lax.div(g, sub), blk, 0)  # lax.div: no sign fix-ups

  q_spec = pl.BlockSpec((None, None, rg, bs, d), q_map)
  call = pl.pallas_call(
    kernel,
    grid_spec=pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=4,
      grid=(G, qc, U),
      in_specs=[
        q_spec,
        pl.BlockSpec((None, None, bs, d), kv_map),
        pl.BlockSpec((None, None, bs, d), kv_map),
        pl.BlockSpec(memory_space=pl.ANY),
      ],
      out_specs=q_spec,
      scratch_shapes=[
        pltpu.VMEM((rg, bs, 128), jnp.float32),
        pltpu.VMEM((rg, bs, 128), jnp.float32),
        pltpu.VMEM((rg, bs, d), jnp.float32),
      ],
    ),
    out_shape=jax.ShapeDtypeStruct((B, G, rg, Lp, d), q.dtype),
    input_output_aliases={7: 0},
    compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary")),
    interpret=interpret,
  )
  q5 = q.reshape(B, G, rg, Lp, d)
  kvl = kv_len.astype(jnp.int32)

  def piece(o, xs):
    return call(xs[0], xs[1], kvl, xs[2], q5, k, v, o), None

  out, _ = jax.lax.scan(piece, jnp.zeros_like(q5), (pk, cn, pos.astype(jnp.int32)))
  return out.reshape(B, Hq, Lp, d)
