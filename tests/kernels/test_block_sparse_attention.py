"""Block-sparse attention kernels (XLA path; Pallas TPU and GPU kernels in interpret mode) vs the f32 reference,
forward and backward; TPU and GPU lowering checks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels_pallas.block_sparse_attention import (
  block_sparse_attention,
  block_sparse_attention_reference,
  indices_to_mask,
  mask_to_indices,
)
from tests.kernels.aot import compile_for_tpu, has_libtpu
from tests.kernels.modes import KernelModes
from tests.tolerances import tolerances

IMPLS = ["xla", "xla_per_head", "pallas_tpu", "pallas_gpu"]


def _inputs(seed, B, Hq, Hkv, L, d, bs, density, dtype=jnp.float32, kind="random"):
  ks = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(ks[0], (B, Hq, L, d), dtype)
  k = jax.random.normal(ks[1], (B, Hkv, L, d), dtype)
  v = jax.random.normal(ks[2], (B, Hkv, L, d), dtype)
  nb = -(-L // bs)
  causal = jnp.tril(jnp.ones((nb, nb), bool))
  if kind == "random":
    mask = jax.random.bernoulli(ks[3], density, (B, Hq, nb, nb)) & causal
  elif kind == "dense":
    mask = jnp.broadcast_to(causal, (B, Hq, nb, nb))
  elif kind == "one_block":  # every row keeps exactly one block, not always the diagonal
    pick = jax.random.randint(ks[3], (B, Hq, nb), 0, nb) % (jnp.arange(nb) + 1)
    mask = jax.nn.one_hot(pick, nb, dtype=bool)
  return q, k, v, mask


CASES = [
  # (B, Hq, Hkv, L, d, bs, kind)
  (2, 4, 4, 256, 64, 64, "random"),  # r = 1
  (2, 8, 2, 300, 64, 64, "random"),  # r = 4, ragged length
  (2, 7, 1, 256, 128, 128, "random"),  # r = 7, bs 128, head_dim 128
  (2, 4, 2, 256, 64, 64, "dense"),
  (2, 4, 2, 200, 64, 64, "one_block"),
]


class TestBlockSparseInterpret(KernelModes):
  """One body for every implementation: Pallas kernels interpreted here (CPU CI); the subclasses below compile
  them on a TPU / GPU (``tpu_only`` / ``gpu_only``), as jax's own Pallas tests do."""

  @pytest.mark.parametrize("impl", IMPLS)
  @pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
  def test_forward_matches_reference_f32(self, impl, case):
    B, Hq, Hkv, L, d, bs, kind = case
    q, k, v, mask = _inputs(CASES.index(case), B, Hq, Hkv, L, d, bs, 0.4, kind=kind)  # same seed in every process
    idx, cnt = mask_to_indices(mask)
    kv_len = jnp.array([L, L - 37])
    want = block_sparse_attention_reference(q, k, v, mask, block_size=bs, kv_len=kv_len)
    got = block_sparse_attention(
      q, k, v, idx, cnt, block_size=bs, kv_len=kv_len, implementation=impl, interpret=self.interpret(impl)
    )
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), **tolerances(jnp.float32))

  @pytest.mark.parametrize("impl", IMPLS)
  def test_forward_bf16(self, impl):
    q, k, v, mask = _inputs(3, 2, 4, 2, 256, 64, 64, 0.5, dtype=jnp.bfloat16)
    idx, cnt = mask_to_indices(mask)
    want = block_sparse_attention_reference(q, k, v, mask, block_size=64)
    got = block_sparse_attention(q, k, v, idx, cnt, block_size=64, implementation=impl, interpret=self.interpret(impl))
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), **tolerances(jnp.bfloat16))

  @pytest.mark.parametrize("impl", IMPLS)
  def test_padded_slots_and_repeated_ids_do_not_count(self, impl):
    """Slots past the count hold junk ids (here block 0 and the diagonal again): they must be ignored."""
    q, k, v, mask = _inputs(4, 1, 2, 1, 256, 32, 64, 0.5)
    idx, cnt = mask_to_indices(mask)
    nb = 4
    junk = jnp.where(jnp.arange(nb) < cnt[..., None], idx, jnp.arange(nb) % 2)
    want = block_sparse_attention_reference(q, k, v, mask, block_size=64)
    got = block_sparse_attention(
      q, k, v, junk, cnt, block_size=64, implementation=impl, interpret=self.interpret(impl)
    )
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), **tolerances(jnp.float32))

  @pytest.mark.parametrize("impl", ["xla", "pallas_tpu"])
  def test_backward_matches_reference(self, impl):
    q, k, v, mask = _inputs(5, 2, 4, 2, 192, 32, 64, 0.6)
    idx, cnt = mask_to_indices(mask)
    w = jax.random.normal(jax.random.key(9), q.shape)
    f = lambda q_, k_, v_: (
      block_sparse_attention(q_, k_, v_, idx, cnt, block_size=64, implementation=impl, interpret=self.interpret(impl))
      * w
    ).sum()
    fr = lambda q_, k_, v_: (block_sparse_attention_reference(q_, k_, v_, mask, block_size=64) * w).sum()
    got = jax.grad(f, argnums=(0, 1, 2))(q, k, v)
    want = jax.grad(fr, argnums=(0, 1, 2))(q, k, v)
    for g, r in zip(got, want):
      np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-4)

  @pytest.mark.parametrize("impl", IMPLS)
  @pytest.mark.parametrize("window", [1, 50, 64, 130])
  def test_sliding_window_intersects_the_block_mask(self, impl, window):
    """A sliding window (ragged: 50, 130; aligned: 64; a single token: 1) and the block mask intersect; blocks
    wholly outside the window are dropped before the kernel, the edge block is masked per token."""
    q, k, v, mask = _inputs(10, 2, 4, 2, 300, 32, 64, 0.6)
    idx, cnt = mask_to_indices(mask)
    kv_len = jnp.array([300, 260])
    want = block_sparse_attention_reference(q, k, v, mask, block_size=64, kv_len=kv_len, window=window)
    got = block_sparse_attention(
      q,
      k,
      v,
      idx,
      cnt,
      block_size=64,
      kv_len=kv_len,
      implementation=impl,
      interpret=self.interpret(impl),
      window=window,
    )
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), **tolerances(jnp.float32))


