r"""The CoT robustness bound (Wang et al., "Bounds of Chain-of-Thought Robustness", arXiv 2509.21284) and an
LSA-CoT experiment that measures the real output fluctuation against it.

A CoT step h_k = f(h_{k-1}, x) with ||f(h1, x1) - f(h2, x2)|| <= gamma ||h1 - h2|| + C ||x1 - x2||, gamma < 1:

* Thm 1: ||eps_K|| <= (A gamma^K + C (1 - gamma^K)/(1 - gamma)) ||delta||, A = max ||eps_1|| / ||delta||;
* tolerable radius for ||eps_K|| <= R: R / (A gamma^K + C (1 - gamma^K)/(1 - gamma)); K -> inf: R (1 - gamma) / C;
* Lemma 1 (LSA, alpha = (tr Gamma^-2)^(-1/4), ||x|| <= R_x, ||h|| <= R_h): C <= eta + alpha^-1 ||Gamma^-1|| R_h^2,
  gamma <= sqrt(eta^2 + 4 R_x^2 alpha^-2 ||Gamma^-1||^2 R_h^2); Thm 2 radius (1 - gamma) R / ((eta + beta) +
  A (1 - gamma)(1 + beta) gamma^K), beta = alpha^-1 ||Gamma^-1|| R_h^2.

**Critical reading** (the spec's, checked here): with h_1 = f(0, x), A <= C, and the Thm-1 bound
C/(1-gamma) + gamma^K (A - C/(1-gamma)) then *grows* with K: claim (i) (robustness improves with more steps)
needs A (1 - gamma) > C, a high-gain first step. ``cot_experiment`` shows both regimes: from h_0 = 0, and with
a first step h_1 = G x (||G|| large).

The experiment's step (UNVERIFIED which output becomes the next h in the paper; this is the spec's E8 choice):
f(h, x) = eta h + W^PV (h h^T + x x^T) W^KQ x (+ (1 - eta) b), weights 0.6 x random orthogonal.

**Which gamma and C.** The theorem needs Lipschitz constants over a region holding every state and input met.
Two sets are computed: ``"visited"``, the largest Jacobian norms ||df/dh||, ||df/dx|| at the points the
trajectories visit (a *lower* bound on the Lipschitz constants: the bound built from them is not guaranteed);
``"region"`` (default for ``CotStep``), constants certified over the balls ||h|| <= R_h, ||x|| <= R_x that contain
every visited state and perturbed input: since J_h d = eta d + W^PV (d h^T + h d^T) W^KQ x and
J_x d = W^PV ((d x^T + x d^T) W^KQ x + (h h^T + x x^T) W^KQ d),
gamma <= eta + 2 |W^PV| |W^KQ| R_h R_x and C <= |W^PV| |W^KQ| (R_h^2 + 3 R_x^2) on the (convex) balls, so the
mean-value theorem makes them Lipschitz constants there and Thm 1 a proven bound on the measured fluctuation.

Example:
  >>> round(theorem1_bound(0.5, 0.5, 1.0, K=1, delta_norm=1.0), 3), round(tolerable_radius(1e-2, 0.5, 0.5, 1.0, K=None), 4)
  (1.25, 0.005)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def theorem1_bound(
  A: float, gamma: float, C: float, *, K: int, delta_norm: float = 1.0, indexing: str = "paper"
) -> float:
  """Thm 1: (A gamma^m + C (1 - gamma^m) / (1 - gamma)) ||delta|| with m = K (``indexing="paper"``, as printed)
  or m = K - 1 (``"recursion"``: what eps_k <= gamma eps_(k-1) + C ||delta|| from eps_1 = A ||delta|| gives).

  UNVERIFIED which the paper means. They differ by one step, and it matters: at K = 1 the printed form is
  A gamma + C, *below* the measured A exactly when A (1 - gamma) > C, the very regime where the bound falls with K
  (claim (i)). So the printed bound holds only where claim (i) fails; the recursion form holds in both regimes
  (equal to A at K = 1) and is the one that shows claim (i).
  """
  if not 0 <= gamma < 1:
    raise ValueError(f"the bound needs 0 <= gamma < 1, got {gamma}")
  if indexing not in ("paper", "recursion"):
    raise ValueError(f"indexing must be 'paper' or 'recursion', got {indexing!r}")
  m = K if indexing == "paper" else K - 1
  return (A * gamma**m + C * (1 - gamma**m) / (1 - gamma)) * delta_norm


def tolerable_radius(R: float, A: float, gamma: float, C: float, *, K: int | None, indexing: str = "paper") -> float:
  """Largest ||delta|| keeping the Thm-1 bound <= R; ``K=None`` gives the limit R (1 - gamma) / C."""
  if not 0 <= gamma < 1:
    raise ValueError(f"the tolerable radius needs 0 <= gamma < 1, got {gamma}")
  if K is None:
    return R * (1 - gamma) / C
  return R / theorem1_bound(A, gamma, C, K=K, indexing=indexing)


def lemma1_constants(Gamma, eta: float, R_x: float, R_h: float) -> dict[str, float]:
  """Lemma 1's C and gamma bounds and Thm 2's beta from Gamma (ZFB's theta*), eta and the norm bounds."""
  Gi = np.linalg.inv(np.asarray(Gamma, np.float64))
  alpha = float(np.trace(Gi @ Gi) ** -0.25)
  s = float(np.linalg.norm(Gi, 2))
  C = eta + s * R_h**2 / alpha
  gamma = float(np.sqrt(eta**2 + 4 * R_x**2 * s**2 * R_h**2 / alpha**2))
  return {"alpha": alpha, "s": s, "C": C, "gamma": gamma, "beta": s * R_h**2 / alpha}


def theorem2_radius(R: float, A: float, gamma: float, eta: float, beta: float, *, K: int | None) -> float:
  """(1 - gamma) R / ((eta + beta) + A (1 - gamma)(1 + beta) gamma^K); K = None drops the last term.

  Defined for 0 <= gamma < 1 only (a contraction; for gamma >= 1 the formula goes negative, not a radius)."""
  if not 0 <= gamma < 1:
    raise ValueError(f"Thm 2's radius needs 0 <= gamma < 1, got {gamma}")
  tail = 0.0 if K is None else A * (1 - gamma) * (1 + beta) * gamma**K
  return (1 - gamma) * R / ((eta + beta) + tail)


def selection_radius(A_prime, *, R: float, eta: float, tau: float, R_h: float):
  r"""Eq. 9's objective: the K -> inf Thm-2 radius as a function of A' = (R_x R_h)^2,
  F(A') = (1 - sqrt(eta^2 + tau^2 A')) R / (eta + tau R_h^2), tau = alpha^-1 ||Gamma^-1||, with
  dF/dA' = -R tau^2 / (2 (eta + tau R_h^2) sqrt(eta^2 + tau^2 A')) < 0: the prompt with the smallest R_x R_h
  tolerates the largest perturbation (``select_prompt``). UNVERIFIED: the note's gamma drops Lemma 1's factor 4
  under the root; kept as the note writes it."""
  A_prime = np.asarray(A_prime, np.float64)
  return (1.0 - np.sqrt(eta**2 + tau**2 * A_prime)) * R / (eta + tau * R_h**2)


def selection_radius_slope(A_prime, *, R: float, eta: float, tau: float, R_h: float):
  """dF/dA' of ``selection_radius`` in closed form (Eq. 9)."""
  A_prime = np.asarray(A_prime, np.float64)
  return -R * tau**2 / (2.0 * (eta + tau * R_h**2) * np.sqrt(eta**2 + tau**2 * A_prime))


def prompt_norms(params, config, prompts, *, hidden: str = "residual") -> dict[str, np.ndarray]:
  r"""R_x and R_h of each prompt for the selection rule (arXiv 2509.21284, Eq. 9).

  R_x = || mean_t E[token_t] || (the pooled input embedding; mean over the prompt's tokens), R_h = || h_T ||, the
  last token's final hidden state: ``hidden="residual"`` (default) the residual stream after the last block,
  ``"normed"`` after the final RMSNorm (UNVERIFIED which one the note means; the normed one is close to constant
  by construction). ``prompts``: token lists (any lengths; one forward each). Returns {"R_x" [P], "R_h" [P]}.
  """
  from jaxeff.models.decoder import forward

  if hidden not in ("residual", "normed"):
    raise ValueError(f"hidden must be 'residual' or 'normed', got {hidden!r}")
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("prompts must be a non-empty list of non-empty token lists")
  E = np.asarray(params["embed"], np.float32)
  R_x = np.array([np.linalg.norm(E[np.asarray(p)].mean(0)) for p in prompts])
  R_h = []
  for p in prompts:
    tok = jnp.asarray([list(p)], jnp.int32)
    _, _, h = forward(params, tok, jnp.arange(len(p))[None], config=config, return_hidden=True)
    last = h[0, -1]
    if hidden == "normed":
      from jaxeff.models.layers import rms_norm

      last = rms_norm(last, params["final_norm"], config.rms_norm_eps)
    R_h.append(float(jnp.linalg.norm(last.astype(jnp.float32))))
  return {"R_x": R_x, "R_h": np.array(R_h)}


def select_prompt(params, config, prompts, *, hidden: str = "residual") -> dict[str, Any]:
  """The note's prompt-selection rule: the prompt with the smallest R_x R_h (``prompt_norms``), the one whose
  Thm-2 tolerable radius is largest (``selection_radius`` falls in A' = (R_x R_h)^2).

  Example:
    >>> from jaxeff.config import ModelConfig; from jaxeff.models.decoder import init_params
    >>> cfg = ModelConfig.tiny(); params = init_params(cfg, jax.random.key(0))
    >>> select_prompt(params, cfg, [[1, 2, 3], [4, 5]])["index"] in (0, 1)
    True
  """
  nrm = prompt_norms(params, config, prompts, hidden=hidden)
  score = nrm["R_x"] * nrm["R_h"]
  return {"index": int(np.argmin(score)), "R_x_R_h": score, **nrm}


def output_fluctuation(answers_per_prompt) -> float:
  """OF: entropy of the answers over prompts / log(#prompts) (0 = all agree, 1 = all differ)."""
  answers = list(answers_per_prompt)
  if len(answers) < 2:
    return 0.0
  _, counts = np.unique(np.asarray(answers, dtype=object).astype(str), return_counts=True)
  p = counts / counts.sum()
  return float(-(p * np.log(p)).sum() / np.log(len(answers)))


@dataclasses.dataclass(frozen=True)
class CotStep:
  """f(h, x) = eta h + W^PV (h h^T + x x^T) W^KQ x + (1 - eta) b, with certified Lipschitz constants."""

  WPV: Any
  WKQ: Any
  eta: float
  b: Any

  def __call__(self, h, x):
    return self.eta * h + self.WPV @ (jnp.outer(h, h) + jnp.outer(x, x)) @ self.WKQ @ x + (1 - self.eta) * self.b

  def lipschitz(self, R_h: float, R_x: float) -> tuple[float, float]:
    """(gamma, C) valid over ||h|| <= R_h, ||x|| <= R_x (module docstring)."""
    p = float(np.linalg.norm(np.asarray(self.WPV), 2) * np.linalg.norm(np.asarray(self.WKQ), 2))
    return self.eta + 2 * p * R_h * R_x, p * (R_h**2 + 3 * R_x**2)


def lsa_cot_step(e: int = 8, *, eta: float = 0.5, scale: float = 0.6, seed: int = 0, bias=None, WPV=None, WKQ=None):
  """The experiment's step f(h, x) = eta h + W^PV (h h^T + x x^T) W^KQ x (+ (1 - eta) b): weights ``scale`` x
  random orthogonal (seeded) unless given."""
  rng = np.random.default_rng(seed)
  q1, _ = np.linalg.qr(rng.standard_normal((e, e)))
  q2, _ = np.linalg.qr(rng.standard_normal((e, e)))
  WPV = jnp.asarray(scale * q1 if WPV is None else WPV)
  WKQ = jnp.asarray(scale * q2 if WKQ is None else WKQ)
  return CotStep(WPV, WKQ, float(eta), jnp.zeros(e) if bias is None else jnp.asarray(bias))


def cot_experiment(
  f,
  x,
  *,
  K: int = 40,
  delta_norm: float = 1e-3,
  directions: int = 32,
  seed: int = 0,
  first_step=None,
  R: float = 1e-2,
  constants: str | None = None,
) -> dict[str, Any]:
  """Measure ||eps_k|| for k = 1..K over random perturbation directions and compare with Thm 1.

  ``first_step``: a matrix G giving h_1 = G x (the high-gain regime); default h_1 = f(0, x). ``constants``:
  "region" (certified Lipschitz constants over balls holding every visited state and input; needs a ``CotStep``;
  the default for one) or "visited" (max Jacobian norms at visited points; the default for other callables).
  Returns measured amplification per K (max over directions), the chosen gamma, C and A, both constant sets
  ("visited", "region"), and for each indexing of Thm 1 ("paper", "recursion"; see ``theorem1_bound``) the bound
  per K, whether it holds on every measured K, the tolerable radius at ``R`` per K, whether bound and radius fall
  with K and the bound's looseness at K; ``bound`` / ``radius`` are the printed form's; the fixed-point amplification ||(I - J_h)^-1 J_x delta|| / ||delta|| (max over directions), and
  the regime (claim (i), a bound falling with K, needs A (1 - gamma) > C).
  """
  if constants is None:
    constants = "region" if hasattr(f, "lipschitz") else "visited"
  if constants not in ("region", "visited"):
    raise ValueError(f"constants must be 'region' or 'visited', got {constants!r}")
  if constants == "region" and not hasattr(f, "lipschitz"):
    raise ValueError("constants='region' needs a step with certified constants (a CotStep)")
  x = jnp.asarray(x, jnp.float64)
  e = x.shape[0]
  dirs = np.random.default_rng(seed).standard_normal((directions, e))
  dirs = jnp.asarray(delta_norm * dirs / np.linalg.norm(dirs, axis=1, keepdims=True))

  def traj(xx):
    h = (jnp.asarray(first_step) @ xx) if first_step is not None else f(jnp.zeros(e), xx)
    hs = [h]
    for _ in range(K - 1):
      h = f(h, xx)
      hs.append(h)
    return jnp.stack(hs)  # [K, e]: h_1 .. h_K

  base = traj(x)
  pert = jax.vmap(lambda dlt: traj(x + dlt))(dirs)  # [M, K, e]
  eps = jnp.linalg.norm(pert - base[None], axis=-1) / delta_norm  # amplification [M, K]
  Jh = jax.jacfwd(f, argnums=0)
  Jx = jax.jacfwd(f, argnums=1)
  hs_all = jnp.concatenate([base[None], pert], 0).reshape(-1, e)
  xs_all = jnp.concatenate([jnp.broadcast_to(x, (1, K, e)), (x + dirs)[:, None, :].repeat(K, 1)], 0).reshape(-1, e)
  visited = {
    "gamma": float(jnp.max(jax.vmap(lambda h, xx: jnp.linalg.norm(Jh(h, xx), 2))(hs_all, xs_all))),
    "C": float(jnp.max(jax.vmap(lambda h, xx: jnp.linalg.norm(Jx(h, xx), 2))(hs_all, xs_all))),
  }
  A = float(jnp.max(eps[:, 0]))
  amp = np.asarray(jnp.max(eps, axis=0))
  out: dict[str, Any] = {"amplification": amp, "A": A, "visited": visited, "constants": constants}
  if hasattr(f, "lipschitz"):
    R_h = float(jnp.max(jnp.linalg.norm(hs_all, axis=-1)))
    R_x = float(jnp.linalg.norm(x)) + float(delta_norm)
    g_r, C_r = f.lipschitz(R_h, R_x)
    out["region"] = {"gamma": g_r, "C": C_r, "R_h": R_h, "R_x": R_x}
  gamma, C = out[constants]["gamma"], out[constants]["C"]
  out.update(gamma=gamma, C=C, regime_decreasing=A * (1 - gamma) > C)
  if gamma < 1:
    ks = range(1, K + 1)
    for ix in ("paper", "recursion"):
      b = np.array([theorem1_bound(A, gamma, C, K=k, indexing=ix) for k in ks])
      rad = np.array([tolerable_radius(R, A, gamma, C, K=k, indexing=ix) for k in ks])
      out[ix] = {
        "bound": b,
        "holds": bool(np.all(amp <= b * (1 + 1e-9) + 1e-12)),
        "bound_falls_with_K": bool(np.all(np.diff(b) < 0)),
        "radius_per_K": rad,
        "radius_falls_with_K": bool(np.all(np.diff(rad) < 0)),
        "radius": float(rad[-1]),
        "bound_over_measured_at_K": float(b[-1] / amp[-1]),
      }
    out["bound"] = out["paper"]["bound"]  # the printed Thm 1
    out["radius"] = out["paper"]["radius"]
    out["radius_limit"] = tolerable_radius(R, A, gamma, C, K=None)
  hstar = base[-1]
  lim = np.linalg.solve(np.eye(e) - np.asarray(Jh(hstar, x)), np.asarray(Jx(hstar, x)) @ np.asarray(dirs).T)
  out["fixed_point_amplification"] = float(np.max(np.linalg.norm(lim, axis=0)) / delta_norm)
  out["hidden_norm"] = float(jnp.linalg.norm(hstar))
  return out
