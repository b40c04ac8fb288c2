"""What isolation costs: the same programs and tests through ``jaxeff.sandbox`` with bubblewrap (namespaces,
cgroups, streamed output) and with ``unsafe_no_isolation=True`` (resource limits only: the sandbox before
isolation), side by side, arms interleaved in rounds so both see the same machine load.

Per arm: executions per second (programs x tests, compile included, ``workers`` in parallel) for trivial C++
programs (TC-Bench's language), trivial Python programs (code translation's) and C++ programs that compute for
~0.1 s per test, and the per-run overhead of one sandboxed execution of a trivial program. The target is judged
on the trivial programs, where the fixed cost of the namespaces weighs most. Results go into ``benchmarks/results/tcbench.json`` and ``codetrans.json`` (key ``sandbox``; target:
isolation costs at most 1.5x per execution).

    python benchmarks/bench_sandbox.py [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import RESULTS, machine  # noqa: E402
from jaxeff.sandbox import Limits, Program, isolation_problem, run_many  # noqa: E402

CPP = '#include <cstdio>\nint main(){long n;scanf("%ld",&n);printf("%ld\\n",n*n+K);}'
PY = "n = int(input())\nprint(n * n + K)"
# a test that computes for ~0.1 s, like a typical accepted solution on a mid-sized test
CPP_WORK = (
  '#include <cstdio>\nint main(){long n;scanf("%ld",&n);volatile long s=0;for(long i=0;i<60000000;i++)s+=i;'
  'printf("%ld\\n",n*n+K);}'
)


def _arm(programs, tests, workers: int, unsafe: bool) -> tuple[float, list[str]]:
  t0 = time.perf_counter()
  res = run_many(programs, tests, Limits(time_s=1.0), workers=workers, unsafe_no_isolation=unsafe)
  return time.perf_counter() - t0, [v.status for vs in res for v in vs]


def measure(lang: str, n_programs: int, n_tests: int, rounds: int, workers: int) -> dict:
  src = {"cpp": CPP, "python": PY, "cpp-work": CPP_WORK}[lang]
  lang = lang.split("-")[0]
  tests = [(f"{i}\n", f"{i * i}\n") for i in range(n_tests)]
  times = {"isolated": [], "unsafe": []}
  statuses = {}
  for r in range(rounds):  # fresh sources every round (no compiler caches), arms interleaved
    progs = [Program(src.replace("K", f"0*{r * 1000 + k}"), lang) for k in range(n_programs)]
    for arm in ("isolated", "unsafe") if r % 2 == 0 else ("unsafe", "isolated"):
      dt, st = _arm(progs, tests, workers, arm == "unsafe")
      times[arm].append(dt)
      statuses[arm] = sorted(set(st))
  n = n_programs * n_tests
  iso, uns = statistics.median(times["isolated"]), statistics.median(times["unsafe"])
  return {
    "program": src,
    "lang": lang,
    "programs": n_programs,
    "tests": n_tests,
    "rounds": rounds,
    "workers": workers,
    "seconds_median": {"isolated": iso, "unsafe": uns},
    "executions_per_s": {"isolated": n / iso, "unsafe": n / uns},
    "cost_ratio": iso / uns,
    "statuses": statuses,
  }


def per_run_overhead(repeats: int) -> dict:
  """Wall time of one sandboxed run of a trivial compiled program, isolated vs not (compile excluded)."""
  prog = Program("int main(){return 0;}", "cpp")
  out = {}
  for arm, unsafe in (("isolated", False), ("unsafe", True)):
    res = run_many([prog], [("", None)] * repeats, Limits(time_s=1.0), workers=1, unsafe_no_isolation=unsafe)
    out[arm] = statistics.median(v.seconds for v in res[0])
  out["overhead_s"] = out["isolated"] - out["unsafe"]
  return out


def merge(area: str, entry: dict, targets: list[dict]) -> Path:
  path = RESULTS / f"{area}.json"
  data = json.loads(path.read_text()) if path.is_file() else {"results": {}, "targets": []}
  data["results"]["sandbox"] = entry
  names = {t["name"] for t in targets}
  data["targets"] = [t for t in data.get("targets", []) if t["name"] not in names] + targets
  data["machine"], data["date"] = machine(), time.strftime("%Y-%m-%d")
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(data, indent=2) + "\n")
  tmp.replace(path)
  return path


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per language (default: %(default)s)")
  ap.add_argument("--workers", type=int, default=2, help="programs in parallel (default: %(default)s)")
  ap.add_argument("--no-write", action="store_true", help="print only")
  args = ap.parse_args(argv)
  why = isolation_problem()
  if why is not None:
    raise SystemExit(f"the sandbox cannot isolate here ({why}); nothing to compare")
  over = per_run_overhead(30)
  print("per-run (trivial C++ program):", over, flush=True)
  rows = {}
  for lang, n_prog, n_tests in (("cpp", 8, 20), ("python", 8, 10), ("cpp-work", 4, 5)):
    rows[lang] = measure(lang, n_prog, n_tests, args.rounds, args.workers)
    print(lang, json.dumps(rows[lang]), flush=True)
  entry = {"per_run": over, **rows}
  for area, lang in (("tcbench", "cpp"), ("codetrans", "python")):
    t = {
      "name": f"isolation cost per execution ({lang}, trivial programs: bwrap sandbox / limits only, same "
      "programs and tests)",
      "measured": round(rows[lang]["cost_ratio"], 3),
      "target": 1.5,
      "met": bool(rows[lang]["cost_ratio"] <= 1.5),
    }
    print(t)
    if not args.no_write:
      print("wrote", merge(area, entry, [t]))


if __name__ == "__main__":
  main()
