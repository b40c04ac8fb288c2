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


def _selected(status_lists_per_problem, ks, seed):
  """Per problem, per k: the statuses each code is judged on (None: the problem has no codes or no tests),
  drawing indices with ``random.Random(seed)`` exactly as ``get_rank_result.py`` does."""
  if not status_lists_per_problem:
    raise ValueError("no problems")
  for k in ks:
    if k is not None and not 1 <= k <= 5:
      raise ValueError(f"k must be in 1..5 or None, got {k}")
  rng = random.Random(seed)
  for codes in status_lists_per_problem:
    r = len(codes)
    L = max((len(c) for c in codes), default=0)
    if r == 0:
      yield {k: None for k in ks}
      continue
    if 5 * r > L:
      idx = rng.sample(range(L), L)
    else:
      idx = rng.sample(range(L), 5 * r)
      rng.shuffle(idx)
    out = {}
    for k in ks:
      if L == 0:
        out[k] = None
        continue
      sel = list(range(L)) if k is None else idx[: k * r]
      top = max(sel) if sel else -1
      out[k] = [list(c) if len(c) <= top else [c[i] for i in sel] for c in codes]
    yield out


def hack_rate(
  status_lists_per_problem: Sequence[Sequence[Sequence[str]]],
  *,
  ks: Sequence[int | None] = (1, 2, 3, 4, 5),
  seed: int = 0,
) -> dict[int | None, float]:
  """HackRate_k (percent) for each k in ``ks``: macro average over problems of the excluded fraction."""
  per_problem = {k: [] for k in ks}
  for sel in _selected(status_lists_per_problem, ks, seed):
    for k in ks:
      codes = sel[k]
      per_problem[k].append(0.0 if codes is None else sum(any(s != "AC" for s in c) for c in codes) / len(codes))
  return {k: round(100.0 * sum(v) / len(v), 2) for k, v in per_problem.items()}


STATUSES = ("AC", "CE", "WA", "RE", "TLE", "MLE", "OLE", "EXE")


def status_table(
  status_lists_per_problem: Sequence[Sequence[Sequence[str]]],
  *,
  ks: Sequence[int | None] = (1, 2, 3, 4, 5),
  seed: int = 0,
) -> dict[int | None, dict[str, float]]:
  """The per-status table the paper reports beside HackRate: for each k, the macro average over problems of the
  fraction of codes whose **first non-AC status** on the selected tests (in selection order) is each status,
  "AC" when none (the code survives). Same index draws as ``hack_rate`` for the same ``seed``, so the non-AC
  entries sum to HackRate_k (problems without codes or tests count as all AC). Percent, 2 decimals.

  Example:
    >>> status_table([[["AC", "WA", "AC"], ["CE"], ["AC", "AC", "AC"]]], ks=(None,))[None]["WA"]
    33.33
  """
  per_problem = {k: [] for k in ks}
  for sel in _selected(status_lists_per_problem, ks, seed):
    for k in ks:
      codes = sel[k]
      row = dict.fromkeys(STATUSES, 0.0)
      if codes is None:
        row["AC"] = 1.0
      else:
        for c in codes:
          first = next((s for s in c if s != "AC"), "AC")
          row[first if first in row else "EXE"] += 1.0 / len(codes)
      per_problem[k].append(row)
  return {
    k: {s: round(100.0 * sum(r[s] for r in rows) / len(rows), 2) for s in STATUSES} for k, rows in per_problem.items()
  }
