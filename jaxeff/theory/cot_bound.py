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
f(h, x) = eta h + W^PV (h h^T + x x^T) W^KQ x (+ (1 - eta) b), weights 0.6 x random orthogonal; gamma and C are
the largest Jacobian norms ||df/dh||, ||df/dx|| met on the trajectories (so the bound holds where measured).

Example:
  >>> round(theorem1_bound(0.5, 0.5, 1.0, K=1, delta_norm=1.0), 3), round(tolerable_radius(1e-2, 0.5, 0.5, 1.0, K=None), 4)
  (1.25, 0.005)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def theorem1_bound(A: float, gamma: float, C: float, *, K: int, delta_norm: float = 1.0) -> float:
  """(A gamma^K + C (1 - gamma^K) / (1 - gamma)) ||delta||."""
  if not 0 <= gamma < 1:
    raise ValueError(f"the bound needs 0 <= gamma < 1, got {gamma}")
  return (A * gamma**K + C * (1 - gamma**K) / (1 - gamma)) * delta_norm


def tolerable_radius(R: float, A: float, gamma: float, C: float, *, K: int | None) -> float:
  """Largest ||delta|| keeping the Thm-1 bound <= R; ``K=None`` gives the limit R (1 - gamma) / C."""
  if K is None:
    return R * (1 - gamma) / C
  return R / theorem1_bound(A, gamma, C, K=K)


def lemma1_constants(Gamma, eta: float, R_x: float, R_h: float) -> dict[str, float]:
  """Lemma 1's C and gamma bounds and Thm 2's beta from Gamma (ZFB's theta*), eta and the norm bounds."""
  Gi = np.linalg.inv(np.asarray(Gamma, np.float64))
  alpha = float(np.trace(Gi @ Gi) ** -0.25)
  s = float(np.linalg.norm(Gi, 2))
  C = eta + s * R_h**2 / alpha
  gamma = float(np.sqrt(eta**2 + 4 * R_x**2 * s**2 * R_h**2 / alpha**2))
  return {"alpha": alpha, "s": s, "C": C, "gamma": gamma, "beta": s * R_h**2 / alpha}


def theorem2_radius(R: float, A: float, gamma: float, eta: float, beta: float, *, K: int | None) -> float:
  """(1 - gamma) R / ((eta + beta) + A (1 - gamma)(1 + beta) gamma^K); K = None drops the last term."""
  tail = 0.0 if K is None else A * (1 - gamma) * (1 + beta) * gamma**K
  return (1 - gamma) * R / ((eta + beta) + tail)


def output_fluctuation(answers_per_prompt) -> float:
  """OF: entropy of the answers over prompts / log(#prompts) (0 = all agree, 1 = all differ)."""
  answers = list(answers_per_prompt)
  if len(answers) < 2:
    return 0.0
  _, counts = np.unique(np.asarray(answers, dtype=object).astype(str), return_counts=True)
  p = counts / counts.sum()
  return float(-(p * np.log(p)).sum() / np.log(len(answers)))


def lsa_cot_step(e: int = 8, *, eta: float = 0.5, scale: float = 0.6, seed: int = 0, bias=None):
  """The experiment's step f(h, x) = eta h + W^PV (h h^T + x x^T) W^KQ x (+ (1 - eta) b)."""
  rng = np.random.default_rng(seed)
  q1, _ = np.linalg.qr(rng.standard_normal((e, e)))
  q2, _ = np.linalg.qr(rng.standard_normal((e, e)))
  WPV, WKQ = jnp.asarray(scale * q1), jnp.asarray(scale * q2)
  b = jnp.zeros(e) if bias is None else jnp.asarray(bias)

  def f(h, x):
    return eta * h + WPV @ (jnp.outer(h, h) + jnp.outer(x, x)) @ WKQ @ x + (1 - eta) * b

  return f


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
) -> dict[str, Any]:
  """Measure ||eps_k|| for k = 1..K over random perturbation directions and compare with Thm 1.

  ``first_step``: a matrix G giving h_1 = G x (the high-gain regime); default h_1 = f(0, x). Returns measured
  amplification per K (max over directions), gamma, C, A, the bound per K, the fixed-point amplification
  ||(I - J_h)^-1 J_x delta|| / ||delta|| (max over directions), and the tolerable radius at ``R``.
  """
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
  gamma = float(jnp.max(jax.vmap(lambda h, xx: jnp.linalg.norm(Jh(h, xx), 2))(hs_all, xs_all)))
  C = float(jnp.max(jax.vmap(lambda h, xx: jnp.linalg.norm(Jx(h, xx), 2))(hs_all, xs_all)))
  A = float(jnp.max(eps[:, 0]))
  amp = np.asarray(jnp.max(eps, axis=0))
  out: dict[str, Any] = {
    "amplification": amp,
    "gamma": gamma,
    "C": C,
    "A": A,
    "regime_decreasing": A * (1 - gamma) > C,
  }
  if gamma < 1:
    out["bound"] = np.array([theorem1_bound(A, gamma, C, K=k) for k in range(1, K + 1)])
    out["radius"] = tolerable_radius(R, A, gamma, C, K=K)
    out["radius_limit"] = tolerable_radius(R, A, gamma, C, K=None)
  hstar = base[-1]
  lim = np.linalg.solve(np.eye(e) - np.asarray(Jh(hstar, x)), np.asarray(Jx(hstar, x)) @ np.asarray(dirs).T)
  out["fixed_point_amplification"] = float(np.max(np.linalg.norm(lim, axis=0)) / delta_norm)
  out["hidden_norm"] = float(jnp.linalg.norm(hstar))
  return out