@pytest.mark.tpu_only
class TestBlockSparseTPU(TestBlockSparseInterpret):
  COMPILED = ("xla", "xla_per_head", "pallas_tpu")


@pytest.mark.gpu_only
class TestBlockSparseGPU(TestBlockSparseInterpret):
  COMPILED = ("xla", "xla_per_head", "pallas_gpu")


def test_tpu_kernel_in_tpu_simulator():
  """The scalar-prefetch kernel under the TPU interpreter (pltpu.InterpretParams: DMA/semaphore semantics)."""
  from jax.experimental.pallas import tpu as pltpu

  q, k, v, mask = _inputs(6, 1, 2, 1, 256, 128, 128, 0.7)
  idx, cnt = mask_to_indices(mask)
  want = block_sparse_attention_reference(q, k, v, mask, block_size=128)
  got = block_sparse_attention(
    q, k, v, idx, cnt, block_size=128, implementation="pallas_tpu", interpret=pltpu.InterpretParams()
  )
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), **tolerances(jnp.float32))


def test_mask_index_round_trip_and_empty_rows():
  mask = jnp.array([[[[True, False, False], [False, False, False], [True, False, True]]]])
  idx, cnt = mask_to_indices(mask)
  np.testing.assert_array_equal(np.asarray(cnt), [[[1, 0, 2]]])
  np.testing.assert_array_equal(np.asarray(indices_to_mask(idx, cnt, 3)), np.asarray(mask))
  q = k = v = jnp.ones((1, 1, 48, 8))
  out = block_sparse_attention(q, k, v, idx, cnt, block_size=16, implementation="xla")
  assert bool((out[0, 0, 16:32] == 0).all()), "a query with no visible key returns zeros"


def _bsa_by_ids(ids, q, k, v, *, cnt, bs, impl, window):
  return block_sparse_attention(q, k, v, ids, cnt, block_size=bs, implementation=impl, window=window)


