"""XAttention, FlexPrefill and mean-pooled top-K on the shared mask/kernel path: plain oracles and identities."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.attention import peers
from jaxeff.attention.dense import reference_attention


def _qk(seed, B=1, Hq=4, Hkv=2, L=256, d=16):
  rng = np.random.default_rng(seed)
  base = rng.normal(size=(B, 1, L, d))
  q = 2.0 * (0.6 * base + rng.normal(size=(B, Hq, L, d)))
  k = 0.6 * base + rng.normal(size=(B, Hkv, L, d))
  return q.astype(np.float32), k.astype(np.float32)


def test_xattention_scores_match_antidiagonal_loops():
  """score[m, n] = sum over the tile of softmax_j'( sum_t q[jS+S-1-t] . k[j'S+t] / (sqrt(d) S) ), causal j' <= j."""
  q, k = _qk(0, Hq=2, Hkv=1, L=64, d=8)
  S, bs = 4, 16
  got = np.asarray(
    peers.xattention_block_scores(
      jnp.asarray(q), jnp.asarray(k), jnp.array([64]), block_size=bs, stride=S, scale=1 / math.sqrt(8)
    )
  )
  n = 64 // S
  want = np.zeros((1, 2, 4, 4))
  for h in range(2):
    logits = np.full((n, n), -np.inf)
    for j in range(n):
      for jp in range(j + 1):
        logits[j, jp] = sum(q[0, h, j * S + S - 1 - t] @ k[0, 0, jp * S + t] for t in range(S)) / (math.sqrt(8) * S)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want[0, h] = p.reshape(4, 4, 4, 4).sum((1, 3))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_xattention_scores_over_several_chunks_of_128_rows(monkeypatch):
  """Chunks hold at least 128 strided query rows (the matmul is not skinny): with the memory budget pinned to one
  block a chunk, 48 blocks of 4 strided rows run as two chunks of 32 (the second padded); the scores still match
  the antidiagonal formula computed directly."""
  from jaxeff.attention import block_sparse

  pinned = functools.partial(block_sparse._chunk_blocks, budget=1)  # the budget alone: one block a chunk
  assert pinned(48, 4, 192, 2) == 1 and pinned(48, 4, 192, 2, min_rows=128) == 32
  monkeypatch.setattr(peers, "_chunk_blocks", pinned)
  q, k = _qk(2, Hq=2, Hkv=1, L=768, d=8)
  S, bs, n, nb = 4, 16, 192, 48
  got = np.asarray(
    peers.xattention_block_scores(
      jnp.asarray(q), jnp.asarray(k), jnp.array([700]), block_size=bs, stride=S, scale=1 / math.sqrt(8)
    )
  )
  want = np.zeros((1, 2, nb, nb))
  for h in range(2):
    q64, k64 = q[0, h].astype(np.float64), k[0, 0].astype(np.float64)
    logits = sum(q64[S - 1 - t :: S] @ k64[t::S].T for t in range(S)) / (math.sqrt(8) * S)  # [n, n]
    j = np.arange(n)
    ok = (j[None, :] <= j[:, None]) & (j[None, :] * S < 700)
    logits = np.where(ok, logits, -np.inf)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[j * S >= 700] = 0.0  # rows past the length score nothing
    want[0, h] = p.reshape(nb, 4, nb, 4).sum((1, 3))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_xattention_mask_is_the_minimal_prefix_reaching_the_threshold():
  q, k = _qk(1, L=512)
  bs, thr = 32, 0.8
  m = peers.xattention_estimate(jnp.asarray(q), jnp.asarray(k), block_size=bs, stride=8, threshold=thr)
  sc = np.asarray(
    peers.xattention_block_scores(
      jnp.asarray(q), jnp.asarray(k), jnp.array([512]), block_size=bs, stride=8, scale=1 / 4
    )
  )
  mask = np.asarray(m.block_mask)
  nb = 16
  for h in range(4):
    for r in range(nb):
      row, keep = sc[0, h, r, : r + 1], mask[0, h, r, : r + 1]
      assert keep[0] and keep[r], "sink and diagonal are forced"
      assert not mask[0, h, r, r + 1 :].any()
      assert row[keep].sum() >= thr * row.sum() - 1e-6
      free = [j for j in np.flatnonzero(keep) if j not in (0, r)]
      if free:  # dropping the weakest kept block falls below the threshold
        weakest = min(free, key=lambda j: row[j])
        assert row[keep].sum() - row[weakest] < thr * row.sum() + 1e-6


