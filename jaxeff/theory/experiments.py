"""The theory experiments E1-E9 (and ICL: GradS on a real jaxeff model), each writing JSON and a PNG.

``run(eid, out_dir, small=False)`` returns the result dict; ``jaxeff theory run E1 E5 ...`` calls it. Ids follow
the spec: E1 ZFB gradient flow vs Gamma^-1; E2 Adam on the full ZFB layer vs R*; E3 L layers = L GD steps; E4 Ahn
depth sweep; E5 GradS score = leave-one-out; E6 / E6b selection (and its known failure); E7 depth
amplification; E8 CoT bound vs measured fluctuation (both regimes); E9 Lemma-1 constants on ZFB's theta*
(exploratory); ICL: GradS vs baselines choosing demonstrations for ``tiny-arith``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxeff.theory import cot_bound as cb
from jaxeff.theory import grads as gs
from jaxeff.theory import lsa
from jaxeff.theory import oracles as O

__all__ = ["EXPERIMENTS", "RUNNERS", "run", "icl"]

EXPERIMENTS = ("E1", "E2", "E3", "E4", "E5", "E6", "E6b", "E7", "E8", "E9", "ICL", "ICL-latent")


def _plt():
  import matplotlib

  matplotlib.use("Agg", force=False)
  import matplotlib.pyplot as plt

  return plt


def e1(small=False):
  cases = {
    "iso d5 N20": (np.eye(5), 20),
    "aniso d5 N20": (np.diag([2, 1.5, 1, 0.5, 0.25]), 20),
    "iso d10 N10": (np.eye(10), 10),
  }
  out = {}
  for name, (S, N) in cases.items():
    r = lsa.gradient_flow_uU(S, N, steps=5000 if small else 20000)
    G = O.gamma_matrix(S, N)
    Gi = np.linalg.inv(G)
    out[name] = {
      "uU_rel_error": float(np.abs(r["u"] * r["U"] - Gi).max() / np.abs(Gi).max()),
      "u_vs_inv_alpha_rel": abs(r["u"] - 1 / O.zfb_alpha(G)) * O.zfb_alpha(G),
      "conservation_drift": abs(r["conserved_end"] - r["conserved_start"]),
      "risk": r["risk"],
      "optimal_risk": O.optimal_risk(S, N),
    }
  return out


def e2(small=False):
  """Trained risk against R*, paired: the analytic optimum Gamma^-1 is scored on the same prompts. A Monte Carlo
  risk on 20,480 prompts is itself ~1-3 % off R* (heavy-tailed squared errors); the paired ratio is what
  tests the spec's <= 2 %."""
  d, n = 5, 20
  res = lsa.train_lsa(jax.random.key(0), d=d, n=n, steps=800 if small else 3000)
  WPV, WKQ = res["params"]
  A = float(WPV[d, d]) * np.asarray(WKQ[:d, :d])
  G = O.gamma_matrix(np.eye(d), n)
  paired = lsa.paired_risk_vs_optimum(
    res["predict"], res["params"], jax.random.key(1), d=d, n=n, prompts=4096 if small else 20480
  )
  return {
    "risk": paired["risk_a"],
    "optimum_same_prompts": paired["risk_b"],
    "ratio_to_optimum_same_prompts": paired["risk_a"] / paired["risk_b"],
    "excess_risk": paired["diff"],
    "excess_risk_ci95": paired["ci95"],
    "monte_carlo_se_of_risk": paired["se_a"],
    "optimal_risk": O.isotropic_risk(d, n),
    "predictor_rel_error": float(np.linalg.norm(A - np.linalg.inv(G)) / np.linalg.norm(np.linalg.inv(G))),
    "loss_history": res["history"],
  }


def e3(small=False):
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    d, n = 4, 16
    X = rng.standard_normal((1, n, d))
    y = rng.standard_normal((1, n))
    xq = rng.standard_normal((1, d))
    w0 = rng.standard_normal(d)
    out = {}
    for L in range(1, 6):
      As = [np.diag(rng.uniform(0.1, 0.5, d)) for _ in range(L)]
      Ps, Qs = lsa.ahn_gd_construction(As, d)
      pred = float(lsa.ahn_forward(Ps, Qs, jnp.asarray(X), jnp.asarray(y), jnp.asarray(xq), w0)[0])
      w = O.gd_steps(w0, X[0], y[0], As)
      out[f"L{L}"] = abs(pred - float(w @ xq[0]))
    A = np.diag(rng.uniform(0.1, 0.5, d))
    u, U = 2.0, A / 2.0
    zfb = float(lsa.zfb_uU_predict(u, jnp.asarray(U), jnp.asarray(X), jnp.asarray(y), jnp.asarray(xq))[0])
    Ps, Qs = lsa.ahn_gd_construction([A], d)
    ahn = float(lsa.ahn_forward(Ps, Qs, jnp.asarray(X), jnp.asarray(y), jnp.asarray(xq))[0])
    out["zfb_vs_ahn_one_layer"] = abs(zfb - ahn)
  return out


