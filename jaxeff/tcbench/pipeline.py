"""TC-Bench end to end: problems (JSONL) -> executions -> filtered code-test matrices -> WrongSelect -> HackRate.

Formats (one JSON object per line; a malformed line fails with its line number):

* problems: ``{"id", "tests": [{"input", "output"}], "wrong_codes": [{"id", "code", "lang"}],
  "time_limit_ms"?, "memory_limit_mb"?}`` (``lang`` in cpp / c / python / java; ``std``, ``opt`` optional);
* matrices (``build``): ``{"id", "codes": [code ids, matrix row order], "tests": [test indices kept],
  "rows": ["AWWA...", ...], "rank", "gf2_rank"}`` or ``{"id", "rejected": reason}``;
* selections (``select``): ``{"id", "codes": [selected code ids], "objective", "rank"}``;
* generated tests (``evaluate``): ``{"id", "tests": [{"input", "output"}]}`` per problem.

Matrix filters (the official ``filter.py`` order): codes with any verdict other than AC / WA (TLE, RE, CE, ...)
are dropped; codes passing everything are not wrong; codes failing more than 80 % of the tests are dropped;
duplicate failure signatures keep their first code (pass codes in submission order, fastest first); rows are
sorted by their number of passed tests, descending (stable: this order drives the QR basis); tests every
remaining code fails are dropped (``all_ones="drop_test"``; ``"drop_problem"`` rejects the problem as the
official filter does); problems of rank < 5 are rejected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxeff.io import read_jsonl as read_jsonl  # the JSONL helpers live in jaxeff.io; re-exported here
from jaxeff.io import write_jsonl as write_jsonl
from jaxeff.tcbench.matrix import failure_matrix, gf2_rank, real_rank, wrongselect
from jaxeff.tcbench.score import hack_rate

# The record schemas of the four files (see the module docstring); every record is checked when read.
_ID = (str, int)
_NUMBER = (int, float)
PROBLEM_SCHEMA = {
  "id": _ID,
  "tests": [{"input": str, "output": str}],
  "wrong_codes": [{"id": _ID, "code": str, "lang?": str, "std?": str, "opt?": (str, int)}],
  "time_limit_ms?": _NUMBER,
  "memory_limit_mb?": _NUMBER,
}
MATRIX_SCHEMA = {"id": _ID, "codes?": [_ID], "tests?": [int], "rows?": [str], "rejected?": str}
SELECTION_SCHEMA = {"id": _ID, "codes": [_ID]}
GENERATED_SCHEMA = {"id": _ID, "tests": [{"input": str, "output?": (str, int, float)}]}


def read_problems(path, limits: str = "tcbench") -> list[dict[str, Any]]:
  """Problems JSONL, every record checked against ``PROBLEM_SCHEMA`` and its limits (before any execution)."""
  return read_jsonl(path, PROBLEM_SCHEMA, nonempty=True, check=lambda p: problem_limits(p, limits))


def _check_matrix_record(m: dict[str, Any]) -> None:
  if "rows" in m:
    failure_matrix(m["rows"])
    if len(m.get("codes", ())) != len(m["rows"]):
      raise ValueError(f"{len(m.get('codes', ()))} code ids for {len(m['rows'])} rows")


def read_matrices(path) -> list[dict[str, Any]]:
  """Matrices JSONL (``build``'s output), every record checked: the schema, one code id per row, rows of equal
  length over A / W."""
  return read_jsonl(path, MATRIX_SCHEMA, nonempty=True, check=_check_matrix_record)


def read_selections(path) -> list[dict[str, Any]]:
  """Selections JSONL (``select``'s output), checked against ``SELECTION_SCHEMA``."""
  return read_jsonl(path, SELECTION_SCHEMA, nonempty=True)


def read_generated(path) -> list[dict[str, Any]]:
  """Generated tests JSONL, checked against ``GENERATED_SCHEMA``."""
  return read_jsonl(path, GENERATED_SCHEMA)


def matrix_from_verdicts(
  code_ids: Sequence[Any],
  verdicts: Sequence[Sequence[str]],
  *,
  max_fail: float = 0.8,
  min_rank: int = 5,
  all_ones: str = "drop_test",
) -> dict[str, Any]:
  """The filtered failure matrix of one problem from per-code verdict lists (see the module docstring)."""
  if all_ones not in ("drop_test", "drop_problem"):
    raise ValueError(f"all_ones must be 'drop_test' or 'drop_problem', got {all_ones!r}")
  seen, kept = set(), []
  for cid, v in zip(code_ids, verdicts):
    if not v or any(s not in ("AC", "WA") for s in v):
      continue
    sig = "".join("A" if s == "AC" else "W" for s in v)
    if "W" not in sig or sig.count("W") > max_fail * len(sig) or sig in seen:
      continue
    seen.add(sig)
    kept.append((cid, sig))
  if not kept:
    return {"rejected": "no wrong code with only AC/WA verdicts"}
  kept.sort(key=lambda t: -t[1].count("A"))  # stable: ties keep submission order
  M = failure_matrix([s for _, s in kept])
  tests = list(range(M.shape[1]))
  ones = M.all(0)
  if ones.any():
    if all_ones == "drop_problem":
      return {"rejected": "a test fails every wrong code"}
    tests = [j for j in tests if not ones[j]]
    M = M[:, tests]
    # dropping columns can merge signatures: keep the first (highest pass count) of each
    first = {}
    for i, row in enumerate(map(bytes, M)):
      first.setdefault(row, i)
    idx = sorted(first.values())
    M, kept = M[idx], [kept[i] for i in idx]
    keep = M.any(1)
    M, kept = M[keep], [k for k, m in zip(kept, keep) if m]
  if len(kept) == 0 or M.shape[1] == 0:
    return {"rejected": "nothing left after dropping all-fail tests"}
  r = real_rank(M)
  if r < min_rank:
    return {"rejected": f"rank {r} < {min_rank}"}
  rows = ["".join("W" if x else "A" for x in row) for row in M]
  return {"codes": [c for c, _ in kept], "tests": tests, "rows": rows, "rank": r, "gf2_rank": gf2_rank(M)}


LIMIT_PRESETS = ("tcbench", "strict")


def problem_limits(prob: dict[str, Any], preset: str = "tcbench"):
  """The sandbox limits of one problem: ``tcbench`` (default, the official runner: ``ms // 1000 + 3`` CPU and
  wall seconds, 5x the memory limit; ``Limits.tcbench``) or ``strict`` (the problem's own limits).

  Example:
    >>> problem_limits({"time_limit_ms": 1000, "memory_limit_mb": 256}).time_s
    4.0
  """
  from jaxeff.sandbox import Limits

  ms, mb = prob.get("time_limit_ms", 2000), prob.get("memory_limit_mb", 512)
  bad = [
    f"{k}={v!r}"
    for k, v in (("time_limit_ms", ms), ("memory_limit_mb", mb))
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0
  ]
  if bad:
    raise ValueError(f"problem {prob.get('id', '?')!r}: limits must be positive numbers, got {', '.join(bad)}")
  if preset == "tcbench":
    return Limits.tcbench(ms, mb)
  if preset == "strict":
    return Limits(time_s=ms / 1000, memory_mb=mb)
  raise ValueError(f"unknown limits preset {preset!r}; choose from {LIMIT_PRESETS}")


def build(
  problems: Sequence[dict[str, Any]],
  *,
  cache_dir=None,
  workers=None,
  progress=True,
  limits: str = "tcbench",
  unsafe_no_isolation: bool = False,
  **filters,
) -> list[dict]:
  """Execute every problem's wrong codes on its tests (in ``jaxeff.sandbox``, under the ``limits`` preset of
  ``problem_limits``) and build the filtered matrices."""
  from jaxeff.sandbox import Program, require_isolation, run_many

  for prob in problems:  # a bad preset or problem limit fails before any work
    problem_limits(prob, limits)
  require_isolation(unsafe_no_isolation)
  out = []
  for prob in problems:
    tests = [(t["input"], t["output"]) for t in prob["tests"]]
    lim = problem_limits(prob, limits)
    progs = [
      Program(c["code"], c.get("lang", "cpp"), c.get("std", "c++17"), str(c.get("opt", "2")))
      for c in prob["wrong_codes"]
    ]
    verdicts = run_many(
      progs,
      tests,
      lim,
      workers=workers,
      cache_dir=cache_dir,
      progress=progress,
      unsafe_no_isolation=unsafe_no_isolation,
    )
    res = matrix_from_verdicts(
      [c["id"] for c in prob["wrong_codes"]], [[v.status for v in vs] for vs in verdicts], **filters
    )
    out.append({"id": prob["id"], **res})
  return out


def select(matrices: Sequence[dict[str, Any]], *, restarts: int = 0, seed: int = 0, progress=True) -> list[dict]:
  """WrongSelect on every accepted matrix."""
  it = matrices
  if progress:
    from tqdm.auto import tqdm

    it = tqdm(matrices, desc="wrongselect", unit="problem")
  out = []
  for m in it:
    if "rows" not in m:
      continue
    M = failure_matrix(m["rows"])
    rows, value = wrongselect(M, restarts, seed)
    out.append({"id": m["id"], "codes": [m["codes"][i] for i in rows], "objective": value, "rank": len(rows)})
  return out


def evaluate(
  selections: Sequence[dict[str, Any]],
  problems: Sequence[dict[str, Any]],
  generated: Sequence[dict[str, Any]],
  *,
  ks=(1, 2, 3, 4, 5, None),
  seed: int = 0,
  cache_dir=None,
  workers=None,
  limits: str = "tcbench",
  unsafe_no_isolation: bool = False,
) -> dict[str, Any]:
  """HackRate of generated tests: run each problem's selected wrong codes on its generated tests (tests with an
  empty expected output are skipped, as the official runner does); problems without generated tests count 0.
  Execution in ``jaxeff.sandbox`` under the ``limits`` preset of ``problem_limits``."""
  from jaxeff.sandbox import Program, require_isolation, run_many

  problem_limits({}, limits)
  require_isolation(unsafe_no_isolation)

  by_id = {p["id"]: p for p in problems}
  gen = {g["id"]: g["tests"] for g in generated}
  per_problem = []
  for sel in selections:
    prob = by_id.get(sel["id"])
    if prob is None:
      raise ValueError(f"selection for unknown problem {sel['id']!r}")
    codes = {c["id"]: c for c in prob["wrong_codes"]}
    tests = [(t["input"], t["output"]) for t in gen.get(sel["id"], []) if str(t.get("output", "")).strip()]
    if not tests:
      per_problem.append([[] for _ in sel["codes"]])
      continue
    lim = problem_limits(prob, limits)
    progs = [
      Program(
        codes[c]["code"], codes[c].get("lang", "cpp"), codes[c].get("std", "c++17"), str(codes[c].get("opt", "2"))
      )
      for c in sel["codes"]
    ]
    verdicts = run_many(
      progs, tests, lim, workers=workers, cache_dir=cache_dir, unsafe_no_isolation=unsafe_no_isolation
    )
    per_problem.append([["CE"] if vs and vs[0].status == "CE" else [v.status for v in vs] for vs in verdicts])
  rates = hack_rate(per_problem, ks=ks, seed=seed)
  return {"hack_rate": {("all" if k is None else str(k)): v for k, v in rates.items()}, "problems": len(per_problem)}


def matrix_of(entry: dict[str, Any]) -> np.ndarray:
  """The bool failure matrix of one ``build`` output entry (its ``rows`` status strings)."""
  return failure_matrix(entry["rows"])