@pytest.mark.parametrize("impl", ["xla", "xla_per_head"])
def test_index_lists_are_int16_where_they_fit_and_their_dtype_changes_nothing(impl):
  """Compact lists (issue 24): ids are int16 up to 32,767 blocks; int16 and int32 lists give the same output and
  gradients (the kernels widen a tile's ids before token arithmetic), with and without a window."""
  from jaxeff.attention.block_sparse import topk_mask_from_scores
  from kernels_pallas.block_sparse_attention import index_dtype

  assert index_dtype(32767) == jnp.int16 and index_dtype(32768) == jnp.int32
  B, Hq, Hkv, L, d, bs = 1, 4, 2, 256, 16, 32
  nb = L // bs
  kq, kk, kv, km = jax.random.split(jax.random.key(3), 4)
  q = jax.random.normal(kq, (B, Hq, L, d))
  k, v = jax.random.normal(kk, (B, Hkv, L, d)), jax.random.normal(kv, (B, Hkv, L, d))
  mask = jax.random.bernoulli(km, 0.4, (B, Hq, nb, nb)) | jnp.eye(nb, dtype=bool)
  idx, cnt = mask_to_indices(mask)
  assert idx.dtype == jnp.int16 and cnt.dtype == jnp.int32
  sel = topk_mask_from_scores(
    jax.random.normal(km, (B, 1, nb, nb)),
    jnp.full((B, Hq, nb), 3),
    jnp.array([L]),
    block_size=bs,
    head_group=jnp.zeros(Hq, jnp.int32),
  )
  assert sel.block_idx.dtype == jnp.int16
  for window in (None, 70):
    run = functools.partial(_bsa_by_ids, cnt=cnt, bs=bs, impl=impl, window=window)
    loss = lambda q, k, v, ids, run=run: (run(ids, q, k, v) ** 2).sum()
    o16, o32 = run(idx, q, k, v), run(idx.astype(jnp.int32), q, k, v)
    np.testing.assert_array_equal(np.asarray(o16), np.asarray(o32))
    g16 = jax.grad(loss, argnums=(0, 1, 2))(q, k, v, idx)
    g32 = jax.grad(loss, argnums=(0, 1, 2))(q, k, v, idx.astype(jnp.int32))
    for a, b in zip(g16, g32):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match="integer block ids"):
    block_sparse_attention(q, k, v, idx.astype(jnp.float32), cnt, block_size=bs, implementation=impl)


