"""TC-Bench's matrix, ranks, basis, objective, local search and restarts against brute force and the reference."""

import itertools
import random
from fractions import Fraction

import numpy as np
import pytest
import scipy.linalg

from jaxeff import tcbench as T
from jaxeff.tcbench.matrix import synthetic_matrix


def exact_rank(M):
  A = [[Fraction(int(x)) for x in row] for row in M]
  r, cols = 0, len(A[0])
  for c in range(cols):
    piv = next((i for i in range(r, len(A)) if A[i][c] != 0), None)
    if piv is None:
      continue
    A[r], A[piv] = A[piv], A[r]
    for i in range(len(A)):
      if i != r and A[i][c] != 0:
        f = A[i][c] / A[r][c]
        A[i] = [a - f * b for a, b in zip(A[i], A[r])]
    r += 1
  return r


def gf2_span_rank(M):
  span = {0}
  for row in M:
    v = int("".join(map(str, row)), 2)
    span |= {x ^ v for x in span}
  return len(span).bit_length() - 1


def test_matrix_and_ranks_vs_exact_oracles():
  M = T.failure_matrix(["AWW", "WAW", "WWA"])
  assert M.tolist() == [[0, 1, 1], [1, 0, 1], [1, 1, 0]] and M.dtype == np.int8
  assert (T.real_rank(M), T.gf2_rank(M)) == (3, 2)
  with pytest.raises(ValueError, match="other than A/W"):
    T.failure_matrix(["AWT"])
  with pytest.raises(ValueError, match="expected 3"):
    T.failure_matrix(["AWW", "AW"])
  rng = np.random.default_rng(0)
  for _ in range(40):
    M = (rng.random((int(rng.integers(2, 9)), int(rng.integers(2, 7)))) < 0.4).astype(int)
    if not M.any():
      continue
    assert T.real_rank(M) == exact_rank(M)
    assert T.gf2_rank(M) == gf2_span_rank(M) <= T.real_rank(M)
    b = T.qr_basis(M)
    assert b == [int(i) for i in scipy.linalg.qr(M.T.astype(float), pivoting=True)[2][: len(b)]]
    assert exact_rank(M[b]) == len(b) == T.real_rank(M)


def test_objective_hand_values_and_identities():
  M = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [0, 0, 0], [0, 0, 0]])
  assert T.jaccard_objective(M, [0, 1, 2]) == pytest.approx(6 * (1 / 3))
  assert T.jaccard_objective(M, [3, 4]) == 2.0  # empty union counts 1, both orders
  assert T.jaccard_objective(M, [0, 3]) == 0.0
  rng = np.random.default_rng(1)
  A = (rng.random((7, 9)) < 0.5).astype(int)
  unordered = sum(
    (a & b).sum() / (a | b).sum() if (a | b).sum() else 1.0 for a, b in itertools.combinations(list(A), 2)
  )
  assert T.jaccard_objective(A, range(7)) == pytest.approx(2 * unordered, abs=1e-12)
  assert T.jaccard_objective(A, [6, 2, 0, 5, 1, 3, 4]) == pytest.approx(T.jaccard_objective(A, range(7)), abs=1e-12)
  total, rs = T.jaccard_objective(A, range(7), row_sums=True)
  assert rs.sum() == pytest.approx(total)


def test_local_search_fast_equals_reference_and_brute_force():
  for seed in range(25):
    M = synthetic_matrix(int(np.random.default_rng(seed).integers(6, 11)), 6, seed=seed, n_bugs=5)
    r = T.real_rank(M)
    if r == len(M):
      continue
    b0 = T.qr_basis(M)
    ref = T.local_search(M, b0, engine="reference")
    fast = T.local_search(M, b0, engine="fast")
    assert fast[2] == ref[2] and fast[1] == pytest.approx(ref[1], abs=1e-12)  # the same swaps, in order
    vals = [T.jaccard_objective(M, b) for b in ref[2]]
    assert all(b < a for a, b in zip(vals, vals[1:]))  # strictly decreasing
    assert all(T.real_rank(M[b]) == r for b in ref[2])
    best = min(
      T.jaccard_objective(M, s) for s in itertools.combinations(range(len(M)), r) if T.real_rank(M[list(s)]) == r
    )
    assert ref[1] >= best - 1e-12
  M = synthetic_matrix(30, 12, seed=3)
  full = T.local_search(M, T.qr_basis(M))
  one = T.local_search(M, T.qr_basis(M), max_iters=1)  # stops after the first improving swap of the full run
  assert len(full[2]) > 2 and one[2] == full[2][:2]
  assert one[1] == pytest.approx(T.jaccard_objective(M, one[2][-1]), abs=1e-12)
  with pytest.raises(ValueError, match="linearly independent"):
    T.local_search(np.array([[1, 0], [1, 0], [0, 1]]), [0, 1])


def test_fast_engine_matches_reference_on_larger_random_instances():
  for seed in range(12):
    M = synthetic_matrix(40, 14, seed=100 + seed)
    b0 = T.qr_basis(M)
    ref = T.local_search(M, b0, engine="reference")
    fast = T.local_search(M, b0, engine="fast")
    assert sorted(fast[0]) == sorted(ref[0]) and fast[1] == pytest.approx(ref[1], abs=1e-12)


def test_restarts_start_from_raw_qr_accept_strictly_and_replay_random_shuffle():
  M = synthetic_matrix(30, 10, seed=7)
  sel = T.wrongselect(M, restarts=0, search_initial=False, details=True)
  assert sel.rows == T.qr_basis(M) and sel.objective == pytest.approx(T.jaccard_objective(M, T.qr_basis(M)))
  sel = T.wrongselect(M, restarts=6, seed=3, details=True)
  objs = [h["objective"] for h in sel.history]
  assert all(b < a for a, b in zip(objs, objs[1:]))
  assert sel.objective == objs[-1] == pytest.approx(T.jaccard_objective(M, sel.rows))
  # the restart permutations are those of random.seed(3) + random.shuffle on the row list
  random.seed(3)
  perms = []
  for _ in range(6):
    p = list(range(len(M)))
    random.shuffle(p)
    perms.append(p)
  for h in sel.history:
    if h["source"] == "restart":
      Ms = M[perms[h["turn"] - 1]]
      b, v, _ = T.local_search(Ms, T.qr_basis(Ms))
      assert [perms[h["turn"] - 1][i] for i in b] == h["rows"]
  eye = np.eye(4, dtype=int)
  assert T.wrongselect(eye, restarts=5)[0] == T.qr_basis(eye)  # rank == n: nothing to choose
