r"""Execution-based evaluation of code translation on TransCoder-test (computational accuracy and pass@k).

Data: a folder with ``cpp/``, ``java/``, ``python/`` harness files (TransCoder-test's GeeksforGeeks set, e.g.
``../shared/data/transcoder/evaluation_gfg``; read from the path the user gives, never copied). A file holds a
licence header, the reference ``f_gold`` (and helpers), a marker line (``//TOFILL`` or ``#TOFILL``) and a
``main`` that runs fixed inputs and prints ``#Results: n, total`` (C++ without a newline, Java without the space,
sometimes after text the gold prints). Files with the same stem are the same problem.

A candidate translation is renamed to ``f_filled`` (its first defined function, or ``f_gold`` if it uses that
name), inserted at the marker, and the program runs once in the sandbox (``jaxeff.sandbox``: compile once,
limits, no network, verdicts cached by content hash). Python gets the official prelude (numpy, math,
collections, heapq, itertools, random, sys); Java loses its ``import javafx.util.Pair;`` line (absent from a
plain JDK, unused). Outcomes (the official names): ``success`` (n == total), ``failure``, ``error`` (crash or no
result line), ``compilation``, ``timeout``. The last ``#Results:\s*(\d+),\s*(\d+)`` match of stdout counts.

Metrics: computational accuracy (share of problems whose translation passes every test) and the unbiased
pass@k = 1 - C(n - c, k) / C(n, k) (Chen et al. 2021) over n samples per problem with c successes.

Example:
  >>> round(pass_at_k(10, 3, 1), 4), round(pass_at_k(10, 3, 5), 4)
  (0.3, 0.9167)
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

LANG_DIRS = {"cpp": ("cpp", ".cpp"), "java": ("java", ".java"), "python": ("python", ".py")}
DIRECTIONS = [(s, t) for s in ("cpp", "java", "python") for t in ("cpp", "java", "python") if s != t]
PY_PRELUDE = (
  "import numpy as np\nimport math\nfrom math import *\nimport collections\nfrom collections import *\n"
  "import heapq\nimport itertools\nimport random\nimport sys\n"
)
_RESULTS = re.compile(r"#Results:\s*(\d+),\s*(\d+)")


@dataclasses.dataclass(frozen=True)
class Problem:
  """One translation problem: the source function (f_gold and helpers) and the target-language harness."""

  stem: str
  src_lang: str
  tgt_lang: str
  src_code: str
  tgt_script: str
  tgt_gold: str


@dataclasses.dataclass
class Outcome:
  status: str
  passed: int = 0
  total: int = 0
  detail: str = ""

  @property
  def success(self) -> bool:
    return self.status == "success"


def _marker(lang: str) -> str:
  return "#TOFILL" if lang == "python" else "//TOFILL"


def gold_function(script: str, lang: str) -> str:
  """The code before the marker without the licence header, includes / imports and the Java class line."""
  head = script.split(_marker(lang))[0]
  out = []
  for line in head.splitlines():
    s = line.strip()
    if s.startswith(("#include", "using namespace", "import ", "package ")) or (
      lang != "python" and s.startswith("//")
    ):
      continue
    if lang == "python" and s.startswith("#"):
      continue
    if lang == "java" and re.match(r"(public\s+)?class\s+\w+", s):
      continue
    out.append(line)
  return "\n".join(out).strip() + "\n"


def load_transcoder(root: str | Path, src: str, tgt: str, stems: Sequence[str] | None = None) -> list[Problem]:
  """Problems of one direction: stems present in both languages (sorted), or the given ``stems``."""
  root = Path(root)
  if src not in LANG_DIRS or tgt not in LANG_DIRS or src == tgt:
    raise ValueError(f"direction must be two different languages of {sorted(LANG_DIRS)}, got {src}->{tgt}")
  sdir, sext = LANG_DIRS[src]
  tdir, text = LANG_DIRS[tgt]
  if not (root / sdir).is_dir() or not (root / tdir).is_dir():
    raise FileNotFoundError(f"{root} has no {sdir}/ and {tdir}/ folders (a TransCoder-test evaluation_gfg copy)")
  have_s = {p.stem for p in (root / sdir).glob(f"*{sext}")}
  have_t = {p.stem for p in (root / tdir).glob(f"*{text}")}
  chosen = sorted(have_s & have_t) if stems is None else list(stems)
  missing = [s for s in chosen if s not in have_s or s not in have_t]
  if missing:
    raise FileNotFoundError(f"stems missing in {src} or {tgt}: {missing[:10]}")
  out = []
  for s in chosen:
    src_script = (root / sdir / f"{s}{sext}").read_text(errors="replace")
    tgt_script = (root / tdir / f"{s}{text}").read_text(errors="replace")
    out.append(Problem(s, src, tgt, gold_function(src_script, src), tgt_script, gold_function(tgt_script, tgt)))
  return out


def _first_function_name(code: str, lang: str) -> str | None:
  if lang == "python":
    m = re.search(r"^\s*def\s+(\w+)\s*\(", code, flags=re.M)
  else:
    m = re.search(r"\b(?!if\b|for\b|while\b|switch\b|return\b)(\w+)\s*\([^;{}]*\)\s*(?:throws\s+[\w.,\s]+)?\{", code)
  return m.group(1) if m else None


def fill(script: str, candidate: str, lang: str) -> str:
  """The harness with ``candidate`` (renamed to f_filled) at the marker; Python prelude, javafx import removed."""
  name = "f_gold" if re.search(r"\bf_gold\b", candidate) else _first_function_name(candidate, lang)
  code = re.sub(rf"\b{re.escape(name)}\b", "f_filled", candidate) if name else candidate
  marker = _marker(lang)
  if marker not in script:
    raise ValueError(f"the harness has no {marker} marker")
  out = script.replace(marker, code, 1)
  if lang == "java":
    out = re.sub(r"^\s*import\s+javafx\.util\.Pair\s*;\s*$", "", out, flags=re.M)
  if lang == "python":
    out = PY_PRELUDE + out
  return out


def _program(problem: Problem, code: str):
  """The filled target harness as a sandbox program (C++ at -O0: compile time dominates)."""
  from jaxeff.sandbox import Program

  return Program(fill(problem.tgt_script, code, problem.tgt_lang), problem.tgt_lang, std="c++17", opt="0")


def run_candidate(
  problem: Problem,
  code: str,
  *,
  timeout_s: float = 10.0,
  memory_mb: int = 2048,
  cache_dir=None,
  unsafe_no_isolation: bool = False,
) -> Outcome:
  """Fill the target harness with ``code``, compile once, run once in the sandbox (``jaxeff.sandbox``; it refuses
  to run without isolation unless ``unsafe_no_isolation``); the outcome of its result line."""
  from jaxeff.sandbox import Limits, run_tests

  (v,) = run_tests(
    _program(problem, code),
    [("", None)],
    Limits(time_s=timeout_s, memory_mb=memory_mb, output_bytes=1 << 20),
    cache_dir=cache_dir,
    unsafe_no_isolation=unsafe_no_isolation,
  )
  return outcome_from_verdict(v)


def outcome_from_verdict(v) -> Outcome:
  """The TransCoder outcome of one sandbox verdict: CE -> compilation, TLE -> timeout, RE / OLE / EXE or no
  ``#Results: n, total`` line -> error, else success iff n == total > 0 (failure otherwise)."""
  if v.status == "CE":
    return Outcome("compilation", detail=v.detail[-500:])
  if v.status == "TLE":
    return Outcome("timeout", detail=v.detail)
  m = _RESULTS.findall(v.output)
  if v.status in ("RE", "OLE", "EXE") or not m:
    return Outcome("error", detail=(v.detail or "no result line")[-500:])
  n, total = (int(x) for x in m[-1])
  return Outcome("success" if n == total and total > 0 else "failure", n, total)


