"""A readable float64 NumPy version of ProxyAttn's steps 1-5, written from the spec (the test oracle).

Loops where the spec loops; no chunking, no sorting tricks. Ties: lower block index first.
"""

from __future__ import annotations

import math

import numpy as np


def softmax(x):
  x = x - x.max()
  e = np.exp(x)
  return e / e.sum()


def proxy_scores(q, k, bs, s, g, lengths, tile_reduce="max2d"):
  """A_g [B, g, nb, nb] from the strided causal softmax of the mean-pooled proxy heads."""
  B, Hq, L, d = q.shape
  Hkv = k.shape[1]
  nb = math.ceil(L / bs)
  out = np.zeros((B, g, nb, nb))
  for b in range(B):
    Lr = lengths[b]
    for j in range(g):
      qp = q[b, j * Hq // g : (j + 1) * Hq // g].mean(0)
      kp = k[b, j * Hkv // g : (j + 1) * Hkv // g].mean(0)
      sums = np.zeros((nb, nb))
      rows = np.zeros(nb)
      for a in range(0, L, s):  # strided query positions
        if a >= Lr:
          continue
        keys = [p for p in range(0, a + 1, s) if p < Lr]
        P = softmax(np.array([qp[a] @ kp[p] for p in keys]) / math.sqrt(d))
        m = a // bs
        rowmax = np.zeros(nb)
        for p, v in zip(keys, P):
          rowmax[p // bs] = max(rowmax[p // bs], v)
        if tile_reduce == "max2d":
          out[b, j, m] = np.maximum(out[b, j, m], rowmax)
        else:
          sums[m] += rowmax
          rows[m] += 1
      if tile_reduce != "max2d":
        out[b, j] = sums / np.maximum(rows, 1)[:, None]
  return out


def last_block_mass(q, k, bs, lengths):
  """a_i [B, Hq, nb]: key-block mass of the last bs real queries of each head."""
  B, Hq, L, d = q.shape
  r = Hq // k.shape[1]
  nb = math.ceil(L / bs)
  out = np.zeros((B, Hq, nb))
  for b in range(B):
    Lr = lengths[b]
    rows = range(max(Lr - bs, 0), Lr)
    for h in range(Hq):
      for t in rows:
        P = softmax(np.array([q[b, h, t] @ k[b, h // r, p] for p in range(t + 1)]) / math.sqrt(d))
        for p, v in enumerate(P):
          out[b, h, p // bs] += v / len(rows)
  return out


def budget_count(mass, gamma, count_mode="count"):
  """c = min{k >= 1: sum_{j<k} a_sorted[j] >= gamma} (literal: c - 1, at least 1); also the smallest
  |cumsum - gamma| (a margin for exact comparisons)."""
  a = np.sort(mass)[::-1]
  a = a / a.sum()
  csum = np.cumsum(a)
  nonzero = int((mass > 0).sum())
  c = next((kk for kk in range(1, len(a) + 1) if csum[kk - 1] >= gamma), len(a))
  c = min(c, max(nonzero, 1))
  if count_mode == "literal":
    c = max(c - 1, 1)
  return c, float(np.min(np.abs(csum - gamma)))


def estimate(
  q,
  k,
  *,
  bs,
  s,
  g,
  gamma,
  mb,
  force_sink=False,
  force_diag=False,
  count_mode="count",
  row_mode="absolute",
  tile_reduce="max2d",
  lengths=None,
):
  """Returns dict(scores, c, K, mask [B,Hq,nb,nb] bool, cnt, csum_margin, rank_margin [B,Hq,nb])."""
  q = np.asarray(q, np.float64)
  k = np.asarray(k, np.float64)
  B, Hq, L, d = q.shape
  lengths = [L] * B if lengths is None else [int(x) for x in lengths]
  nb = math.ceil(L / bs)
  A = proxy_scores(q, k, bs, s, g, lengths, tile_reduce)
  mass = last_block_mass(q, k, bs, lengths)
  c = np.zeros((B, Hq), int)
  K = np.zeros((B, Hq), int)
  csum_margin = np.zeros((B, Hq))
  mask = np.zeros((B, Hq, nb, nb), bool)
  cnt = np.zeros((B, Hq, nb), int)
  rank_margin = np.full((B, Hq, nb), np.inf)
  floor = math.ceil(mb / bs)
  for b in range(B):
    nvalid = math.ceil(lengths[b] / bs)
    for h in range(Hq):
      c[b, h], csum_margin[b, h] = budget_count(mass[b, h], gamma, count_mode)
      K[b, h] = max(c[b, h], floor)
      grp = h // (Hq // g)
      for m in range(nb):
        cands = [n for n in range(nb) if n <= m and n < nvalid]
        forced = [n for n in cands if (force_sink and n == 0) or (force_diag and n == m)]
        rest = sorted((n for n in cands if n not in forced), key=lambda n: (-A[b, grp, m, n], n))
        if row_mode == "absolute":
          budget = K[b, h]
        else:
          budget = max(-(-int(c[b, h]) * (m + 1) // nvalid), max(floor, 1))  # exact ceil(c/nb * (m+1))
        keep = forced + rest[:budget]
        keep = keep[: min(budget + len(forced), len(cands))]
        mask[b, h, m, keep] = True
        cnt[b, h, m] = len(keep)
        if 0 < budget < len(rest):  # gap between the last kept and the first dropped score
          x, y = A[b, grp, m, rest[budget - 1]], A[b, grp, m, rest[budget]]
          rank_margin[b, h, m] = (x - y) / max(abs(x), 1e-30)
  return dict(scores=A, mass=mass, c=c, K=K, mask=mask, cnt=cnt, csum_margin=csum_margin, rank_margin=rank_margin)