def e4(small=False):
  d, n = 5, 20
  out = {}
  for L in (1, 2, 3):
    res = lsa.train_lsa(jax.random.key(L), d=d, n=n, layers=L, model="ahn", steps=400 if small else 2000, lr=3e-3)
    out[f"L{L}"] = lsa.evaluate_risk(
      res["predict"], res["params"], jax.random.key(99), d=d, n=n, prompts=4096 if small else 20480
    )
  out["optimal_one_layer_risk"] = O.isotropic_risk(d, n)
  return out


def e5(small=False):
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    d, n = 8, 16
    X, y, xq, w0 = rng.standard_normal((n, d)), rng.standard_normal(n), rng.standard_normal(d), rng.standard_normal(d)
    A = np.diag(rng.uniform(0.1, 1.0, d))
    g = gs.lsa_scores(X, y, xq, w0, A)
    loo = gs.leave_one_out(X, y, xq, w0, A)
    auto = np.asarray(jax.grad(lambda a: gs.lsa_predict(X, y, xq, w0, A, a))(jnp.ones(n)))
    # G2 in LSA: -<grad_w f(x_q), A grad_w l_i> with l_i = (1/2)(w^T x_i - y_i)^2 at w0 equals n g_i
    g2 = np.array([-(xq @ A @ (X[i] * (X[i] @ w0 - y[i]))) for i in range(n)])
    return {
      "max_abs_g_minus_loo": float(np.abs(g - loo).max()),
      "max_abs_g_minus_autodiff": float(np.abs(g - auto).max()),
      "max_abs_G2_minus_n_g": float(np.abs(g2 - n * g).max()),
    }


def e6(small=False, *, eta=0.1, steps=1):
  q = 500 if small else 2000
  return {f"k{k}": gs.selection_experiment(k=k, eta=eta, steps=steps, queries=q) for k in (4, 8)}


def e6b(small=False):
  q = 500 if small else 2000
  return {
    "one_step": gs.selection_experiment(k=4, eta=4 / (4 + 8 + 1), queries=q),
    "three_steps": gs.selection_experiment(k=4, eta=4 / (4 + 8 + 1), steps=3, queries=q),
  }


def e7(small=False):
  r = gs.depth_amplification()
  return {
    "max_abs_vs_closed_form": float(np.abs(r["scores"] - r["closed_form"]).max()),
    "gap": r["gap"].tolist(),
    "top_share": r["top_share"].tolist(),
  }


def _cot_x(e=8, seed=1):
  x0 = np.random.default_rng(seed).standard_normal(e)
  return x0 / np.linalg.norm(x0)


def _cot_summary(r: dict) -> dict:
  out = {k: r[k] for k in ("gamma", "C", "A", "constants", "visited", "fixed_point_amplification") if k in r}
  out["regime_decreasing"] = bool(r["regime_decreasing"])
  out["A_times_1_minus_gamma"] = r["A"] * (1 - r["gamma"])
  out["amplification"] = np.asarray(r["amplification"]).tolist()
  if "region" in r:
    out["region"] = r["region"]
  for ix in ("paper", "recursion"):
    if ix in r:
      out[ix] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r[ix].items()}
  if "radius_limit" in r:
    out["radius_limit"] = r["radius_limit"]
  return out