def test_xla_kernels_widen_int16_ids_past_int16_token_positions():
  """The API passes int16 ids to the kernels, so the int16 / int32 comparison above runs the same program twice.
  Here the XLA kernels themselves get int16 and int32 lists with token positions (id x block) above 32,767, where
  int16 arithmetic would wrap: forward (per-head and grouped) and backward must agree exactly."""
  from kernels_pallas.block_sparse_attention.xla import (
    block_sparse_attention_xla,
    block_sparse_attention_xla_bwd,
    block_sparse_attention_xla_grouped,
  )

  B, Hq, Hkv, d, bs, nb = 1, 2, 1, 4, 512, 80  # 40,960 tokens: ids up to 79, 79 x 512 > 32,767
  L = nb * bs
  kq, kk, kv, kg = jax.random.split(jax.random.key(5), 4)
  q, do = jax.random.normal(kq, (B, Hq, L, d)), jax.random.normal(kg, (B, Hq, L, d))
  k, v = jax.random.normal(kk, (B, Hkv, L, d)), jax.random.normal(kv, (B, Hkv, L, d))
  i = jnp.arange(nb)
  # each query block keeps its diagonal block and the block half-way back (heads differ by one block)
  idx = jnp.stack([jnp.stack([i, jnp.maximum(i // 2 - h, 0)], -1) for h in range(Hq)])[None]
  cnt = jnp.where(i > 2 * Hq, 2, 1)[None, None].repeat(Hq, 1).astype(jnp.int32)
  kv_len = jnp.array([L], jnp.int32)
  assert int(idx.max()) * bs > jnp.iinfo(jnp.int16).max
  for fn in (
    functools.partial(block_sparse_attention_xla, q, k, v, block_size=bs),
    functools.partial(block_sparse_attention_xla_grouped, q, k, v, block_size=bs),
    functools.partial(block_sparse_attention_xla_bwd, q, k, v, do, block_size=bs),
  ):
    out16 = fn(idx.astype(jnp.int16), cnt, kv_len)
    out32 = fn(idx.astype(jnp.int32), cnt, kv_len)
    for a, b in zip(jax.tree.leaves(out16), jax.tree.leaves(out32)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_shapes_are_rejected():
  q = jnp.zeros((1, 4, 128, 16))
  k = jnp.zeros((1, 2, 128, 16))
  idx = jnp.zeros((1, 4, 2, 2), jnp.int32)
  cnt = jnp.ones((1, 4, 2), jnp.int32)
  with pytest.raises(ValueError, match="block_idx"):
    block_sparse_attention(q, k, k, idx[:, :, :1], cnt, block_size=64)
  with pytest.raises(ValueError, match="kv heads"):
    block_sparse_attention(jnp.zeros((1, 3, 128, 16)), k, k, idx, cnt, block_size=64)
  with pytest.raises(ValueError, match="implementation"):
    block_sparse_attention(q, k, k, idx, cnt, block_size=64, implementation="cuda")


def _abstract(B, Hq, Hkv, L, d, bs, dtype):
  nb = L // bs
  return (
    jax.ShapeDtypeStruct((B, Hq, L, d), dtype),
    jax.ShapeDtypeStruct((B, Hkv, L, d), dtype),
    jax.ShapeDtypeStruct((B, Hkv, L, d), dtype),
    jax.ShapeDtypeStruct((B, Hq, nb, nb), jnp.int32),
    jax.ShapeDtypeStruct((B, Hq, nb), jnp.int32),
  )


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_tpu_kernel_lowers_for_tpu(dtype):
  """Tier 1: lowering to a Mosaic custom call (catches block-shape and unsupported-primitive errors)."""

  def f(q, k, v, idx, cnt):
    return block_sparse_attention(q, k, v, idx, cnt, block_size=128, implementation="pallas_tpu")

  lowered = jax.jit(f).trace(*_abstract(1, 8, 2, 2048, 128, 128, dtype)).lower(lowering_platforms=("tpu",))
  assert "tpu_custom_call" in lowered.as_text()


def test_gpu_kernel_lowers_for_cuda():
  """Tier 3: the Triton kernel lowers for CUDA (no GPU needed)."""

  def f(q, k, v, idx, cnt):
    return block_sparse_attention(q, k, v, idx, cnt, block_size=64, implementation="pallas_gpu")

  lowered = jax.jit(f).trace(*_abstract(1, 4, 2, 1024, 64, 64, jnp.bfloat16)).lower(lowering_platforms=("cuda",))
  assert "triton" in lowered.as_text()


def test_gpu_kernel_compiles_and_runs_where_cuda_is_available():
  """Tier 3b: where a CUDA jaxlib and a GPU are present, the Triton kernel is compiled (not only lowered) and
  run against the reference; elsewhere this test is recorded as skipped, never counted as passing."""
  if jax.default_backend() != "gpu":
    pytest.skip(f"needs a CUDA jaxlib and a GPU (backend here: {jax.default_backend()}); lowering is checked above")
  q, k, v, mask = _inputs(9, 1, 4, 2, 1024, 64, 64, 0.5, dtype=jnp.bfloat16)
  idx, cnt = mask_to_indices(mask)
  f = lambda q, k, v, i, c: block_sparse_attention(q, k, v, i, c, block_size=64, implementation="pallas_gpu")
  compiled = jax.jit(f).trace(q, k, v, idx, cnt).lower().compile()
  want = block_sparse_attention_reference(q, k, v, mask, block_size=64)
  np.testing.assert_allclose(
    np.asarray(compiled(q, k, v, idx, cnt), np.float32), np.asarray(want), **tolerances(jnp.bfloat16)
  )


@pytest.mark.tpu_aot
@pytest.mark.skipif(not has_libtpu(), reason="needs libtpu (pip install 'jax[tpu]'; .ci/run installs it)")
def test_tpu_kernel_compiles_ahead_of_time_for_v5e():
  """Tier 2: a real Mosaic compile for v5e (bf16, block 128, head_dim 128, 8K tokens)."""
  compile_for_tpu(
    """
from kernels_pallas.block_sparse_attention import block_sparse_attention
B, Hq, Hkv, L, d, bs = 1, 8, 2, 8192, 128, 128
nb = L // bs
specs = [((B, Hq, L, d), jnp.bfloat16), ((B, Hkv, L, d), jnp.bfloat16), ((B, Hkv, L, d), jnp.bfloat16),
         ((B, Hq, nb, nb), jnp.int32), ((B, Hq, nb), jnp.int32)]
f = lambda q, k, v, i, c: block_sparse_attention(q, k, v, i, c, block_size=bs, implementation="pallas_tpu")
"""
  )


def test_block_sizes_tune_the_xla_path_without_changing_the_result():
  from kernels_pallas.block_sparse_attention import BlockSizes, default_blocks_per_step

  q, k, v, mask = _inputs(6, 1, 4, 2, 512, 32, 64, 0.5)
  idx, cnt = mask_to_indices(mask)
  want = block_sparse_attention_reference(q, k, v, mask, block_size=64)
  for bs in (BlockSizes(1), BlockSizes(3)):
    got = block_sparse_attention(q, k, v, idx, cnt, block_size=64, implementation="xla", block_sizes=bs)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), **tolerances(jnp.float32))
  with pytest.raises(ValueError, match="blocks_per_step must be"):
    BlockSizes(0)
  with pytest.raises(ValueError, match="blocks_per_step must be"):
    block_sparse_attention(q, k, v, idx, cnt, block_size=64, blocks_per_step=0)
  # the default step follows the head dimension (small d, block 64: the cap of 16 blocks) and changes no value
  assert default_blocks_per_step(q.shape[-1], 64) == 16
  got = block_sparse_attention(q, k, v, idx, cnt, block_size=64, implementation="xla")
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), **tolerances(jnp.float32))


@pytest.mark.parametrize("impl", ["xla", "reference"])
def test_token_major_layout_equals_head_major(impl):
  """layout='blhd' (the model's [B, L, H, d], read in place by the XLA path) gives the head-major result
  transposed, forward and gradient, for a ragged length and GQA 3."""
  ks = jax.random.split(jax.random.key(3), 3)
  B, Hq, Hkv, L, d, bs = 2, 6, 2, 200, 16, 32
  q = jax.random.normal(ks[0], (B, Hq, L, d))
  k = jax.random.normal(ks[1], (B, Hkv, L, d))
  v = jax.random.normal(ks[2], (B, Hkv, L, d))
  nb = -(-L // bs)
  rng = np.random.default_rng(0)
  idx = np.zeros((B, Hq, nb, nb), np.int32)
  cnt = np.zeros((B, Hq, nb), np.int32)
  for b in range(B):
    for h in range(Hq):
      for i in range(nb):
        ids = rng.permutation(i + 1)[: max(1, (i + 1) // 2)]
        idx[b, h, i, : len(ids)], idx[b, h, i, len(ids) :], cnt[b, h, i] = ids, ids[-1], len(ids)
  kw = dict(block_size=bs, kv_len=jnp.array([L, L - 50]), implementation=impl)
  T = lambda x: x.transpose(0, 2, 1, 3)
  want = block_sparse_attention(q, k, v, idx, cnt, **kw)
  got = block_sparse_attention(T(q), T(k), T(v), idx, cnt, layout="blhd", **kw)
  np.testing.assert_allclose(np.asarray(T(got)), np.asarray(want), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda *a: (f(*a) ** 2).sum()
  g_want = jax.grad(loss(lambda q_, k_, v_: block_sparse_attention(q_, k_, v_, idx, cnt, **kw)), (0, 1, 2))(q, k, v)
  g_got = jax.grad(
    loss(lambda q_, k_, v_: block_sparse_attention(q_, k_, v_, idx, cnt, layout="blhd", **kw)), (0, 1, 2)
  )(T(q), T(k), T(v))
  for a, b in zip(g_got, g_want, strict=True):
    np.testing.assert_allclose(np.asarray(T(a)), np.asarray(b), rtol=1e-4, atol=1e-4)


def test_pack_group_lists_matches_set_union():
  """The TPU kernel's packed slots (id << 16 | head bits) against a plain set oracle: each group's union in
  ascending order, each id's bits naming exactly the heads whose own lists keep it, pads repeating the last id."""
  from kernels_pallas.block_sparse_attention.tpu import pack_group_lists

  rng = np.random.default_rng(1)
  B, Hq, nb, rg = 2, 6, 9, 3
  idx = np.zeros((B, Hq, nb, nb), np.int32)
  cnt = np.zeros((B, Hq, nb), np.int32)
  for b in range(B):
    for h in range(Hq):
      for i in range(nb):
        ids = rng.permutation(i + 1)[: rng.integers(0, i + 2)]  # some rows empty
        idx[b, h, i, : len(ids)], cnt[b, h, i] = ids, len(ids)
        idx[b, h, i, len(ids) :] = rng.integers(0, nb)  # junk past the count
  packed, n = map(np.asarray, pack_group_lists(jnp.asarray(idx), jnp.asarray(cnt), rg, nb))
  for b in range(B):
    for g in range(Hq // rg):
      for i in range(nb):
        heads = [set(idx[b, g * rg + m, i, : cnt[b, g * rg + m, i]].tolist()) for m in range(rg)]
        union = sorted(set().union(*heads))
        assert n[b, g, i] == len(union)
        got = [(int(p) >> 16, int(p) & 0xFFFF) for p in packed[b, g, i, : len(union)]]
        assert got == [(u, sum(1 << m for m in range(rg) if u in heads[m])) for u in union]
        assert (packed[b, g, i, len(union) :] == (packed[b, g, i, len(union) - 1] if union else 0)).all()


@pytest.mark.parametrize("Hq,Hkv", [(8, 2), (32, 1)], ids=["r4", "r32-two-groups"])
def test_tpu_kernel_in_pieces_matches_reference(Hq, Hkv):
  """Index lists delivered in pieces (an SMEM budget of one query block per call: a scan of B x nb calls writing
  one aliased output) give the reference; GQA 32 splits each kv head into two groups of 16 query heads."""
  from kernels_pallas.block_sparse_attention.tpu import block_sparse_attention_tpu, smem_bytes

  q, k, v, mask = _inputs(7, 2, Hq, Hkv, 256, 32, 64, 0.5)
  idx, cnt = mask_to_indices(mask)
  kv_len = jnp.array([256, 190])
  want = block_sparse_attention_reference(q, k, v, mask, block_size=64, kv_len=kv_len)
  G = Hq // min(Hq // Hkv, 16)
  got = block_sparse_attention_tpu(
    q, k, v, idx, cnt, kv_len, block_size=64, interpret=True, smem_budget=smem_bytes(G, 1, 4, 2)
  )
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), **tolerances(jnp.float32))


def test_tpu_kernel_smem_budget_is_checked_before_work():
  from kernels_pallas.block_sparse_attention.tpu import block_sparse_attention_tpu

  q, k, v, mask = _inputs(8, 1, 4, 2, 256, 32, 64, 0.5)
  idx, cnt = mask_to_indices(mask)
  with pytest.raises(ValueError, match="SMEM"):
    block_sparse_attention_tpu(q, k, v, idx, cnt, jnp.array([256]), block_size=64, smem_budget=32)


@pytest.mark.tpu_aot
@pytest.mark.skipif(not has_libtpu(), reason="needs libtpu (pip install 'jax[tpu]'; .ci/run installs it)")
def test_tpu_kernel_compiles_for_llama_shape_at_128k():
  """Tier 2 at the lengths ProxyAttn is for: Llama-3.1-8B's attention (32 q / 8 kv heads, d 128, bf16, block
  128, every list as long as the block count) compiled by libtpu for v5e and v6e at 32K, 64K and 128K tokens:
  the index lists (32 MiB at 128K) reach SMEM in pieces within the budget."""
  from tests.kernels.aot import run_tpu_aot

  code = """
import jax, jax.numpy as jnp
from jax.experimental import topologies
from kernels_pallas.block_sparse_attention import block_sparse_attention
for name in ["v5e:2x2", "v6e:2x2"]:
  sh = jax.sharding.SingleDeviceSharding(topologies.get_topology_desc(name, "tpu").devices[0])
  for L in [32768, 65536, 131072]:
    B, Hq, Hkv, d, bs = 1, 32, 8, 128, 128
    nb = L // bs
    specs = [((B, Hq, L, d), jnp.bfloat16), ((B, Hkv, L, d), jnp.bfloat16), ((B, Hkv, L, d), jnp.bfloat16),
             ((B, Hq, nb, nb), jnp.int32), ((B, Hq, nb), jnp.int32)]
    f = lambda q, k, v, i, c: block_sparse_attention(q, k, v, i, c, block_size=bs, implementation="pallas_tpu")
    jax.jit(f).trace(*[jax.ShapeDtypeStruct(s, t, sharding=sh) for s, t in specs]).lower().compile()
    print("COMPILED", name, L, flush=True)
"""
  run_tpu_aot(code, [f"COMPILED {t} {L}" for t in ("v5e:2x2", "v6e:2x2") for L in (32768, 65536, 131072)])


def test_sliding_window_backward_and_oracle():
  """The window's token rule is the Dense backend's (an independent oracle: t - s < window), and the flash-style
  backward honours it: gradients equal autodiff of the windowed reference."""
  from jaxeff.attention.dense import reference_attention

  q, k, v, mask = _inputs(11, 1, 4, 2, 256, 16, 64, 1.0, kind="dense")
  idx, cnt = mask_to_indices(mask)
  T = lambda x: x.transpose(0, 2, 1, 3)
  pos = jnp.arange(256)[None]
  want = T(reference_attention(T(q), T(k), T(v), pos, pos, window=70))
  got = block_sparse_attention(q, k, v, idx, cnt, block_size=64, implementation="xla", window=70)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), **tolerances(jnp.float32))
  w = jax.random.normal(jax.random.key(2), q.shape)
  f = lambda *a: (block_sparse_attention(*a, idx, cnt, block_size=64, implementation="xla", window=70) * w).sum()
  fr = lambda *a: (block_sparse_attention_reference(*a, mask, block_size=64, window=70) * w).sum()
  for g, r in zip(jax.grad(f, (0, 1, 2))(q, k, v), jax.grad(fr, (0, 1, 2))(q, k, v), strict=True):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="window"):
    block_sparse_attention(q, k, v, idx, cnt, block_size=64, window=0)


def _nested_lists(rng, B, Hq, r, nb, *, sorted_ids=False):
  """Per kv group one random ranking of each query block's causal blocks and per head a budget (some rows
  empty, some heads equal): ProxyAttn's layout, each head's list a prefix of the group's ranking, junk past
  the count."""
  idx = np.zeros((B, Hq, nb, nb), np.int32)
  cnt = np.zeros((B, Hq, nb), np.int32)
  for b in range(B):
    for g in range(Hq // r):
      for i in range(nb):
        rank = rng.permutation(i + 1)
        for h in range(g * r, (g + 1) * r):
          c = int(rng.integers(0, i + 2))
          ids = np.sort(rank[:c]) if sorted_ids else rank[:c]
          idx[b, h, i, :c], idx[b, h, i, c:], cnt[b, h, i] = ids, rng.integers(0, nb), c
  return jnp.asarray(idx), jnp.asarray(cnt)


@pytest.mark.parametrize("blocks_per_step", [1, 2, 3, 4])
@pytest.mark.parametrize("window", [None, 70])
def test_grouped_walk_over_a_shared_ranking_matches_reference(blocks_per_step, window):
  """Nested lists (one ranking per kv group, per-head budgets) take the ranked walk (each step scored only by
  the heads whose budget reaches it, wider steps for fewer heads, narrower ones for a segment's remainder):
  output and log-sum-exp equal the reference and the union walk, in both layouts, for two rows of different
  lengths."""
  from kernels_pallas.block_sparse_attention.reference import block_sparse_attention_reference as ref
  from kernels_pallas.block_sparse_attention.xla import _group_walk, _nested, block_sparse_attention_xla_grouped

  B, Hq, Hkv, L, d, bs = 2, 8, 2, 448, 16, 32
  nb = L // bs
  ks = jax.random.split(jax.random.key(11), 3)
  q, k, v = (jax.random.normal(kk, (B, h, L, d)) for kk, h in zip(ks, (Hq, Hkv, Hkv)))
  idx, cnt = _nested_lists(np.random.default_rng(blocks_per_step), B, Hq, Hq // Hkv, nb)
  own = _group_walk(idx, cnt, Hq // Hkv, nb, blocks_per_step)[0]
  nested = lambda o: bool(_nested(o, (o >= 0).sum(-1)))
  assert all(nested(own[:, g, :, i]) for g in range(Hkv) for i in range(nb))  # the ranked walk runs
  kv_len = jnp.array([L, L - 75])
  want = ref(q, k, v, indices_to_mask(idx, cnt, nb), block_size=bs, kv_len=kv_len, window=window)
  run = functools.partial(
    block_sparse_attention_xla_grouped,
    block_size=bs,
    differentiable=False,
    blocks_per_step=blocks_per_step,
    window=window,
    return_lse=True,
  )
  got, lse = run(q, k, v, idx, cnt, kv_len)
  union, lse_union = run(q, k, v, idx, cnt, kv_len, ranked=False)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), **tolerances(jnp.float32))
  np.testing.assert_allclose(np.asarray(got), np.asarray(union), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(lse), np.asarray(lse_union), rtol=1e-5, atol=1e-5)
  T = lambda x: x.transpose(0, 2, 1, 3)
  tm, _ = run(T(q), T(k), T(v), idx, cnt, kv_len, layout="blhd")
  np.testing.assert_allclose(np.asarray(T(tm)), np.asarray(got), rtol=1e-6, atol=1e-6)


def test_grouped_walk_falls_back_to_the_union_for_lists_that_are_not_nested():
  """The same heads' sets in ascending id order are not prefixes of one list (unless tiny): ``_nested`` says so
  and the union walk gives the reference; the gradient through a ranked forward equals the reference's."""
  from kernels_pallas.block_sparse_attention.reference import block_sparse_attention_reference as ref
  from kernels_pallas.block_sparse_attention.xla import _group_walk, _nested

  B, Hq, Hkv, L, d, bs = 1, 4, 1, 256, 16, 32
  nb = L // bs
  ks = jax.random.split(jax.random.key(12), 4)
  q, k, v = (jax.random.normal(kk, (B, h, L, d)) for kk, h in zip(ks, (Hq, Hkv, Hkv)))
  w = jax.random.normal(ks[3], q.shape)
  for sorted_ids in (True, False):
    idx, cnt = _nested_lists(np.random.default_rng(5), B, Hq, Hq, nb, sorted_ids=sorted_ids)
    own = _group_walk(idx, cnt, Hq, nb, 2)[0]
    nested = [bool(_nested(o, (o >= 0).sum(-1))) for o in (own[:, 0, :, i] for i in range(nb))]
    assert all(nested) if not sorted_ids else not all(nested)
    mask = indices_to_mask(idx, cnt, nb)
    got = block_sparse_attention(q, k, v, idx, cnt, block_size=bs, implementation="xla")
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref(q, k, v, mask, block_size=bs)), rtol=1e-5, atol=1e-5)
    loss = lambda q_, k_, v_, idx=idx, cnt=cnt: (
      block_sparse_attention(q_, k_, v_, idx, cnt, block_size=bs, implementation="xla") * w
    ).sum()
    loss_ref = lambda q_, k_, v_, mask=mask: (ref(q_, k_, v_, mask, block_size=bs) * w).sum()
    for a, b in zip(jax.grad(loss, (0, 1, 2))(q, k, v), jax.grad(loss_ref, (0, 1, 2))(q, k, v), strict=True):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)
