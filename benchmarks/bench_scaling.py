"""Scaling laws: fit times and the code-vs-prose study, redesigned so that it can resolve the claims, in one run.

  python benchmarks/bench_scaling.py            # ~45-60 minutes on 2 cores (resumable: finished runs are reused)
  python benchmarks/bench_scaling.py --quick    # fit timings and a tiny sweep, no results file

1. Fit time (median of 3, compile reported apart) of Chinchilla's 4,500-start grid and of Farseer (the verified
   stage 1 + joint fit, and direct) on a 36-point table (6 N x 6 D, 1 % log-normal noise).
2. The study: byte-level models of 5 sizes (32k-814k non-embedding parameters, 25x) trained from scratch with
   one cosine schedule per run ending at its budget: an Approach-3 grid of 4 budgets (51k-410k tokens, 100-800
   steps of 4 x 128 tokens), IsoFLOP runs at C = 2e10 / 6e10 / 2e11 (Approach 2, a cross-check; code also at
   3e11 and 1e12, up to 5.1M tokens, where the small models stop being data-limited), and 2 more seeds at two
   points, on stdlib code ("python") and on English prose ("pydoc": the language reference's topics; the
   largest budget stays inside one epoch). Approach 3 gives the compute-optimal D/N at C = 6e10 with bootstrap
   and leave-one-size-out intervals, code vs prose as a ratio with its interval; both laws are fitted on the
   budgets below the largest and scored on it, with a bootstrap interval on the error difference. Verdicts:
   reproduced / contradicted / not resolvable at this scale. Figures: ``scaling_code.png``, ``scaling_text.png``.

Writes ``benchmarks/results/scaling.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

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
  from jaxeff.training.data import corpus_texts

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

  # 2. the study (redesigned): 5 sizes over 25x parameters, hundreds of steps, grid + IsoFLOP, prose vs code
  if args.quick:
    sizes, tokens, iso_C, seed_points = [(32, 2), (48, 2), (64, 3), (96, 3)], [25600, 51200], [], []
    iso_extra = {}
  else:
    sizes = [(32, 2), (48, 2), (64, 3), (96, 3), (128, 4)]
    tokens = [51200, 102400, 204800, 409600]  # 100-800 steps of 4 x 128 tokens; prose train split holds 449k
    iso_C = [2e10, 6e10, 2e11]
    # code only: two larger IsoFLOP budgets (61k-5.1M tokens per run) where the small models are no longer
    # data-limited, so the profiles can turn; prose's train split (449 KB) cannot hold them in one epoch
    iso_extra = {"code": [3e11, 1e12]}
    seed_points = [((64, 3), 102400), ((64, 3), 409600)]  # two more seeds each: run-to-run noise
  kw = dict(seq_len=128, batch_size=4, progress=True)
  arms = {"code": "python", "text": "pydoc"}
  tables, sweep_s, arm_iso, epoch_tokens = {}, {}, {}, {}
  for arm, corpus in arms.items():
    t0 = time.perf_counter()
    pts = sw.grid_design(sizes, tokens, corpus=corpus)
    # byte-level: one token per byte; every run stays inside one epoch of the arm's train split
    epoch_tokens[arm] = sum(len(t.encode("utf-8")) for t in corpus_texts(corpus, "train"))
    arm_iso[arm] = iso_C + iso_extra.get(arm, [])
    iso = [
      p
      for p in sw.isoflop_design(arm_iso[arm], sizes, corpus=corpus)
      if 40000 <= p.tokens <= min(epoch_tokens[arm] - 9000, 6_000_000)
    ]
    grid_names = {q.name for q in pts}
    pts += [p for p in iso if p.name not in grid_names]
    for (d, l), D in seed_points:
      pts += sw.grid_design([(d, l)], [D], corpus=corpus, seeds=(1, 2))
    names = {p.name for p in pts}
    rows = sw.run_sweep(pts, os.path.join(args.workdir, arm), **kw)
    # training time of every run in the table (resumed runs keep the seconds they took) and this call's wall time
    sweep_s[arm] = {"runs_total": float(sum(r["seconds"] for r in rows)), "this_call": time.perf_counter() - t0}
    # one row per trained (N, D, seed): a point that rounds onto another's token count (whole batches; e.g. the
    # 1e12 IsoFLOP run of the largest model and its 204,800-token grid run) is the same run and counts once
    seen, tables[arm] = set(), []
    for r in rows:
      key = (r["N"], r["D"], r.get("seed"))
      if r["name"] in names and key not in seen:
        seen.add(key)
        tables[arm].append(r)
    print(
      f"{arm}: {len(tables[arm])} runs, {sweep_s[arm]['runs_total']:.0f} s of training ({sweep_s[arm]['this_call']:.0f} s in this call)",
      flush=True,
    )
  study, targets = analyse_study(tables, tokens, arm_iso, sizes, quick=args.quick)
  for arm in arms:
    if not args.quick:
      N, D, L = sw.table_arrays(tables[arm])
      plot_fits(N, D, L, {"Chinchilla": S.fit_chinchilla(N, D, L)}, RESULTS / f"scaling_{arm}.png", title=arm)
  targets.append(
    target("Chinchilla 4,500-start fit on 36 points, seconds (median)", t_chin, 10.0, higher_is_better=False)
  )
  targets.append(target("Farseer piecewise fit on 36 points, seconds (median)", t_far, 10.0, higher_is_better=False))
  for t in targets:
    print(t)
  if args.quick:
    return
  results = {
    "fit_timings": timings,
    "study": study,
    "sweep_seconds": sweep_s,
    "settings": {
      "sizes": sizes,
      "tokens": tokens,
      "isoflop_C": arm_iso,
      "train_split_tokens": epoch_tokens,
      "seed_points": seed_points,
      "seq_len": 128,
      "batch_size": 4,
      "corpora": arms,
      "command": "python benchmarks/bench_scaling.py",
    },
    "figures": [f"scaling_{a}.png" for a in arms],
  }
  print("wrote", write_results("scaling", results, targets))


def _fit_quiet(fn, *a, **k):
  """A fit, or the reason it was refused (too little data, no minimum): the study records refusals."""
  import warnings as w

  from jaxeff.scaling import laws as S

  with w.catch_warnings():
    w.simplefilter("ignore")
    try:
      return fn(*a, **k), None
    except (ValueError, S.FitError) as e:
      return None, str(e)[:300]


def _opt(fit, C):
  """Compute-optimal D/N of a fit at C, or None when the fitted law has none (a non-positive exponent)."""
  from jaxeff.scaling import laws as S

  try:
    return S.optimal_allocation(fit, C).tokens_per_param
  except ValueError:
    return None


def analyse_study(tables, tokens, iso_C, sizes, *, quick=False, boots=200, seed=0):
  """Approach 3 (Chinchilla fit on every run) with bootstrap and leave-one-size-out intervals on the
  compute-optimal D/N, Approach 2 (IsoFLOP parabolas; ``iso_C``: arm -> its budgets) as a cross-check, and
  Farseer vs Chinchilla extrapolation from the grid's smaller budgets to its largest one (``max(tokens)``; runs
  beyond it, the larger IsoFLOP budgets, are left out of that test) with a bootstrap interval on the error
  difference. Returns (study, targets)."""
  from jaxeff.scaling import laws as S
  from jaxeff.scaling import sweep as sw

  rng = np.random.default_rng(seed)
  starts = S.hoffmann_starts()[::9]  # 500 of the 4,500 grid starts per bootstrap refit
  C_ref = 6e10
  study, ratio_samples = {}, {}
  for arm, rows in tables.items():
    N, D, L = sw.table_arrays(rows)
    entry = {"runs": len(rows), "C_ref": C_ref}
    fit, why = _fit_quiet(S.fit_chinchilla, N, D, L)
    if fit is None:
      entry["chinchilla_refused"] = why
      study[arm] = entry
      continue
    entry["chinchilla"] = {k: float(v) for k, v in fit.params.__dict__.items()}
    entry["in_range_rel_error"] = S.mean_relative_error(fit, N, D, L)
    r0 = _opt(fit, C_ref)
    samples = []
    for _ in range(0 if quick else boots):
      i = rng.integers(0, len(N), len(N))
      f, _ = _fit_quiet(S.fit_chinchilla, N[i], D[i], L[i], starts=starts)
      r = None if f is None else _opt(f, C_ref)
      if r is not None:
        samples.append(r)
    ratio_samples[arm] = np.array(samples)
    loo = {}
    for n in np.unique(N):
      keep = N != n
      f, _ = _fit_quiet(S.fit_chinchilla, N[keep], D[keep], L[keep])
      loo[str(int(n))] = None if f is None else _opt(f, C_ref)
    entry["optimal_D_over_N_at_C_ref"] = {
      "approach3": r0,
      "bootstrap_ci95": [float(np.quantile(samples, 0.025)), float(np.quantile(samples, 0.975))] if samples else None,
      "bootstrap_n": len(samples),
      "leave_one_size_out": loo,
    }
    # Approach 2: per IsoFLOP budget, a parabola of loss in log N through its runs -> N_opt(C)
    iso = {}
    for C in iso_C.get(arm, []):
      sel = np.abs(6 * N * D / C - 1) < 0.02
      if sel.sum() >= 3:
        a, b, c = np.polyfit(np.log(N[sel]), L[sel], 2)
        n_opt = float(np.exp(-b / (2 * a))) if a > 0 else None
        iso[f"{C:g}"] = {
          "runs": int(sel.sum()),
          "N_opt": n_opt,
          "D_over_N": None if n_opt is None else C / (6 * n_opt) / n_opt,
          "approach3_D_over_N": _opt(fit, C),
          "interior": bool(n_opt is not None and N[sel].min() < n_opt < N[sel].max()),
        }
    entry["isoflop"] = iso
    # extrapolation: fit on the budgets below the grid's largest, score on that largest budget
    top = max(tokens)
    train, test = D < top, np.abs(D / top - 1) < 1e-9
    ext = {}
    fits = {"chinchilla": _fit_quiet(S.fit_chinchilla, N[train], D[train], L[train])}
    fits["farseer"] = _fit_quiet(S.fit_farseer, N[train], D[train], L[train], method="direct")
    for k, (f, why) in fits.items():
      ext[k] = S.mean_relative_error(f, N[test], D[test], L[test]) if f is not None else f"refused: {why}"
    diffs = []
    if all(f is not None for f, _ in fits.values()) and not quick:
      tr_idx = np.flatnonzero(train)
      for _ in range(60):
        i = rng.choice(tr_idx, len(tr_idx))
        fc, _ = _fit_quiet(S.fit_chinchilla, N[i], D[i], L[i], starts=starts)
        ff, _ = _fit_quiet(S.fit_farseer, N[i], D[i], L[i], method="direct")
        if fc is not None and ff is not None:
          diffs.append(
            S.mean_relative_error(fc, N[test], D[test], L[test]) - S.mean_relative_error(ff, N[test], D[test], L[test])
          )
    ext["chinchilla_minus_farseer_ci95"] = (
      [float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))] if diffs else None
    )
    ext["bootstrap_n"] = len(diffs)
    entry["extrapolation_rel_error"] = ext
    if isinstance(ext.get("chinchilla_minus_farseer_ci95"), list):
      lo, hi = ext["chinchilla_minus_farseer_ci95"]
      entry["verdict_farseer_extrapolates_better"] = (
        "reproduced" if lo > 0 else "contradicted" if hi < 0 else "not resolvable at this scale"
      )
    else:
      entry["verdict_farseer_extrapolates_better"] = "not resolvable at this scale (a fit was refused)"
    study[arm] = entry
    print(arm, {k: v for k, v in entry.items() if k not in ("chinchilla",)}, flush=True)
  targets = []
  if "code" in ratio_samples and "text" in ratio_samples and len(ratio_samples["code"]) and len(ratio_samples["text"]):
    rc, rt = ratio_samples["code"], ratio_samples["text"]
    m = min(len(rc), len(rt))
    ratio = rc[:m] / rt[:m]  # independent bootstraps of the two arms, paired by draw index
    lo, hi = float(np.quantile(ratio, 0.025)), float(np.quantile(ratio, 0.975))
    point = (
      study["code"]["optimal_D_over_N_at_C_ref"]["approach3"] / study["text"]["optimal_D_over_N_at_C_ref"]["approach3"]
    )
    verdict = "reproduced" if lo > 1 else "contradicted" if hi < 1 else "not resolvable at this scale"
    study["code_vs_text_D_over_N"] = {"ratio": point, "ci95": [lo, hi], "verdict": verdict}
    targets.append(
      {
        "name": "claim: code needs a higher compute-optimal D/N than prose (Approach 3 at C = 6e10; ratio > 1 with "
        "its 95 % interval above 1 = reproduced)",
        "measured": round(point, 4),
        "target": 1.0,
        "met": bool(lo > 1),
        "ci95": [lo, hi],
        "verdict": verdict,
      }
    )
  for arm in tables:
    v = study.get(arm, {}).get("verdict_farseer_extrapolates_better")
    if v:
      e = study[arm]["extrapolation_rel_error"]
      targets.append(
        {
          "name": f"claim ({arm}): Farseer extrapolates to the largest budget better than Chinchilla",
          "measured": {k: e[k] for k in ("chinchilla", "farseer")},
          "target": "Chinchilla error - Farseer error > 0 with its interval",
          "met": v == "reproduced",
          "ci95": e.get("chinchilla_minus_farseer_ci95"),
          "verdict": v,
        }
      )
  return study, targets


if __name__ == "__main__":
  main()
