"""Threshold calibration: the (t1, t2) pair with the fewest System-2 samples whose accuracy stays within a
tolerance of full self-consistency, on held-out problems."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxeff.generation.answers import normalize
from jaxeff.generation.seersc.policies import Backend, Query, Request
from jaxeff.generation.seersc.scores import _check_n, confidence, majority_vote, weighted_entropy


# ------------------------------------------------------------------------------------------------ calibration
def calibrate_thresholds(
  entropies: Sequence[float],
  s2_answers: Sequence[Sequence[str | None]],
  s2_tokens: Sequence[Sequence[int]],
  golds: Sequence[str],
  n: int,
  *,
  tolerance: float = 0.01,
  grid: Sequence[float] | None = None,
) -> dict[str, Any]:
  """Pick (t1, t2) on a development split: the pair with the fewest System-2 tokens whose accuracy is within
  ``tolerance`` of SC@N's, where a query with budget B votes over its first B System-2 samples.

  Args:
    entropies: [Q] System-1 entropies.
    s2_answers: [Q][>= N] System-2 answers (normalised) in stream order.
    s2_tokens: [Q][>= N] their token counts.
    golds: [Q] gold answers.
    n: the configured N.
    tolerance: allowed accuracy drop vs SC@N (fraction, 0.01 = 1 point).
    grid: candidate thresholds (default 0, 0.1, ..., 4.0 bits).

  Returns {"thresholds", "accuracy", "s2_tokens", "sc_accuracy", "sc_s2_tokens"}.
  """
  n = _check_n(n)
  Q = len(entropies)
  if not (len(s2_answers) == len(s2_tokens) == len(golds) == Q) or Q == 0:
    raise ValueError("entropies, s2_answers, s2_tokens and golds must be non-empty and of equal length")
  if any(len(a) < n or len(t) < n for a, t in zip(s2_answers, s2_tokens)):
    raise ValueError(f"every query needs >= N={n} System-2 samples")
  grid = np.round(np.arange(0, 4.01, 0.1), 6) if grid is None else np.asarray(sorted(grid), float)
  grid = np.append(grid, np.inf)  # t = inf gives every query budget N, i.e. SC@N: a feasible pair always exists
  gold = [normalize(g) for g in golds]
  levels = sorted({1, max(1, n // 2), n})
  correct = {b: np.array([majority_vote(list(a[:b])) == g for a, g in zip(s2_answers, gold)]) for b in levels}
  cost = {b: np.array([sum(t[:b]) for t in s2_tokens]) for b in levels}
  e = np.asarray(entropies, float)
  sc_acc, sc_tok = float(correct[n].mean()), int(cost[n].sum())
  best = None
  for i, t1 in enumerate(grid):
    for t2 in grid[i:]:
      b = np.where(e < t1, 1, np.where(e < t2, max(1, n // 2), n))
      acc = float(np.mean([correct[int(x)][q] for q, x in enumerate(b)]))
      tok = int(sum(cost[int(x)][q] for q, x in enumerate(b)))
      if acc >= sc_acc - tolerance - 1e-12 and (best is None or tok < best[2]):
        best = ((float(t1), float(t2)), acc, tok)
  thr, acc, tok = best
  return {"thresholds": thr, "accuracy": acc, "s2_tokens": tok, "sc_accuracy": sc_acc, "sc_s2_tokens": sc_tok}


def calibrate(
  queries: Sequence[Query],
  backend: Backend,
  n: int,
  *,
  m: int = 64,
  policy: str = "avg2",
  tolerance: float = 0.01,
  batch_size: int | None = None,
  grid: Sequence[float] | None = None,
) -> dict[str, Any]:
  """Calibrate SeerSC's thresholds on development queries (with gold answers): draw M System-1 and N System-2
  samples per query through ``backend``, then ``calibrate_thresholds``. Returns its dict plus the dev
  ``entropies`` and ``cost_tokens``, every token the calibration generated (M System-1 and N System-2 samples per
  dev query): the price a deployment pays before SeerSC saves anything. Use the thresholds on other queries: ``SeerSC(n, thresholds=out["thresholds"])``."""
  n = _check_n(n)
  if not queries or any(q.gold is None for q in queries):
    raise ValueError("calibration needs development queries with gold answers")
  size = len(queries) if batch_size is None else _check_n(batch_size, "batch_size")
  ent, answers, tokens, cost = [], [], [], 0
  for start in range(0, len(queries), size):
    chunk = queries[start : start + size]
    s1, _ = backend.sample([Request(q.id, 1, m, 0) for q in chunk])
    s2, _ = backend.sample([Request(q.id, 2, n, 0) for q in chunk])
    cost += sum(x.tokens for row in s1 for x in row) + sum(x.tokens for row in s2 for x in row)
    for a, b in zip(s1, s2):
      ent.append(weighted_entropy([x.answer for x in a], [confidence(x.answer_logprobs, policy) for x in a]))
      answers.append([normalize(x.answer) for x in b])
      tokens.append([x.tokens for x in b])
  out = calibrate_thresholds(ent, answers, tokens, [q.gold for q in queries], n, tolerance=tolerance, grid=grid)
  out["entropies"] = ent
  out["cost_tokens"] = int(cost)
  return out
