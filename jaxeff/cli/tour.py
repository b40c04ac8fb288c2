"""`jaxeff tour`: the ten methods at small settings, one table and report.html."""

from __future__ import annotations

import json

from jaxeff.cli.common import JoinedList, locks_out


def register(sub) -> None:
  """Add the `tour` sub-command to ``sub``."""
  to = sub.add_parser(
    "tour",
    help="start here: every method at a small setting on the embedded models, one table and an HTML report",
    description="Run each of the ten methods (ProxyAttn, CommonKV, Judge Q, CAMERA, SeerSC, scaling-law fits, "
    "two-stage code translation, TC-Bench WrongSelect, CoT robustness and GradS on linear self-attention) at a small "
    "setting next to its baseline, print one table (method, what it saves, quality vs baseline, time) and write "
    "OUT/report.html with the figures, OUT/tour.json and the PNGs. About 2-3 minutes on 2 CPU cores.",
  )
  to.add_argument(
    "--out", default="runs/tour", help="folder for report.html, tour.json, figures (default: %(default)s)"
  )
  to.add_argument(
    "--only",
    nargs="+",
    action=JoinedList,
    default=None,
    help="comma-separated stops to run (default: all): proxyattn, commonkv, judgeq, camera, seersc, scaling, "
    "codetrans, tcbench, cot, grads",
  )
  to.add_argument("--quick", action="store_true", help="even smaller settings (about half the time; the CI test)")
  to.add_argument("--json", action="store_true", help="print the tour's rows as one JSON object (no progress text)")
  to.set_defaults(func=_cmd_tour)


@locks_out("tour")
def _cmd_tour(args) -> int:
  try:
    import matplotlib

    matplotlib.use("Agg")  # figures go to files (this process only)
  except ImportError:
    pass  # run_tour says what to install
  from jaxeff.tour import run_tour

  only = [x.strip() for x in args.only.split(",") if x.strip()] if args.only else None
  rows = run_tour(args.out, only=only, quick=args.quick, log=None if args.json else print)
  if args.json:
    print(json.dumps({"rows": rows, "report": f"{args.out}/report.html"}, default=str))
  return 0
