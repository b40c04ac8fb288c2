r"""TC-Bench's code-test matrix, rank, initial basis and WrongSelect (Luo et al., arXiv 2510.08720).

M is a 0/1 matrix: rows = wrong codes (distinct failure patterns), columns = tests, M[i, j] = 1 iff code i fails
test j. Its real rank r is the number of wrong codes a benchmark needs: r independent rows span every observed
pattern. WrongSelect picks r full-rank rows that are as *diverse* as possible:

* objective (minimised) over selected rows R: K = R R^T, s = row sums, U = s_i + s_k - K, J = K / U with J = 1
  where U = 0, diagonal 0; value = sum of all entries of J (ordered pairs = twice the unordered sum);
* initial basis: the first r pivots of ``scipy.linalg.qr(M.T, pivoting=True)`` (row order matters: the official
  filter sorts rows by their number of passed tests, descending);
* local search (the official ``find_balance``): each iteration scans every basis position p and, inside, every
  non-basis row j ascending; a candidate (j at position p) is skipped if the swapped rows lose rank; the first
  candidate strictly below the best value seen in the scan (started at the current value) is applied; at most
  1,000 iterations;
* restarts (the official ``better_problem``): the incumbent is the un-optimised QR basis of the original order;
  each turn shuffles the rows with ``random.Random(seed)`` (the same permutations as ``random.seed(seed)`` +
  ``random.shuffle``), takes the QR basis of the shuffled matrix, runs the local search and replaces the
  incumbent only on a strictly lower value. ``search_initial=True`` (jaxeff's default) also searches from the
  original order first; ``False`` is the official incumbent rule.

Two engines choose the same swaps. ``engine="reference"`` is the official procedure (an SVD rank test and a
fresh objective per candidate). ``engine="fast"`` (default) updates the objective incrementally from a
precomputed Gram matrix, delta(p, j) = 2 (sum_{k != p} J(j, b_k) - sum_{k != p} J(b_p, b_k)), for every candidate
in one array operation, and tests rank for all candidates at once through the coefficients C = M pinv(R)
(rank stays r iff C[j, p] != 0); the winner is then confirmed with the reference objective and SVD rank, ties
within 1e-12 resolved in scan order, so selections equal the reference's.

Example:
  >>> real_rank([[1, 1, 0], [0, 1, 1], [1, 0, 1]]), gf2_rank([[1, 1, 0], [0, 1, 1], [1, 0, 1]])
  (3, 2)
  >>> M = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 0], [0, 0, 1, 1], [0, 1, 0, 1]])
  >>> rows, value, traj = local_search(M, qr_basis(M))
  >>> sorted(rows), round(value, 4), len(traj)
  ([1, 2, 4, 5], 3.3333, 2)
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

import numpy as np


# ------------------------------------------------------------------------------------------------ matrix
def failure_matrix(status_strings: Sequence[str]) -> np.ndarray:
  """Status strings ('A' = passed, 'W' = failed, one character per test, equal lengths) -> int8 [n, d]."""
  if not status_strings:
    raise ValueError("no status strings")
  d = len(status_strings[0])
  for i, s in enumerate(status_strings):
    if len(s) != d:
      raise ValueError(f"status string {i} has {len(s)} tests, expected {d}")
    bad = set(s) - {"A", "W"}
    if bad:
      raise ValueError(f"status string {i} has characters other than A/W: {sorted(bad)}")
  return np.array([[c == "W" for c in s] for s in status_strings], np.int8)


def _check_matrix(M) -> np.ndarray:
  M = np.asarray(M)
  if M.ndim != 2 or M.size == 0:
    raise ValueError(f"M must be a non-empty 2-D 0/1 array, got shape {M.shape}")
  if not np.isin(M, (0, 1)).all():
    raise ValueError("M must hold only 0 and 1")
  return M.astype(np.int64)


def real_rank(M) -> int:
  """Rank over the reals (numpy's SVD rank, tolerance S.max() * max(n, d) * eps): the official choice."""
  return int(np.linalg.matrix_rank(_check_matrix(M).astype(np.float64)))


def gf2_rank(M) -> int:
  """Rank over GF(2) (Gaussian elimination with XOR); <= the real rank on 0/1 matrices. For reporting."""
  A = _check_matrix(M).astype(np.uint8) % 2
  n, d = A.shape
  r = 0
  for c in range(d):
    piv = np.flatnonzero(A[r:, c]) + r
    if len(piv) == 0:
      continue
    A[[r, piv[0]]] = A[[piv[0], r]]
    rows = np.flatnonzero(A[:, c])
    rows = rows[rows != r]
    A[rows] ^= A[r]
    r += 1
    if r == n:
      break
  return r


def qr_basis(M, rank: int | None = None) -> list[int]:
  """The first r pivots of ``scipy.linalg.qr(M.T, pivoting=True)``: row indices of M, in pivot order."""
  import scipy.linalg

  M = _check_matrix(M)
  r = real_rank(M) if rank is None else int(rank)
  _, _, piv = scipy.linalg.qr(M.T.astype(np.float64), pivoting=True, mode="economic")
  return [int(i) for i in piv[:r]]


def _jaccard(R: np.ndarray) -> np.ndarray:
  R = R.astype(np.int64)
  K = R @ R.T
  s = R.sum(1)
  U = s[:, None] + s[None, :] - K
  with np.errstate(divide="ignore", invalid="ignore"):
    J = np.where(U == 0, 1.0, K / np.where(U == 0, 1, U))
  np.fill_diagonal(J, 0.0)
  return J


def jaccard_objective(M, rows: Sequence[int], *, row_sums: bool = False):
  """Sum over ordered pairs of selected rows of their Jaccard similarity (empty union = 1); lower = more diverse.

  Example:
    >>> jaccard_objective(np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]]), [0, 1, 2])  # each pair: 1 / 3
    2.0
  """
  J = _jaccard(_check_matrix(M)[list(rows)])
  return (float(J.sum()), J.sum(1)) if row_sums else float(J.sum())


# ------------------------------------------------------------------------------------------------ local search
def _scan_reference(M: np.ndarray, basis: list[int], X: list[int], value: float, r: int):
  """One official scan: the first candidate strictly below the best value seen (started at ``value``)."""
  best, move = value, None
  for p in range(r):
    for j in X:
      cand = basis.copy()
      cand[p] = j
      R = M[cand]
      if np.linalg.matrix_rank(R.astype(np.float64)) < r:
        continue
      v = float(_jaccard(R).sum())
      if v < best:
        best, move = v, (p, j)
  return move, best


def _scan_fast(M, G, s, basis, X, value, r, rtol=1e-9):
  """The same choice as ``_scan_reference`` from incremental deltas and a coefficient rank test."""
  b = np.asarray(basis)
  Xa = np.asarray(X)
  if len(Xa) == 0:
    return None, value
  # J between every row and the basis rows: [n, r]
  K = G[:, b]
  U = s[:, None] + s[b][None, :] - K
  with np.errstate(divide="ignore", invalid="ignore"):
    Jnb = np.where(U == 0, 1.0, K / np.where(U == 0, 1, U))
  Jnb[b, np.arange(r)] = 0.0  # J(b_k, b_k) is the diagonal: 0
  T = Jnb[b].sum(1)  # T_p = sum_{k != p} J(b_p, b_k)
  S = Jnb[Xa].sum(1)  # S_j = sum_k J(j, b_k)
  delta = 2.0 * ((S[None, :] - Jnb[Xa].T) - T[:, None])  # [r, |X|], position-major = scan order
  # rank: rows of M are c_j^T R (M has rank r); swapping p for j keeps rank iff c_j[p] != 0
  R = M[b].astype(np.float64)
  C = M[Xa].astype(np.float64) @ np.linalg.pinv(R)  # [|X|, r]
  scale = np.maximum(np.abs(C).max(1, keepdims=True), 1.0)
  feasible = (np.abs(C) > rtol * scale).T  # [r, |X|]
  vals = np.where(feasible, value + delta, np.inf).ravel()
  order = np.lexsort((np.arange(vals.size), vals))  # by value, then scan order
  i = 0
  while i < len(order) and vals[order[i]] < value - 1e-12 * max(1.0, abs(value)):
    v0 = vals[order[i]]
    group = []
    while i < len(order) and vals[order[i]] <= v0 + 1e-12 * max(1.0, abs(v0)):
      group.append(order[i])
      i += 1
    best, move = value, None
    for idx in sorted(group):  # scan order; reference values and rank decide, as the official scan would
      p, q = divmod(int(idx), len(Xa))
      cand = basis.copy()
      cand[p] = int(Xa[q])
      Rc = M[cand]
      if np.linalg.matrix_rank(Rc.astype(np.float64)) < r:
        continue
      v = float(_jaccard(Rc).sum())
      if v < best:
        best, move = v, (p, int(Xa[q]))
    if move is not None:
      return move, best
  return None, value


def local_search(M, init_rows: Sequence[int], max_iters: int = 1000, *, engine: str = "fast"):
  """WrongSelect's local search from ``init_rows`` (a full-rank basis, in position order).

  Returns (rows, objective, trajectory): the final basis in position order, its objective, and the basis after
  initialisation and after each accepted swap. ``engine``: "fast" (incremental, same swaps) or "reference".
  """
  M = _check_matrix(M)
  basis = [int(i) for i in init_rows]
  r = len(basis)
  if len(set(basis)) != r or any(not 0 <= i < len(M) for i in basis):
    raise ValueError("init_rows must be distinct row indices of M")
  if r == 0 or np.linalg.matrix_rank(M[basis].astype(np.float64)) < r:
    raise ValueError("init_rows must be linearly independent (a basis)")
  if engine not in ("fast", "reference"):
    raise ValueError(f"engine must be 'fast' or 'reference', got {engine!r}")
  full = real_rank(M)
  if engine == "fast" and full != r:
    raise ValueError(f"the fast engine needs a basis of M's full rank {full}; got {r} rows (use engine='reference')")
  value = float(_jaccard(M[basis]).sum())
  traj = [basis.copy()]
  G = M @ M.T if engine == "fast" else None
  s = M.sum(1) if engine == "fast" else None
  for _ in range(max_iters):
    inb = set(basis)
    X = [j for j in range(len(M)) if j not in inb]
    if engine == "fast":
      move, v = _scan_fast(M, G, s, basis, X, value, r)
    else:
      move, v = _scan_reference(M, basis, X, value, r)
    if move is None:
      break
    p, j = move
    basis[p] = j
    value = v
    traj.append(basis.copy())
  return basis, value, traj


# ------------------------------------------------------------------------------------------------ restarts
@dataclasses.dataclass
class Selection:
  """WrongSelect's result: rows of M (original indices, basis position order), objective, accepted history."""

  rows: list[int]
  objective: float
  history: list[dict]


def wrongselect(
  M,
  restarts: int = 0,
  seed: int = 0,
  *,
  engine: str = "fast",
  search_initial: bool = True,
  max_iters: int = 1000,
  details: bool = False,
):
  """WrongSelect: QR basis, local search, ``restarts`` shuffled restarts with strict acceptance.

  Returns (rows, objective), or a ``Selection`` with the accepted history when ``details=True``.
  """
  M = _check_matrix(M)
  n = len(M)
  r = real_rank(M)
  base = qr_basis(M, r)
  rows, value = base, float(_jaccard(M[base]).sum())
  history = [{"turn": -1, "objective": value, "rows": list(rows), "source": "qr"}]
  if search_initial:
    b, v, _ = local_search(M, base, max_iters, engine=engine)
    if v < value:
      rows, value = b, v
      history.append({"turn": 0, "objective": v, "rows": list(b), "source": "search"})
  rng = random.Random(seed)
  for t in range(1, restarts + 1):
    if value <= 0 or r == n:
      break
    perm = list(range(n))
    rng.shuffle(perm)
    Ms = M[perm]
    b, v, _ = local_search(Ms, qr_basis(Ms, r), max_iters, engine=engine)
    if v < value:
      rows, value = [perm[i] for i in b], v
      history.append({"turn": t, "objective": v, "rows": list(rows), "source": "restart"})
  if details:
    return Selection(rows, value, history)
  return rows, value


def synthetic_matrix(n: int, d: int, *, seed: int = 0, n_bugs: int | None = None) -> np.ndarray:
  """A structured random failure matrix [<= n, d] for tests and benchmarks: each wrong code has 1-3 latent bugs
  (each bug fails a random subset of tests), patterns OR-ed, de-duplicated, all-zero and > 80 %-ones rows dropped,
  then rows sorted by their number of passed tests, descending (the official filter's order)."""
  rng = np.random.default_rng(seed)
  n_bugs = n_bugs or max(4, d // 2)
  bugs = rng.random((n_bugs, d)) < rng.uniform(0.05, 0.3, size=(n_bugs, 1))
  rows = set()
  for _ in range(n * 4):
    k = int(rng.integers(1, 4))
    pat = bugs[rng.choice(n_bugs, size=k, replace=False)].any(0)
    pat ^= rng.random(d) < 0.02
    if 0 < pat.sum() <= 0.8 * d:
      rows.add(tuple(int(x) for x in pat))
    if len(rows) >= n:
      break
  M = np.array(sorted(rows), np.int8)
  order = np.argsort(M.sum(1), kind="stable")  # fewest failures (most passes) first
  return M[order]