@pytest.mark.parametrize(
  "backend",
  [
    peers.XAttention(block_size=32, threshold=1.0),
    peers.FlexPrefill(block_size=32, gamma=1.0),
    peers.MeanPoolTopK(block_size=32, topk=64),
    peers.RandomBlocks(block_size=32, density=1.0),
    peers.LocalBlocks(block_size=32, density=1.0),
  ],
  ids=["xattention", "flexprefill", "meanpool", "random", "local"],
)
def test_full_setting_is_dense_attention(backend):
  B, Hq, Hkv, L, d = 1, 4, 2, 224, 16
  rng = np.random.default_rng(2)
  q, k, v = (jnp.asarray(rng.normal(size=(B, L, h, d)), jnp.float32) for h in (Hq, Hkv, Hkv))
  pos = jnp.arange(L)[None]
  np.testing.assert_allclose(
    np.asarray(backend(q, k, v, pos, pos)), np.asarray(reference_attention(q, k, v, pos, pos)), atol=1e-5
  )


@pytest.mark.parametrize("density", [0.25, 0.5, 0.8])
def test_controls_keep_their_density_and_the_structure_they_name(density):
  B, Hq, L, d, bs = 1, 2, 1024, 8, 64
  nb = L // bs
  q = jnp.zeros((B, Hq, L, d))
  lengths = jnp.array([L])
  local = np.asarray(peers.LocalBlocks(block_size=bs, density=density).mask(q, q, lengths).block_mask)
  rand = np.asarray(peers.RandomBlocks(block_size=bs, density=density).mask(q, q, lengths).block_mask)
  causal = nb * (nb + 1) / 2
  for mask in (local, rand):
    assert not (np.triu(np.ones((nb, nb), bool), 1) & mask).any(), "block-causal"
    assert mask[..., 0].all() and mask[..., np.arange(nb), np.arange(nb)].all(), "sink and diagonal"
    rows = mask.sum(-1)[0, 0]
    want = [min(m + 1, max(min(m + 1, 2), math.ceil(density * (m + 1)))) for m in range(nb)]
    np.testing.assert_array_equal(rows, want)
    assert abs(mask[0, 0].sum() / causal - density) < 2 / nb + 0.05
  for m in range(nb):  # the local control keeps the sink and the most recent blocks
    rest = sorted(set(np.flatnonzero(local[0, 0, m])) - {0})
    assert rest == list(range(m + 1 - len(rest), m + 1))
  with pytest.raises(ValueError, match="density"):
    peers.RandomBlocks(density=0.0)


def test_flexprefill_picks_patterns_and_sparsifies():
  q, k = peers.structured_qk(jax.random.key(0), q_heads=8, kv_heads=2, length=1024, head_dim=32)
  m, query_aware = peers.flexprefill_estimate(q, k, block_size=64, gamma=0.9, return_pattern=True)
  mask = np.asarray(m.block_mask)
  nb = 16
  assert mask[..., 0].all() and mask[..., np.arange(nb), np.arange(nb)].all(), "first block and diagonal forced"
  assert not np.triu(np.ones((nb, nb), bool), 1)[None, None].__and__(mask).any(), "block-causal"
  density = mask.sum() / (8 * nb * (nb + 1) / 2)
  assert density < 0.9
  recall = float(peers.attention_mass_recall(q, k, m.block_mask, 64))
  assert recall > 0.8
  # A huge tau makes every head query-aware; tau = 0 makes every head vertical-slash.
  _, all_qa = peers.flexprefill_estimate(q, k, block_size=64, tau=10.0, return_pattern=True)
  _, no_qa = peers.flexprefill_estimate(q, k, block_size=64, tau=0.0, return_pattern=True)
  assert bool(all_qa.all()) and not bool(no_qa.any())
  assert query_aware.shape == (1, 8)


