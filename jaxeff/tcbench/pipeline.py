"""TC-Bench end to end: problems (JSONL) -> executions -> filtered code-test matrices -> WrongSelect -> HackRate.

Formats (one JSON object per line; a malformed line fails with its line number):

* problems: ``{"id", "tests": [{"input", "output"}], "wrong_codes": [{"id", "code", "lang"}],
  "solutions"?: [{"code", "lang"}], "time_limit_ms"?, "memory_limit_mb"?}`` (``lang`` in cpp / c / python / java;
  ``std``, ``opt`` optional); ``load_released`` converts the released TC-Bench rows into this format;
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
from jaxeff.tcbench.score import hack_rate, status_table

# The record schemas of the four files (see the module docstring); every record is checked when read.
_ID = (str, int)
_NUMBER = (int, float)
PROBLEM_SCHEMA = {
  "id": _ID,
  "tests": [{"input": str, "output": str}],
  "wrong_codes": [{"id": _ID, "code": str, "lang?": str, "std?": str, "opt?": (str, int)}],
  "solutions?": [{"code": str, "lang?": str, "std?": str, "opt?": (str, int)}],
  "description?": str,
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


def program_of(code: dict[str, Any]):
  """The sandbox ``Program`` of a code record ({"code", "lang"?, "std"?, "opt"?}; defaults C++17 at -O2)."""
  from jaxeff.sandbox import Program

  return Program(code["code"], code.get("lang", "cpp"), code.get("std", "c++17"), str(code.get("opt", "2")))


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
  from jaxeff.sandbox import require_isolation, run_many

  for prob in problems:  # a bad preset or problem limit fails before any work
    problem_limits(prob, limits)
  require_isolation(unsafe_no_isolation)
  out = []
  for prob in problems:
    tests = [(t["input"], t["output"]) for t in prob["tests"]]
    lim = problem_limits(prob, limits)
    progs = [program_of(c) for c in prob["wrong_codes"]]
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
  validate: bool = True,
  unsafe_no_isolation: bool = False,
) -> dict[str, Any]:
  """HackRate of generated tests: run each problem's selected wrong codes on its generated tests (tests with an
  empty expected output are skipped, as the official runner does); problems without generated tests count 0.
  With ``validate`` (default) a problem's generated tests first go through ``validate_tests`` against its correct
  ``solutions`` (when it has any): wrong expected outputs are fixed or the test dropped, so a wrong code is never
  "excluded" by a wrong test. Execution in ``jaxeff.sandbox`` under the ``limits`` preset of ``problem_limits``.
  Returns {"hack_rate": {k: percent}, "status_table": {k: {status: percent}}, "problems", "validation"}."""
  from jaxeff.sandbox import require_isolation, run_many

  problem_limits({}, limits)
  require_isolation(unsafe_no_isolation)

  by_id = {p["id"]: p for p in problems}
  gen = {g["id"]: g["tests"] for g in generated}
  per_problem, validation = [], {}
  for sel in selections:
    prob = by_id.get(sel["id"])
    if prob is None:
      raise ValueError(f"selection for unknown problem {sel['id']!r}")
    codes = {c["id"]: c for c in prob["wrong_codes"]}
    tests = [(t["input"], t["output"]) for t in gen.get(sel["id"], []) if str(t.get("output", "")).strip()]
    if validate and tests and prob.get("solutions"):
      tests, rep_ = validate_tests(
        tests,
        prob["solutions"],
        problem_limits(prob, limits),
        seed=seed,
        cache_dir=cache_dir,
        workers=workers,
        unsafe_no_isolation=unsafe_no_isolation,
      )
      validation[str(sel["id"])] = rep_
    if not tests:
      per_problem.append([[] for _ in sel["codes"]])
      continue
    lim = problem_limits(prob, limits)
    progs = [program_of(codes[c]) for c in sel["codes"]]
    verdicts = run_many(
      progs, tests, lim, workers=workers, cache_dir=cache_dir, unsafe_no_isolation=unsafe_no_isolation
    )
    per_problem.append([["CE"] if vs and vs[0].status == "CE" else [v.status for v in vs] for vs in verdicts])
  rates = hack_rate(per_problem, ks=ks, seed=seed)
  table = status_table(per_problem, ks=ks, seed=seed)
  name = lambda k: "all" if k is None else str(k)  # noqa: E731
  return {
    "hack_rate": {name(k): v for k, v in rates.items()},
    "status_table": {name(k): v for k, v in table.items()},
    "problems": len(per_problem),
    "validation": validation,
  }


def matrix_of(entry: dict[str, Any]) -> np.ndarray:
  """The bool failure matrix of one ``build`` output entry (its ``rows`` status strings)."""
  return failure_matrix(entry["rows"])


# ------------------------------------------------------------------------------------------------ validation
_BAD = {"TLE", "RE", "MLE", "WA", "EXE", "OLE"}


def validate_tests(
  tests: Sequence[tuple[str, str]],
  solutions: Sequence[dict[str, Any]],
  limits,
  *,
  max_solutions: int = 8,
  seed: int = 0,
  cache_dir=None,
  workers=None,
  unsafe_no_isolation: bool = False,
) -> tuple[list[tuple[str, str]], dict[str, Any]]:
  """Validate generated tests with correct codes before they score anything (TC-Bench ``data_construction``).

  Up to ``max_solutions`` correct codes (``random.Random(seed).sample`` when more) run every test in the sandbox
  under ``limits``; a run that exits 0 with a non-empty stderr counts as RE (this stage only). Codes whose every
  status is in {TLE, RE, MLE, OLE, WA, EXE} are dropped (a CE code is dropped too: it validates nothing). Then per
  test: kept if every remaining code is AC; if every one is WA with the same output (or all decimal and
  pairwise within 1e-6), kept with its expected output **replaced** by the first code's output; otherwise
  (any TLE / RE / MLE / disagreement) dropped. No surviving correct code: every test is dropped. Differences
  from the released script (documented quirks fixed): all tests are iterated (not the first code's status
  count), all problems are processed, and a CE code never blocks a test.

  Returns (kept tests [(input, expected)], report {"solutions_run", "solutions_kept", "kept", "fixed",
  "dropped"}).
  """
  import random

  from jaxeff.sandbox import normalize_output, outputs_match, run_many

  sols = list(solutions)
  if len(sols) > max_solutions:
    sols = random.Random(seed).sample(sols, max_solutions)
  if not tests:
    return [], {"solutions_run": len(sols), "solutions_kept": 0, "kept": 0, "fixed": 0, "dropped": 0}
  progs = [program_of(c) for c in sols]
  verdicts = run_many(
    progs, list(tests), limits, workers=workers, cache_dir=cache_dir, unsafe_no_isolation=unsafe_no_isolation
  )
  status = [[("RE" if v.status in ("AC", "WA") and v.stderr.strip() else v.status) for v in vs] for vs in verdicts]
  alive = [i for i, st in enumerate(status) if st and st[0] != "CE" and not all(s in _BAD for s in st)]
  kept, fixed, dropped = [], 0, 0
  for j, (inp, exp) in enumerate(tests):
    st = [status[i][j] for i in alive]
    if alive and all(s == "AC" for s in st):
      kept.append((inp, exp))
    elif alive and all(s == "WA" for s in st):
      outs = [verdicts[i][j].output for i in alive]
      same = all(normalize_output(o) == normalize_output(outs[0]) or outputs_match(o, outs[0]) for o in outs)
      if same:
        kept.append((inp, outs[0]))
        fixed += 1
      else:
        dropped += 1
    else:
      dropped += 1
  return kept, {
    "solutions_run": len(sols),
    "solutions_kept": len(alive),
    "kept": len(kept),
    "fixed": fixed,
    "dropped": dropped,
  }


# ------------------------------------------------------------------------------------------------ released data
_LANGS = {
  "cpp": "cpp",
  "c++": "cpp",
  "cxx": "cpp",
  "gnu c++": "cpp",
  "c++17": "cpp",
  "c++14": "cpp",
  "c++11": "cpp",
  "c++20": "cpp",
  "c": "c",
  "python": "python",
  "python3": "python",
  "py": "python",
  "java": "java",
}


def _lang(name: str, where: str) -> str:
  key = str(name).strip().lower()
  for k, v in _LANGS.items():
    if key == k or key.startswith(k + " ") or key.replace(" ", "") == k:
      return v
  if key.startswith("gnu c++") or key.startswith("c++"):
    return "cpp"
  if key.startswith("python"):
    return "python"
  raise ValueError(f"{where}: unknown language {name!r} (expected C++, C, Python or Java)")


RELEASED_FIELDS = (
  "problem_id", "description", "time_limit", "memory_limit", "sample_input", "sample_output", "solutions",
  "wrong_solutions", "rank",
)  # fmt: skip


def load_released(path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """Read the released TC-Bench rows (HF ``Luoberta/TC-Bench``, split ``test``: a local ``.jsonl`` / ``.json`` or
  ``.parquet`` file; nothing is downloaded) into jaxeff's formats: (problems, golden matrices).

  Each row: ``problem_id``, ``description``, ``time_limit`` (ms), ``memory_limit`` (MB), ``sample_input``,
  ``sample_output``, ``solutions`` [{code, lang}], ``wrong_solutions`` [{code, lang, output_str}] (``output_str``:
  the code's A/W string on the hidden golden tests, i.e. its row of the selected failure matrix), ``rank``.
  Problems get the sample as their one visible test, the wrong solutions as ``wrong_codes`` (ids 0..r-1), the
  correct ones as ``solutions`` (compile options: ``-O2 -std=c++17``, recorded, as the rows carry none); the
  golden matrices are ``{"id", "codes", "rows", "rank", "gf2_rank", "rank_released"}`` (``rank`` recomputed:
  ``prepare_hf_dataset.py`` may overwrite the field with the number of wrong solutions). Every row is checked
  before anything is returned; all problems are listed in one error.
  """
  from pathlib import Path

  path = Path(path)
  if not path.exists():
    raise FileNotFoundError(f"no TC-Bench file at {path} (download the dataset yourself; nothing is fetched)")
  if path.suffix == ".parquet":
    from jaxeff.io import require

    pq = require("pyarrow.parquet", "reading TC-Bench parquet files", "datasets")

    rows = pq.read_table(path).to_pylist()
  elif path.suffix == ".json":
    import json

    rows = json.loads(path.read_text())
  else:
    rows = read_jsonl(path)
  problems, matrices, errors = [], [], []
  for n, row in enumerate(rows):
    where = f"row {n} ({row.get('problem_id', '?')!r})" if isinstance(row, dict) else f"row {n}"
    if not isinstance(row, dict):
      errors.append(f"{where}: not an object")
      continue
    missing = [f for f in RELEASED_FIELDS if f not in row]
    if missing:
      errors.append(f"{where}: missing {', '.join(missing)}")
      continue
    try:
      wrong = list(row["wrong_solutions"])
      strings = [str(w["output_str"]) for w in wrong]
      if strings:
        failure_matrix(strings)
        if len({len(x) for x in strings}) != 1:
          raise ValueError("output_str lengths differ (one status per golden test)")
      prob = {
        "id": row["problem_id"],
        "description": str(row["description"]),
        "time_limit_ms": row["time_limit"],
        "memory_limit_mb": row["memory_limit"],
        "tests": [{"input": str(row["sample_input"]), "output": str(row["sample_output"])}],
        "wrong_codes": [
          {"id": i, "code": w["code"], "lang": _lang(w["lang"], where), "std": "c++17", "opt": "2"}
          for i, w in enumerate(wrong)
        ],
        "solutions": [
          {"code": c["code"], "lang": _lang(c["lang"], where), "std": "c++17", "opt": "2"} for c in row["solutions"]
        ],
      }
      problem_limits(prob)
    except (KeyError, TypeError, ValueError) as e:
      errors.append(f"{where}: {e}")
      continue
    problems.append(prob)
    M = failure_matrix(strings) if strings else np.zeros((0, 0), np.int8)
    matrices.append(
      {
        "id": row["problem_id"],
        "codes": list(range(len(wrong))),
        "rows": strings,
        "rank": real_rank(M) if strings else 0,
        "gf2_rank": gf2_rank(M) if strings else 0,
        "rank_released": int(row["rank"]),
      }
    )
  if errors:
    raise ValueError(f"{path}: {len(errors)} bad rows:\n  " + "\n  ".join(errors[:50]))
  return problems, matrices
