"""`jaxeff theory`: the linear-self-attention experiments."""

from __future__ import annotations

import json

from jaxeff.cli.common import locks_out


def register(sub) -> None:
  """Add the `theory` sub-command to ``sub``."""
  th = sub.add_parser(
    "theory",
    help="run the linear-self-attention theory experiments (E1-E9, ICL) and write JSON + figures",
    description="E1 ZFB gradient flow vs Gamma^-1; E2 Adam-trained LSA vs R*; E3 L layers = L GD steps; E4 depth "
    "sweep; E5 GradS score = leave-one-out; E6 / E6b GradS selection and its known failure; E7 depth amplification; "
    "E8 CoT bound vs measured fluctuation; E9 Lemma-1 constants; ICL GradS vs baselines on tiny-arith.",
  )
  th.add_argument("action", choices=("run",), help="run: run the named experiments")
  th.add_argument("experiments", nargs="*", help="experiment ids (default: all): E1 .. E9, E6b, ICL")
  th.add_argument("--out", default="runs/theory", help="folder for <id>.json and <id>.png (default: %(default)s)")
  th.add_argument("--small", action="store_true", help="CI-sized settings (seconds each)")
  th.add_argument("--json", action="store_true", help="print one JSON object instead of text")
  th.set_defaults(func=_cmd_theory)


@locks_out("theory")
def _cmd_theory(args) -> int:
  from jaxeff.theory import experiments as X

  ids = args.experiments or list(X.EXPERIMENTS)
  bad = [e for e in ids if e not in X.EXPERIMENTS]
  if bad:
    raise ValueError(f"unknown experiments {bad}; choose from {', '.join(X.EXPERIMENTS)}")
  done = {}
  for eid in ids:
    res = X.run(eid, args.out, small=args.small)
    done[eid] = {"seconds": res["seconds"], "json": f"{args.out}/{eid}.json"}
    if not args.json:
      print(f"{eid}: {res['seconds']:.1f}s -> {args.out}/{eid}.json")
  if args.json:
    print(json.dumps({"experiments": done}))
  return 0