def e8(small=False):
  """Both regimes of Thm 1 with certified (region) Lipschitz constants.

  Regime (ii), h_0 = 0 (the theorem's own assumption, so A <= C): the bound rises with K and the tolerable radius
  falls with K; larger inputs tolerate less. Regime (i), a high-gain first step h_1 = G x, G = 5 I, |x| = 0.2:
  A (1 - gamma) > C holds with the certified constants, the measured fluctuation and the recursion-indexed bound
  fall with K (claim (i)); the printed bound is violated at K = 1 there (``theorem1_bound``)."""
  dirs = 8 if small else 32
  with jax.enable_x64(True):
    f = cb.lsa_cot_step(8)
    x0 = _cot_x()
    by_scale = {}
    for s in (0.5, 0.8, 1.0, 1.2):
      r = cb.cot_experiment(f, s * x0, directions=dirs)
      by_scale[str(s)] = _cot_summary(r)
      by_scale[str(s)]["radius"] = r["radius"]
    hi = cb.cot_experiment(f, 0.2 * x0, first_step=5.0 * np.eye(8), directions=dirs)
    old = cb.cot_experiment(f, 0.5 * x0, first_step=3.0 * np.eye(8), directions=dirs, constants="visited")
    hi_sum = _cot_summary(hi)
    hi_sum["printed_bound_at_K1"] = float(hi["paper"]["bound"][0])
    return {
      "by_input_scale": by_scale,
      "high_gain_first_step": hi_sum,
      "verdicts": _e8_verdicts(by_scale, hi_sum),
      "previous_high_gain_setting": {
        "setting": "|x| = 0.5, G = 3 I, visited constants",
        "A_times_1_minus_gamma": old["A"] * (1 - old["gamma"]),
        "C": old["C"],
        "regime_decreasing": bool(old["regime_decreasing"]),
        "region_gamma": old["region"]["gamma"],
        "note": "not in the decreasing regime (A (1 - gamma) < C), and the certified gamma is >= 1",
      },
    }


def claim_i_shown(hi: dict) -> bool:
  """E8's high-gain run shows claim (i): in the decreasing regime (certified A (1 - gamma) > C), the recursion
  bound holds and falls with K, and the measured fluctuation falls."""
  return bool(
    hi["regime_decreasing"]
    and hi["recursion"]["holds"]
    and hi["recursion"]["bound_falls_with_K"]
    and hi["amplification"][-1] < hi["amplification"][0]
  )


def radius_falls_with_input(by_scale: dict) -> bool:
  """The tolerable radius falls strictly with the input scale, in the order ``by_scale`` lists the scales."""
  radii = [r["radius"] for r in by_scale.values()]
  return all(b < a for a, b in zip(radii, radii[1:]))


def _e8_verdicts(by_scale: dict, hi: dict) -> dict[str, str]:
  """The two claims judged from E8's measurements (deterministic: certified constants, no sampling interval).

  (ii) larger inputs tolerate less: the tolerable radius falls with |x| at every scale. (i) robustness improves
  with more CoT steps: in the theorem's own setting (h_0 = 0) the bound must fall with K; where it rises at every
  scale the claim is contradicted there, and reproduced only if the high-gain first step is in the decreasing
  regime with the measured fluctuation and the recursion-indexed bound falling."""
  radii = [r["radius"] for r in by_scale.values()]
  ii_ok = radius_falls_with_input(by_scale)
  rises = all(not r["paper"]["bound_falls_with_K"] for r in by_scale.values())
  hi_ok = claim_i_shown(hi)
  radius_text = " > ".join(f"{x:.4f}" for x in radii)
  scales = " / ".join(by_scale)
  if rises and hi_ok:
    claim_i = (
      "contradicted in the theorem's setting (h_0 = 0: the bound rises with K at every |x|); reproduced only with a "
      f"high-gain first step (A(1-gamma) = {hi['A_times_1_minus_gamma']:.2f} > C = {hi['C']:.2f}) and the recursion's"
      f" indexing (the printed bound {hi['printed_bound_at_K1']:.2f} at K = 1 is below A there)"
    )
  elif rises:
    claim_i = "contradicted (the bound rises with K at every |x|, and no high-gain regime shows the fall)"
  else:
    claim_i = "reproduced in the theorem's setting (the bound falls with K)"
  return {
    "claim_ii_larger_inputs_tolerate_less": (
      f"reproduced (tolerable radius at the last K, |x| = {scales}: {radius_text})"
      if ii_ok
      else f"contradicted (the radius does not fall with |x| = {scales}: {radius_text})"
    ),
    "claim_i_robustness_improves_with_K": claim_i,
  }


def _theta_star_step(S, N: int, eta: float = 0.5):
  """The CoT step built from ZFB's theta*: W^PV = u I, W^KQ = U with u = 1/alpha and u U = Gamma^-1 (the
  gradient-flow limit), so f(h, x) = eta h + Gamma^-1 (h h^T + x x^T) x up to the u / U split."""
  G = O.gamma_matrix(S, N)
  a = O.zfb_alpha(G)
  Gi = np.linalg.inv(G)
  e = G.shape[0]
  return cb.lsa_cot_step(e, eta=eta, WPV=np.eye(e) / a, WKQ=a * Gi), G


