"""`jaxeff sweep` and `jaxeff fit`: scaling-law training sweeps and the Chinchilla / Farseer fits."""

from __future__ import annotations

import json

from jaxeff.cli.common import (
  JoinedList,
  count,
  floats,
  positive_float,
)


def register_sweep(sub) -> None:
  """Add the `sweep` sub-command to ``sub``."""
  sw = sub.add_parser(
    "sweep",
    help="run a scaling sweep (one training run per (N, D) point) into a results table",
    description="Train one model per point of a grid or IsoFLOP design, each with its own cosine schedule ending "
    "at its token budget, and append (N, D, C, held-out loss, bits/byte) to WORKDIR/results.csv. Re-running skips "
    "finished points and resumes a killed one from its checkpoint.",
  )
  sw.add_argument(
    "--out",
    "--workdir",
    dest="out",
    required=True,
    help="folder for the runs and results.csv (--workdir: the old name, still accepted)",
  )
  sw.add_argument("--design", choices=("grid", "isoflop"), default="grid", help="point design (default: grid)")
  sw.add_argument(
    "--sizes",
    nargs="+",
    action=JoinedList,
    default="32x2,48x2,64x2",
    help="model sizes as d_model x layers, comma-separated (default: %(default)s)",
  )
  sw.add_argument(
    "--tokens",
    nargs="+",
    action=JoinedList,
    default="100000,200000,400000",
    help="grid: token budgets D, comma-separated (default: %(default)s)",
  )
  sw.add_argument(
    "--budgets",
    nargs="+",
    action=JoinedList,
    default="1e11,3e11",
    help="isoflop: compute budgets C = 6ND (default: %(default)s)",
  )
  sw.add_argument(
    "--corpus",
    default="python",
    help="training corpus or mixture, e.g. 'python' or 'python:0.5,gcide:0.5' (default: %(default)s)",
  )
  sw.add_argument("--eval-corpus", default=None, help="held-out corpus (default: the first training corpus)")
  sw.add_argument("--seq-len", type=count, default=128, help="context length of every run (default: %(default)s)")
  sw.add_argument("--batch-size", type=count, default=32, help="rows per step (default: %(default)s)")
  sw.add_argument("--lr", type=positive_float, default=3e-3, help="peak learning rate (default: %(default)s)")
  sw.add_argument(
    "--shard",
    default=None,
    metavar="K/N",
    help="run only points K, K+N, K+2N, ... into results-K-of-N.csv (one shard per host or TPU slice; "
    "`jaxeff fit --results` takes the tables comma-separated)",
  )
  sw.add_argument("--dry-run", action="store_true", help="print the points (N, D, C) and exit")
  sw.add_argument("--json", action="store_true", help="print one JSON object instead of text")
  sw.set_defaults(func=_cmd_sweep)


def register_fit(sub) -> None:
  """Add the `fit` sub-command to ``sub``."""
  fi = sub.add_parser(
    "fit",
    help="fit a Chinchilla or Farseer law to a results table and report compute-optimal allocation",
    description="Fit L(N, D) to a CSV with columns N, D and loss (a `jaxeff sweep` table or your own runs), print "
    "the parameters, in-range relative error, and optimal N, D and D/N at the given budgets; optionally plot.",
  )
  fi.add_argument(
    "--results",
    nargs="+",
    action=JoinedList,
    required=True,
    help="CSV table(s) with N, D and loss columns, comma-separated",
  )
  fi.add_argument(
    "--columns",
    nargs="+",
    action=JoinedList,
    default="N,D,loss",
    help="the table's names for the parameter count, token count and loss columns (default: %(default)s)",
  )
  fi.add_argument("--law", choices=("chinchilla", "farseer"), default="chinchilla", help="law (default: chinchilla)")
  fi.add_argument(
    "--solver",
    default=None,
    help="chinchilla: 'huber' (Approach 3, default) or 'vp' (variable projection); farseer: 'piecewise' (default) "
    "or 'direct'",
  )
  fi.add_argument(
    "--budgets",
    nargs="+",
    action=JoinedList,
    default=None,
    help="compute budgets C = 6ND for the allocation table, comma-separated (default: the table's own range: its "
    "smallest, median and largest 6ND, and 10x the largest; budgets far beyond the data are extrapolations)",
  )
  fi.add_argument("--plot", default=None, help="write a PNG figure here")
  fi.add_argument("--json", action="store_true", help="print one JSON object")
  fi.set_defaults(func=_cmd_fit)