def run_many_candidates(
  problems: Sequence[Problem],
  codes: Sequence[str],
  *,
  timeout_s=10.0,
  workers=None,
  cache_dir=None,
  progress=False,
  unsafe_no_isolation: bool = False,
) -> list[Outcome]:
  """``run_candidate`` for many (problem, code) pairs in parallel; results in input order."""
  from jaxeff.sandbox import Limits, run_many

  progs = [_program(p, c) for p, c in zip(problems, codes)]
  res = run_many(
    progs,
    [[("", None)]] * len(progs),
    Limits(time_s=timeout_s, memory_mb=2048),
    workers=workers,
    cache_dir=cache_dir,
    progress=progress,
    unsafe_no_isolation=unsafe_no_isolation,
  )
  return [outcome_from_verdict(r[0]) for r in res]


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k = 1 - C(n - c, k) / C(n, k), computed as 1 - prod_{i=n-c+1..n} (1 - k / i)."""
  if not (0 <= c <= n) or k < 1:
    raise ValueError(f"need 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
  if k > n:
    raise ValueError(f"pass@{k} needs at least k samples, got n={n}")
  if n - c < k:
    return 1.0
  p = 1.0
  for i in range(n - c + 1, n + 1):
    p *= 1.0 - k / i
  return 1.0 - p


Generator = Callable[[Sequence[Problem], int], list[list[str]]]
"""A translator: (problems, n) -> n candidate codes per problem (plug in any model)."""


def evaluate(
  generator: Generator,
  problems: Sequence[Problem],
  *,
  n: int = 1,
  ks: Sequence[int] = (1,),
  timeout_s: float = 10.0,
  workers=None,
  cache_dir=None,
  progress: bool = True,
  unsafe_no_isolation: bool = False,
) -> dict[str, Any]:
  """Translate with ``generator`` and score by execution (in ``jaxeff.sandbox``): per problem the outcomes, c, and pass@k; overall
  computational accuracy (any of n passes when n = 1: pass@1) and mean pass@k."""
  if any(k > n for k in ks):
    raise ValueError(f"pass@k needs k <= n; got ks={list(ks)} with n={n}")
  if not problems:
    raise ValueError("evaluate: no problems to score (an accuracy over zero problems is not 0)")
  cands = generator(problems, n)
  if len(cands) != len(problems) or any(len(c) != n for c in cands):
    raise ValueError("the generator must return n candidates for every problem")
  flat_p = [p for p, cs in zip(problems, cands) for _ in cs]
  flat_c = [c for cs in cands for c in cs]
  outs = run_many_candidates(
    flat_p,
    flat_c,
    timeout_s=timeout_s,
    workers=workers,
    cache_dir=cache_dir,
    progress=progress,
    unsafe_no_isolation=unsafe_no_isolation,
  )
  per = []
  for i, p in enumerate(problems):
    o = outs[i * n : (i + 1) * n]
    c = sum(x.success for x in o)
    per.append({"stem": p.stem, "c": c, "statuses": [x.status for x in o]})
  report = {
    "direction": f"{problems[0].src_lang}->{problems[0].tgt_lang}" if problems else "",
    "problems": len(problems),
    "n": n,
    "pass@k": {str(k): sum(pass_at_k(n, r["c"], k) for r in per) / max(len(per), 1) for k in ks},
    "computational_accuracy": sum(r["c"] > 0 for r in per) / max(len(per), 1) if n == 1 else None,
    "per_problem": per,
  }
  return report


def gold_generator(problems: Sequence[Problem], n: int) -> list[list[str]]:
  """The target language's own f_gold as the candidate: the harness self-check."""
  return [[p.tgt_gold] * n for p in problems]