def test_mass_recall_is_one_for_the_causal_mask_and_additive():
  q, k = _qk(3, L=128)
  nb = 4
  full = jnp.broadcast_to(jnp.tril(jnp.ones((nb, nb), bool)), (1, 4, nb, nb))
  assert abs(float(peers.attention_mass_recall(jnp.asarray(q), jnp.asarray(k), full, 32)) - 1.0) < 1e-5
  diag = jnp.broadcast_to(jnp.eye(nb, dtype=bool), (1, 4, nb, nb))
  off = full & ~diag
  r = lambda m: float(peers.attention_mass_recall(jnp.asarray(q), jnp.asarray(k), m, 32))
  assert abs(r(diag) + r(off) - 1.0) < 1e-5


def test_sampled_mass_recall_is_the_ratio_over_the_sampled_query_blocks():
  # Oracle: the dense causal softmax in numpy, per query row, kept mass summed over the sampled blocks' rows.
  q, k = _qk(5, L=256)
  bs, nb = 32, 8
  rng = np.random.default_rng(0)
  mask = np.tril(rng.random((1, 4, nb, nb)) < 0.5) | np.eye(nb, dtype=bool)
  r = q.shape[1] // k.shape[1]
  kk = np.repeat(k, r, axis=1)
  s = np.einsum("bhqd,bhkd->bhqk", q, kk) / np.sqrt(q.shape[-1])
  s = np.where(np.tril(np.ones((256, 256), bool)), s, -np.inf)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  kept_rows = (p.reshape(1, 4, 256, nb, bs).sum(-1) * np.repeat(mask, bs, axis=2)).sum(-1)  # [1, 4, 256]
  per_block = kept_rows.reshape(1, 4, nb, bs).sum((0, 1, 3))
  fn = lambda m: float(
    peers.attention_mass_recall(jnp.asarray(q), jnp.asarray(k), jnp.asarray(mask), bs, query_blocks=m)
  )
  assert abs(fn(None) - per_block.sum() / (4 * 256)) < 1e-5
  assert abs(fn(nb) - fn(None)) < 1e-6 and abs(fn(100) - fn(None)) < 1e-6
  for m, blocks in ((1, [7]), (2, [0, 7]), (3, [0, 4, 7]), (4, [0, 2, 5, 7])):  # evenly spaced, ends included
    assert abs(fn(m) - per_block[blocks].sum() / (4 * bs * len(blocks))) < 1e-5, m
  with pytest.raises(ValueError, match="query_blocks"):
    fn(0)


def test_union_density_counts_each_groups_union_of_blocks():
  # the oracle: OR the block masks of each kv head's query heads, count kept over causal (real rows only)
  from jaxeff.attention.bench import _union_density

  key = jax.random.key(3)
  q, k = peers.structured_qk(key, batch=2, q_heads=4, kv_heads=2, length=512, head_dim=16)
  lens = jnp.array([512, 300], jnp.int32)
  mask = peers.XAttention(block_size=64, stride=8, threshold=0.6).mask(q, k, lens)
  bm = np.asarray(mask.block_mask).reshape(2, 2, 2, 8, 8).any(2)  # [B, Hkv, nb, nb]
  nvalid = -(-np.asarray(lens) // 64)
  kept = sum(bm[b, :, : nvalid[b], : nvalid[b]].sum() for b in range(2))
  causal = sum(2 * (n * (n + 1) // 2) for n in nvalid)
  got = _union_density(mask, lens, kv_heads=2)
  assert got == pytest.approx(kept / causal)
  assert got >= float(mask.density(lens)) - 1e-6  # a union keeps at least what its heads keep on average
