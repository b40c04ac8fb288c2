"""`jaxeff tcbench`: code-test matrices, WrongSelect and HackRate."""

from __future__ import annotations

import json

from jaxeff.cli.common import (
  add_unsafe_option,
  count,
  nonneg_int,
  seed,
)


def register(sub) -> None:
  """Add the `tcbench` sub-command to ``sub``."""
  tc = sub.add_parser(
    "tcbench",
    help="TC-Bench: build code-test matrices, select wrong codes (WrongSelect), score generated tests",
    description="build: run every problem's wrong codes on its tests in the sandbox and write filtered failure "
    "matrices; select: WrongSelect on each matrix; evaluate: run the selected codes on generated tests and print "
    "the exclusion rate (HackRate@k) and the per-status table, after validating the generated tests with each "
    "problem's correct solutions; import: convert the released TC-Bench rows (--released, a local .jsonl / "
    ".parquet) into problems and golden matrices. Formats are in `jaxeff.tcbench.pipeline`.",
  )
  tc.add_argument("action", choices=("build", "select", "evaluate", "import"), help="which stage to run")
  tc.add_argument("--released", help="the released TC-Bench rows, a local .jsonl / .json / .parquet file (import)")
  tc.add_argument("--problems", help="problems JSONL (build, evaluate)")
  tc.add_argument("--matrices", help="matrices JSONL: written by build, read by select")
  tc.add_argument("--selections", help="selections JSONL: written by select, read by evaluate")
  tc.add_argument("--generated", help="generated tests JSONL (evaluate)")
  tc.add_argument(
    "--restarts", type=nonneg_int, default=0, help="WrongSelect shuffled restarts (default: %(default)s)"
  )
  tc.add_argument("--seed", type=seed, default=0, help="restart shuffles and HackRate test sampling (default: 0)")
  tc.add_argument(
    "--min-rank", type=nonneg_int, default=5, help="reject problems of lower rank (default: %(default)s)"
  )
  tc.add_argument(
    "--no-validate",
    action="store_true",
    help="evaluate: score generated tests as given, without validating them with the correct solutions",
  )
  tc.add_argument("--cache", default=None, help="verdict cache folder (re-runs execute nothing)")
  tc.add_argument("--workers", type=count, default=None, help="parallel programs (default: CPU count)")
  tc.add_argument(
    "--limits",
    choices=("tcbench", "strict"),
    default="tcbench",
    help="tcbench: the official runner's limits (time // 1000 + 3 s, 5x memory); strict: the problem's own limits "
    "(default: %(default)s)",
  )
  add_unsafe_option(tc)
  tc.add_argument("--json", action="store_true", help="print one JSON object (evaluate always does)")
  tc.set_defaults(func=_cmd_tcbench)


def _cmd_tcbench(args) -> int:
  from jaxeff.io import locked_file
  from jaxeff.tcbench import pipeline as tp

  need = {
    "build": ("problems", "matrices"),
    "select": ("matrices", "selections"),
    "evaluate": ("problems", "selections", "generated"),
    "import": ("released", "problems", "matrices"),
  }
  missing = [f"--{k}" for k in need[args.action] if not getattr(args, k)]
  if missing:
    raise ValueError(f"tcbench {args.action} needs {', '.join(missing)}")
  if args.action == "import":
    from jaxeff.io import write_jsonl

    problems, matrices = tp.load_released(args.released)
    write_jsonl(args.problems, problems)
    write_jsonl(args.matrices, matrices)
    if args.json:
      print(json.dumps({"problems": len(problems), "problems_file": args.problems, "matrices_file": args.matrices}))
      return 0
    print(f"{len(problems)} problems -> {args.problems}; golden matrices -> {args.matrices}")
    return 0
  if args.action in ("build", "select"):  # the output checked and locked before any work
    with locked_file(args.matrices if args.action == "build" else args.selections, "tcbench"):
      return _tcbench_write(args, tp)
  res = tp.evaluate(
    tp.read_selections(args.selections),
    tp.read_problems(args.problems, args.limits),
    tp.read_generated(args.generated),
    seed=args.seed,
    cache_dir=args.cache,
    workers=args.workers,
    limits=args.limits,
    validate=not args.no_validate,
    unsafe_no_isolation=args.unsafe_no_isolation,
  )
  print(json.dumps(res, indent=2))
  return 0


def _tcbench_write(args, tp) -> int:
  from jaxeff.io import write_jsonl

  if args.action == "build":
    problems = tp.read_problems(args.problems, args.limits)
    out = tp.build(
      problems,
      cache_dir=args.cache,
      workers=args.workers,
      min_rank=args.min_rank,
      limits=args.limits,
      unsafe_no_isolation=args.unsafe_no_isolation,
    )
    write_jsonl(args.matrices, out)
    ok = [m for m in out if "rows" in m]
    if args.json:
      print(json.dumps({"kept": len(ok), "problems": len(out), "ranks": [m["rank"] for m in ok]}))
      return 0
    print(f"{len(ok)} of {len(out)} problems kept; ranks {[m['rank'] for m in ok]} -> {args.matrices}")
  elif args.action == "select":
    mats = tp.read_matrices(args.matrices)
    out = tp.select(mats, restarts=args.restarts, seed=args.seed)
    write_jsonl(args.selections, out)
    if args.json:
      print(json.dumps({"selections": len(out), "objectives": [x["objective"] for x in out]}))
      return 0
    print(f"{len(out)} selections (objectives {[round(x['objective'], 4) for x in out]}) -> {args.selections}")
  return 0