def e9(small=False):
  """Lemma 1's constants against the measured (visited) and certified (region) gamma and C of a step built from
  theta*, with Lemma 1 evaluated at the R_x, R_h the trajectories reach. Exploratory: our f may differ from the
  paper's (which output column becomes the next h is not given)."""
  eta = 0.5
  with jax.enable_x64(True):
    f, G = _theta_star_step(np.eye(8), 20, eta)
    x0 = _cot_x()
    out = {}
    for rx in (0.25, 0.4, 0.55, 0.75):
      r = cb.cot_experiment(f, rx * x0, directions=8 if small else 32, K=20)
      if not np.isfinite(r["amplification"]).all() or not np.isfinite(r["region"]["R_h"]):
        out[str(rx)] = {"diverges": True, "note": "the CoT iteration has no fixed point at this |x| (h blows up)"}
        continue
      lem = cb.lemma1_constants(G, eta, r["region"]["R_x"], r["region"]["R_h"])
      vis, reg = r["visited"], r["region"]
      out[str(rx)] = {
        "lemma1": lem,
        "visited": vis,
        "region": reg,
        "lemma1_gamma_ge_visited": bool(lem["gamma"] >= vis["gamma"]),
        "lemma1_C_ge_visited": bool(lem["C"] >= vis["C"]),
        "lemma1_gamma_over_visited": lem["gamma"] / vis["gamma"],
        "lemma1_C_over_visited": lem["C"] / vis["C"],
      }
  return out


def icl(
  small=False,
  *,
  k: int = 2,
  pool: int = 32,
  queries: int | None = None,
  scorers=("random", "bm25", "cosine", "G1", "G2", "G3"),
):
  """GradS on ``tiny-arith``: demonstrations = direct-answer training problems; queries = held-out problems with
  4-5 non-zero digits (where the direct answer is uncertain); accuracy of the greedy direct answer after k
  selected demonstrations; the gradient target is the model's own greedy answer (no labels used to select)."""
  from jaxeff.models.embedded import load_reference_model
  from jaxeff.tasks.arith import S1_SUFFIX, sample_problems
  from jaxeff.tokenizer import ByteTokenizer

  cfg, params, _ = load_reference_model("tiny-arith")
  tok = ByteTokenizer()  # tiny-arith is byte-level
  nq = queries or (12 if small else 100)
  demos_p = sample_problems(pool, seed=11, split="train")
  qs = [p for p in sample_problems(2000, seed=12, split="validation") if p.nonzero in (4, 5)][:nq]
  demo_ids = [tok.encode(p.prompt + p.direct()) + [tok.eos_id] for p in demos_p]

  @jax.jit
  def greedy_answer(tokens, last):
    from jaxeff.models.decoder import forward

    logits, _ = forward(params, tokens, jnp.arange(tokens.shape[1])[None], config=cfg, logits_index=last)
    return jnp.argmax(logits[:, 0, : cfg.vocab_size], -1)

  def answer(prefix):
    ids = jnp.asarray([prefix], jnp.int32)
    return int(greedy_answer(ids, jnp.asarray([len(prefix) - 1]))[0])

  out = {}
  for sc in scorers:
    sel = gs.GradSelector(cfg, params, scorer=sc, pad_id=tok.pad_id)
    correct, t0 = 0, time.perf_counter()
    for q in qs:
      qids = tok.encode(q.prompt + S1_SUFFIX)
      a0 = answer(qids)
      idx = sel.select(demo_ids, qids, [a0], k)
      prefix = [t for i in idx for t in demo_ids[i]] + qids
      correct += tok.decode([answer(prefix)]) == q.answer
    out[sc] = {"accuracy": correct / len(qs), "seconds": time.perf_counter() - t0}
  zero = sum(tok.decode([answer(tok.encode(q.prompt + S1_SUFFIX))]) == q.answer for q in qs) / len(qs)
  out["zero_shot"] = {"accuracy": zero}
  out["settings"] = {"k": k, "pool": pool, "queries": len(qs), "nonzero_digits": [4, 5]}
  return out


