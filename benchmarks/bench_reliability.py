"""How jaxeff answers bad input: every case of the bad-input table (``tests/bad_inputs.py``: corrupt checkpoints
and configs, malformed JSONL / CSV / YAML records, output paths that are files, impossible shapes, and a
non-number and a non-finite value for every numeric option of every command) run through ``jaxeff`` in-process,
each classified as a clear error (exit 2, one line naming the problem, no traceback, nothing written), a
traceback, a silent exit 0, an unclear or wrong message, output written, or a hang (over ``--limit-s``).

Writes ``benchmarks/results/reliability.json`` (targets: 100 % clear, 0 tracebacks, 0 silent results, 0 hangs).

    python benchmarks/bench_reliability.py [--limit-s 120]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import RESULTS, machine  # noqa: E402
from tests.bad_inputs import ALL, CASES, run_case  # noqa: E402


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--limit-s", type=int, default=120, help="seconds before a case counts as a hang (default: 120)")
  ap.add_argument("--no-write", action="store_true", help="print only")
  args = ap.parse_args(argv)
  verdicts: dict[str, str] = {}
  per_command: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  seconds = []
  with tempfile.TemporaryDirectory(prefix="jaxeff-reliability-") as tmp:
    for i, case in enumerate(ALL):
      out = run_case(case, Path(tmp) / f"case{i}", limit_s=args.limit_s)
      v = out.verdict(case)
      verdicts[case.id] = v
      per_command[case.argv[0]][v] += 1
      seconds.append(out.seconds)
      if v != "clear":
        print(f"{v:14s} {case.id}: exit {out.code}; {out.err.strip()[-300:]!r}", flush=True)
  counts = collections.Counter(verdicts.values())
  n = len(ALL)
  print(f"{n} cases ({len(CASES)} hand-written, {n - len(CASES)} option values): {dict(counts)}")
  results = {
    "cases": n,
    "hand_written": len(CASES),
    "option_values": n - len(CASES),
    "commands": len(per_command),
    "verdicts": dict(counts),
    "per_command": {k: dict(v) for k, v in sorted(per_command.items())},
    "not_clear": {k: v for k, v in verdicts.items() if v != "clear"},
    "seconds_total": round(sum(seconds), 2),
    "seconds_max_case": round(max(seconds), 2),
  }
  targets = [
    {"name": "bad inputs answered with one clear error (share)", "measured": counts["clear"] / n, "target": 1.0},
    {"name": "tracebacks", "measured": counts["traceback"], "target": 0},
    {"name": "silent results (exit 0 on bad input)", "measured": counts["silent"], "target": 0},
    {"name": f"hangs (over {args.limit_s} s)", "measured": counts["hang"], "target": 0},
  ]
  for t in targets:
    t["met"] = bool(t["measured"] >= t["target"] if t["target"] == 1.0 else t["measured"] <= t["target"])
    print(t)
  if not args.no_write:
    path = RESULTS / "reliability.json"
    data = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "results": results, "targets": targets}
    path.write_text(json.dumps(data, indent=2) + "\n")
    print("wrote", path)


if __name__ == "__main__":
  main()
