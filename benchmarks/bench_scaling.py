"""Scaling laws: fit times, the smoke sweep, and the code-vs-natural-language study in miniature, in one run.

  python benchmarks/bench_scaling.py            # about 10 minutes on 2 cores
  python benchmarks/bench_scaling.py --quick    # fit timings and a 4-run sweep only, no results file

1. Fit time (median of 3, compile reported apart) of Chinchilla's 4,500-start grid and of Farseer (piecewise
   with its joint polish, and direct) on a 36-point table (6 N x 6 D, 1 % log-normal noise).
2. The study: byte-level models of 3 sizes (d 32 / 48 / 64, 2 layers) x 4 token budgets (49k-393k tokens =
   bytes, one cosine schedule per run) on stdlib code and on GCIDE dictionary text (the same byte budgets),
   plus a 50/50 code/text mixture at two budgets evaluated on code. Both laws are fitted per arm on D <= 197k and
   scored on the held-out D = 393k runs (extrapolation) and in range; compute-optimal D/N per arm at the sweep's
   middle budget. Figures: ``benchmarks/results/scaling_code.png``, ``scaling_text.png``.

The full grid (6 sizes x 6 budgets, hours) is ``jaxeff sweep --sizes 32x2,48x2,64x2,80x3,96x3,112x4 --tokens
250000,500000,1000000,2000000,4000000,8000000``. Writes ``benchmarks/results/scaling.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

from benchmarks._common import RESULTS, target, write_results  # noqa: E402


def _timed(fn, repeats=3):
  t0 = time.perf_counter()
  out = fn()
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t0)
  return out, float(np.median(times)), first


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--quick", action="store_true", help="fit timings and a 4-run sweep, no results file")
  ap.add_argument("--workdir", default="runs/scaling_bench", help="sweep runs (resumable; default: %(default)s)")
  args = ap.parse_args(argv)

  from jaxeff.scaling import laws as S
  from jaxeff.scaling import sweep as sw
  from jaxeff.scaling.plots import plot_fits

  # 1. fit timings
  rng = np.random.default_rng(0)
  N36 = np.repeat(np.geomspace(1e7, 3e9, 6), 6)
  D36 = np.tile(np.geomspace(1e8, 3e11, 6), 6)
  Lc = S.chinchilla_predict(S.EPOCH, N36, D36) * np.exp(0.01 * rng.standard_normal(36))
  chin, t_chin, first_chin = _timed(lambda: S.fit_chinchilla(N36, D36, Lc))
  Nf = np.repeat(np.geomspace(2e8, 4e9, 6), 6)
  Df = np.tile(2e9 * 2.0 ** np.arange(6), 6)
  Lf = S.farseer_predict(S.CODE_FARSEER, Nf, Df) * np.exp(0.002 * rng.standard_normal(36))
  far, t_far, first_far = _timed(lambda: S.fit_farseer(Nf, Df, Lf, method="piecewise"))
  fard, t_fard, first_fard = _timed(lambda: S.fit_farseer(Nf, Df, Lf, method="direct"))
  timings = {
    "chinchilla_4500_starts_36_points_s": t_chin,
    "chinchilla_first_call_with_compile_s": first_chin,
    "chinchilla_recovered": {"alpha": chin.alpha, "beta": chin.beta, "E": chin.E},
    "farseer_piecewise_36_points_s": t_far,
    "farseer_piecewise_first_call_s": first_far,
    "farseer_direct_36_points_s": t_fard,
    "farseer_direct_first_call_s": first_fard,
    "farseer_in_range_rel_error": {
      "piecewise": S.mean_relative_error(far, Nf, Df, Lf),
      "direct": S.mean_relative_error(fard, Nf, Df, Lf),
    },
  }
  print("fit timings:", {k: v for k, v in timings.items() if k.endswith("_s")}, flush=True)

  # 2. the study
  sizes = [(32, 2), (48, 2), (64, 2)]
  tokens = [49152, 98304, 196608, 393216]  # steps of 32 x 128 tokens: 12, 24, 48, 96 (an exact ratio-2 grid)
  if args.quick:
    sizes, tokens = [(32, 2), (48, 2)], [25600, 51200]
  kw = dict(seq_len=128, batch_size=32, progress=True)
  arms = {"code": "python", "text": "gcide"}
  tables, sweep_s = {}, {}
  for arm, corpus in arms.items():
    t0 = time.perf_counter()
    pts = sw.grid_design(sizes, tokens, corpus=corpus)
    rows = sw.run_sweep(pts, os.path.join(args.workdir, arm), **kw)
    sweep_s[arm] = time.perf_counter() - t0
    tables[arm] = [r for r in rows if r["name"] in {p.name for p in pts}]
    print(f"{arm}: {len(tables[arm])} runs in {sweep_s[arm]:.0f} s (resumed runs take ~0 s)", flush=True)
  mix_pts = [
    p
    for D in (tokens[0], tokens[-1])
    for p in sw.grid_design([sizes[1]], [D], corpus="python:0.5,gcide:0.5", eval_corpus="python")
  ]
  t0 = time.perf_counter()
  mix_rows = sw.run_sweep(mix_pts, os.path.join(args.workdir, "mix"), **kw)
  sweep_s["mix"] = time.perf_counter() - t0
  mixture = []
  for r in mix_rows:
    pure = next(x for x in tables["code"] if x["d_model"] == r["d_model"] and x["D"] == r["D"])
    mixture.append({"D": r["D"], "N": r["N"], "code_loss_pure_code": pure["loss"], "code_loss_50_50": r["loss"]})
  print("mixture (code held-out loss):", mixture, flush=True)

  study, targets = {}, []
  mid_C = 6 * sw.count_params(sw.model_for(*sizes[len(sizes) // 2])) * tokens[len(tokens) // 2]
  for arm, rows in tables.items():
    N, D, L = sw.table_arrays(rows)
    fits = {"chinchilla": S.fit_chinchilla(N, D, L)}
    piecewise_ok = len(tokens) >= 3 and len(sizes) >= 3
    if piecewise_ok:
      fits["farseer"] = S.fit_farseer(N, D, L, method="piecewise")
    entry = {"runs": len(rows), "sweep_s": sweep_s[arm], "in_range_rel_error": {}, "params": {}}
    for name, f in fits.items():
      entry["in_range_rel_error"][name] = S.mean_relative_error(f, N, D, L)
      entry["params"][name] = {k: float(v) for k, v in f.params.__dict__.items()}
    train = D < D.max()
    if piecewise_ok and len(tokens) >= 4:
      ex = {"chinchilla": S.fit_chinchilla(N[train], D[train], L[train])}
      ex["farseer"] = S.fit_farseer(N[train], D[train], L[train], method="piecewise")
      entry["extrapolation_rel_error"] = {
        k: S.mean_relative_error(f, N[~train], D[~train], L[~train]) for k, f in ex.items()
      }
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      entry["optimal_tokens_per_param_at_mid_C"] = {
        k: S.optimal_allocation(f, mid_C).tokens_per_param for k, f in fits.items()
      }
    entry["mid_C"] = mid_C
    study[arm] = entry
    if not args.quick:
      plot_fits(N, D, L, fits, RESULTS / f"scaling_{arm}.png", title=f"{arm} ({arms[arm]})")
    print(arm, {k: v for k, v in entry.items() if k != "params"}, flush=True)

  targets.append(
    target("Chinchilla 4,500-start fit on 36 points, seconds (median)", t_chin, 10.0, higher_is_better=False)
  )
  targets.append(target("Farseer piecewise fit on 36 points, seconds (median)", t_far, 10.0, higher_is_better=False))
  if "extrapolation_rel_error" in study.get("code", {}):
    e = study["code"]["extrapolation_rel_error"]
    targets.append(
      {
        "name": "claim reproduced? Farseer extrapolates better than Chinchilla on code (error ratio chinchilla/farseer > 1)",
        "measured": round(e["chinchilla"] / e["farseer"], 4),
        "target": 1.0,
        "met": bool(e["chinchilla"] > e["farseer"]),
      }
    )
    rc = study["code"]["optimal_tokens_per_param_at_mid_C"]["chinchilla"]
    rt = study["text"]["optimal_tokens_per_param_at_mid_C"]["chinchilla"]
    targets.append(
      {
        "name": "claim reproduced? code needs a higher optimal D/N than text (Chinchilla fits, mid budget; ratio > 1)",
        "measured": round(rc / rt, 4),
        "target": 1.0,
        "met": bool(rc > rt),
      }
    )
  for t in targets:
    print(t)
  if args.quick:
    return
  results = {
    "fit_timings": timings,
    "study": study,
    "mixture_code_loss": mixture,
    "sweep_seconds": sweep_s,
    "settings": {"sizes": sizes, "tokens": tokens, "seq_len": 128, "batch_size": 32, "corpora": arms},
    "figures": [f"scaling_{a}.png" for a in arms],
  }
  print("wrote", write_results("scaling", results, targets))


if __name__ == "__main__":
  main()
