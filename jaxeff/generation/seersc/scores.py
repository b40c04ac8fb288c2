"""SeerSC's scores: answer confidence, confidence-weighted answer entropy, the entropy -> budget map, votes
and ASC's stopping probability (formulas in ``jaxeff.generation.seersc``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

MATH_THRESHOLDS = (0.6, 2.0)
GPQA_THRESHOLDS = (0.2, 0.7)
CONFIDENCE_POLICIES = ("avg2", "min", "mean")


# ------------------------------------------------------------------------------------------------ scores
def confidence(logprobs: Sequence[float] | np.ndarray, policy: str = "avg2") -> float:
  r"""Confidence S(A) of one answer from its tokens' log-probabilities [k].

  ``avg2``: exp(mean_j log p_j) (geometric mean, the official default); ``min``: exp(min_j log p_j);
  ``mean``: mean_j p_j. An empty answer has confidence 0.

  Example:
    >>> round(confidence(np.log([0.5, 0.8])), 6)
    0.632456
  """
  if policy not in CONFIDENCE_POLICIES:
    raise ValueError(f"unknown confidence policy {policy!r}; choose one of {CONFIDENCE_POLICIES}")
  lp = np.asarray(logprobs, np.float64).reshape(-1)
  if lp.size == 0:
    return 0.0
  if policy == "avg2":
    return float(np.exp(lp.mean()))
  if policy == "min":
    return float(np.exp(lp.min()))
  return float(np.exp(lp).mean())


def weighted_entropy(answers: Sequence[str | None], confidences: Sequence[float], base: float = 2.0) -> float:
  r"""Confidence-weighted answer entropy E = -sum_c Wn(c) log_base Wn(c).

  Classes are exact answer strings after ``strip()`` (no math normalisation; ``None`` = one "no answer"
  class); W(c) = sum of the confidences in c, Wn = W / sum W. All-zero weights give 0.

  Example:
    >>> weighted_entropy(["1", "2", "3", "4"], [0.3] * 4)
    2.0
  """
  if len(answers) != len(confidences):
    raise ValueError(f"{len(answers)} answers but {len(confidences)} confidences")
  if base <= 0 or base == 1:
    raise ValueError(f"entropy base must be positive and != 1, got {base}")
  w: dict[Any, float] = {}
  for a, c in zip(answers, confidences):
    if c < 0 or not math.isfinite(c):
      raise ValueError(f"confidences must be finite and >= 0, got {c}")
    k = a.strip() if isinstance(a, str) else None
    w[k] = w.get(k, 0.0) + float(c)
  total = sum(w.values())
  if total <= 0:
    return 0.0
  p = np.array([v / total for v in w.values() if v > 0])
  return float(-(p * np.log(p)).sum() / math.log(base))


def _check_thresholds(thresholds: Sequence[float]) -> tuple[float, float]:
  t = tuple(float(x) for x in thresholds)
  if len(t) != 2 or not (0.0 <= t[0] <= t[1]) or not all(math.isfinite(x) for x in t):
    raise ValueError(f"thresholds must be two finite numbers 0 <= t1 <= t2, got {tuple(thresholds)}")
  return t


def _check_n(n: int, name: str = "N") -> int:
  if isinstance(n, bool) or int(n) != n or n < 1:
    raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
  return int(n)


def budget(entropy: float, n: int, thresholds: Sequence[float] = MATH_THRESHOLDS) -> int:
  """System-2 samples for a query: 1 if E < t1, max(1, N // 2) if t1 <= E < t2, else N.

  Example:
    >>> [budget(e, 8) for e in (0.5999, 0.6, 1.9999, 2.0)]
    [1, 4, 4, 8]
  """
  n = _check_n(n)
  t1, t2 = _check_thresholds(thresholds)
  if not math.isfinite(entropy) or entropy < 0:
    raise ValueError(f"entropy must be finite and >= 0, got {entropy}")
  if entropy < t1:
    return 1
  if entropy < t2:
    return max(1, n // 2)
  return n


def majority_vote(answers: Sequence[str | None], weights: Sequence[float] | None = None) -> str | None:
  """The most frequent (or heaviest) answer; ``None`` answers are ignored; ties go to the first one seen."""
  score: dict[str, float] = {}
  for i, a in enumerate(answers):
    if a is None:
      continue
    score[a] = score.get(a, 0.0) + (1.0 if weights is None else float(weights[i]))
  if not score:
    return None
  best = max(score.values())
  return next(a for a, v in score.items() if v == best)


def asc_probability(a: int, b: int) -> float:
  r"""ASC's stopping statistic P(p1 > p2 | a, b) = int_{1/2}^1 x^a (1-x)^b dx / B(a+1, b+1)
  = 1 - I_{1/2}(a+1, b+1) = P(Binomial(a+b+1, 1/2) <= a), exact for integer counts.

  Example:
    >>> asc_probability(4, 0)
    0.96875
  """
  if a < 0 or b < 0:
    raise ValueError(f"counts must be >= 0, got a={a}, b={b}")
  n = a + b + 1
  return math.fsum(math.comb(n, j) for j in range(a + 1)) / 2.0**n