def _grads_verdict(paired: dict) -> str:
  """The claim is G1 >= every baseline: reproduced when every paired lower bound is > 0, contradicted when G1 is
  significantly below any baseline, otherwise not resolvable."""
  if all(v["lo"] > 0 for v in paired.values()):
    return "reproduced (G1 above every similarity / random baseline)"
  worse = [k for k, v in paired.items() if v["hi"] < 0]
  if worse:
    return f"contradicted ({', '.join(worse)} < 0 with its 95 % interval)"
  return "not resolvable at this scale"


def icl_latent(small=False):
  """GradS where demonstrations carry the latent (``jaxeff.theory.latent_icl``): train the 3-layer model on 1-4
  demonstration prompts, then select k = 1 of 8 (half informative) for 1,000 held-out queries x 3 seeds; paired
  bootstrap intervals of GradS G1 against random / BM25 / cosine, the informative share each selector picked."""
  from jaxeff.theory import latent_icl as L

  cfg, params, info = L.train_model(steps=300 if small else 6000, batch=32 if small else 64)
  res = L.selection_study(
    cfg,
    params,
    queries=30 if small else 1000,
    seeds=(0,) if small else (0, 1, 2),
    train_queries=info["train_queries"],
  )
  res["training"] = {"steps": 300 if small else 6000, "seconds": info["seconds"], "loss_history": info["history"]}
  g = res["paired"]
  res["verdict"] = _grads_verdict(g)
  res["oracle_minus_zero_shot_points"] = 100 * (res["accuracy"]["oracle"] - res["accuracy"]["zero_shot"])
  return res


RUNNERS = {
  "E1": e1,
  "E2": e2,
  "E3": e3,
  "E4": e4,
  "E5": e5,
  "E6": e6,
  "E6b": e6b,
  "E7": e7,
  "E8": e8,
  "E9": e9,
  "ICL": icl,
  "ICL-latent": icl_latent,
}


def _figure(eid: str, res: dict, path: Path) -> None:
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5, 3.2))
  if eid == "E8":
    runs = {f"h0=0, |x|={s}": r for s, r in res["by_input_scale"].items() if s in ("0.5", "1.0")}
    runs["high gain, G=5I, |x|=0.2"] = res["high_gain_first_step"]
    for name, r in runs.items():
      k = range(1, len(r["amplification"]) + 1)
      (line,) = ax.semilogy(k, r["amplification"], label=f"measured, {name}")
      ax.semilogy(k, r["recursion"]["bound"], "--", color=line.get_color())
    ax.set_xlabel("CoT steps K")
    ax.set_ylabel("||eps_K|| / ||delta|| (dashed: Thm 1)")
    ax.legend(fontsize=6)
  elif eid in ("E6", "E6b"):
    block = res["k4"] if eid == "E6" else res["one_step"]
    ax.bar(list(block), list(block.values()))
    ax.set_ylabel("query MSE")
    ax.tick_params(axis="x", labelsize=7)
  elif eid == "E7":
    ax.plot(res["gap"], label="top-2 score gap")
    ax.plot(res["top_share"], label="top softmax share")
    ax.set_xlabel("layer")
    ax.legend(fontsize=7)
  elif eid == "ICL":
    names = [k for k in res if k != "settings"]
    ax.bar(names, [res[k]["accuracy"] for k in names])
    ax.set_ylabel("accuracy")
  elif eid == "E4":
    ax.plot([1, 2, 3], [res["L1"], res["L2"], res["L3"]], marker="o", label="trained Ahn LSA")
    ax.axhline(res["optimal_one_layer_risk"], ls="--", color="grey", label="one-layer optimum R*")
    ax.set_xlabel("layers")
    ax.set_ylabel("risk")
    ax.legend(fontsize=7)
  else:
    plt.close(fig)
    return
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run(eid: str, out_dir: str | Path | None = None, small: bool = False) -> dict[str, Any]:
  """Run one experiment; with ``out_dir`` write ``<eid>.json`` (and ``<eid>.png`` where a figure helps)."""
  if eid not in RUNNERS:
    raise ValueError(f"unknown experiment {eid!r}; choose from {EXPERIMENTS}")
  t0 = time.perf_counter()
  res = RUNNERS[eid](small)
  res = {"experiment": eid, "seconds": time.perf_counter() - t0, "small": small, "result": res}
  if out_dir is not None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{eid}.json").write_text(json.dumps(res, indent=2, default=float))
    try:
      _figure(eid, res["result"], out / f"{eid}.png")
    except ImportError:
      pass
  return res