def _cmd_sweep(args) -> int:
  from jaxeff.scaling import sweep as sw

  sizes = []
  for part in args.sizes.split(","):
    d, _, l = part.partition("x")
    if not (d.isdigit() and l.isdigit()):
      raise ValueError(f"--sizes: expected d_modelxlayers like 32x2, got {part!r}")
    sizes.append((int(d), int(l)))
  if args.design == "grid":
    points = sw.grid_design(
      sizes,
      [int(t) for t in floats(args.tokens, "--tokens", whole=True)],
      corpus=args.corpus,
      eval_corpus=args.eval_corpus,
    )
  else:
    points = sw.isoflop_design(
      floats(args.budgets, "--budgets"),
      sizes,
      corpus=args.corpus,
      eval_corpus=args.eval_corpus,
    )
  table = None
  if args.shard:
    k, _, n = args.shard.partition("/")
    if not (k.isdigit() and n.isdigit() and 0 <= int(k) < int(n)):
      raise ValueError(f"--shard must be K/N with 0 <= K < N, got {args.shard!r}")
    points = points[int(k) :: int(n)]
    from pathlib import Path

    table = Path(args.out) / f"results-{k}-of-{n}.csv"
  plan = [{"name": p.name, "N": sw.count_params(p.model), "D": p.tokens} for p in points]
  for r in plan:
    r["C"] = 6 * r["N"] * r["D"]
    if not args.json:
      print(f"{r['name']:40s} N={r['N']:>9d} D={r['D']:>11d} C={r['C']:.3g}")
  if args.dry_run:
    if args.json:
      print(json.dumps({"points": plan}))
    return 0
  rows = sw.run_sweep(points, args.out, table=table, seq_len=args.seq_len, batch_size=args.batch_size, lr=args.lr)
  where = str(table or f"{args.out}/results.csv")
  if args.json:
    print(json.dumps({"points": plan, "rows": len(rows), "table": where}))
    return 0
  print(f"{len(rows)} rows in {where}")
  return 0


def _cmd_fit(args) -> int:
  import warnings

  from jaxeff.scaling import laws
  from jaxeff.scaling.sweep import read_table, table_arrays

  if args.plot:
    from jaxeff.io import check_output_file, require

    require("matplotlib", "fit --plot", "plot")
    check_output_file(args.plot, "--plot")
  columns = [c.strip() for c in args.columns.split(",")]
  N, D, L = table_arrays([row for path in args.results.split(",") if path for row in read_table(path, columns)])
  if args.budgets is None:
    import numpy as np

    C = 6 * np.asarray(N, float) * np.asarray(D, float)
    budgets = [float(C.min()), float(np.median(C)), float(C.max()), float(10 * C.max())]
  else:
    budgets = floats(args.budgets, "--budgets")
  if args.law == "chinchilla":
    method = args.solver or "huber"
    if method not in ("huber", "vp"):
      raise ValueError(f"--solver for chinchilla must be 'huber' or 'vp', got {method!r}")
    fit = laws.fit_chinchilla(N, D, L) if method == "huber" else laws.fit_chinchilla_vp(N, D, L)
  else:
    method = args.solver or "piecewise"
    if method not in ("piecewise", "direct"):
      raise ValueError(f"--solver for farseer must be 'piecewise' or 'direct', got {method!r}")
    fit = laws.fit_farseer(N, D, L, method=method)
  import dataclasses

  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    alloc = [laws.optimal_allocation(fit, c, n_range=(N.min(), N.max())) for c in budgets]
  out = {
    "law": args.law,
    "method": method,
    "points": len(N),
    "params": dataclasses.asdict(fit.params),
    "objective": fit.objective,
    "mean_relative_error": laws.mean_relative_error(fit, N, D, L),
    "allocation": [{"C": a.C, "N": a.N, "D": a.D, "tokens_per_param": a.tokens_per_param} for a in alloc],
    "warnings": [str(w.message) for w in caught],
  }
  if args.plot:
    from jaxeff.scaling.plots import plot_fits

    plot_fits(N, D, L, {f"{args.law} ({method})": fit}, args.plot, budgets=budgets)
    out["plot"] = args.plot
  if args.json:
    print(json.dumps(out, indent=2, default=float))
    return 0
  print(f"{args.law} ({method}) on {len(N)} points: " + ", ".join(f"{k}={v:.6g}" for k, v in out["params"].items()))
  print(f"mean relative error {out['mean_relative_error']:.4%}")
  for a in out["allocation"]:
    print(f"C={a['C']:.3g}: N_opt={a['N']:.4g} D_opt={a['D']:.4g} D/N={a['tokens_per_param']:.3g}")
  for w in out["warnings"]:
    print("warning:", w)
  return 0
