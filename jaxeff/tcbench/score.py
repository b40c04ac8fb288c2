"""The exclusion rate ("HackRate") of a generated test suite against TC-Bench's selected wrong codes.

Per problem with r selected wrong codes and status lists (one per code, one status per generated test; a code
that does not compile has ``["CE"]``, a harness failure ``["EXE"]``), as ``get_rank_result.py`` scores it:

1. L = the longest status list. Indices: if 5r > L, ``rng.sample(range(L), L)``; else ``rng.sample(range(L), 5r)``
   then ``rng.shuffle`` of that list.
2. For k = 1..5 the first k*r indices select tests; a code is excluded iff any selected status is not "AC",
   where a list too short for the largest selected index is used whole (so CE and EXE count as excluded). L = 0:
   nothing is excluded.
3. Rate_k = excluded / r; HackRate_k = 100 x mean over problems (problems without tests count 0), 2 decimals.

The official script never seeds ``random``; here ``random.Random(seed)`` makes the same calls in the same order
(problems in the given order), so ``seed = s`` equals the script after ``random.seed(s)``. ``k = None`` uses
every test (deterministic).

Example:
  >>> hack_rate([[["AC", "WA", "AC"], ["CE"]]], ks=(None,))
  {None: 100.0}
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def hack_rate(
  status_lists_per_problem: Sequence[Sequence[Sequence[str]]],
  *,
  ks: Sequence[int | None] = (1, 2, 3, 4, 5),
  seed: int = 0,
) -> dict[int | None, float]:
  """HackRate_k (percent) for each k in ``ks``: macro average over problems of the excluded fraction."""
  if not status_lists_per_problem:
    raise ValueError("no problems")
  for k in ks:
    if k is not None and not 1 <= k <= 5:
      raise ValueError(f"k must be in 1..5 or None, got {k}")
  rng = random.Random(seed)
  per_problem = {k: [] for k in ks}
  for codes in status_lists_per_problem:
    r = len(codes)
    L = max((len(c) for c in codes), default=0)
    if r == 0:
      for k in ks:
        per_problem[k].append(0.0)
      continue
    if 5 * r > L:
      idx = rng.sample(range(L), L)
    else:
      idx = rng.sample(range(L), 5 * r)
      rng.shuffle(idx)
    for k in ks:
      if L == 0:
        per_problem[k].append(0.0)
        continue
      sel = list(range(L)) if k is None else idx[: k * r]
      top = max(sel) if sel else -1
      excluded = 0
      for c in codes:
        statuses = c if len(c) <= top else [c[i] for i in sel]
        excluded += any(s != "AC" for s in statuses)
      per_problem[k].append(excluded / r)
  return {k: round(100.0 * sum(v) / len(v), 2) for k, v in per_problem.items()}
