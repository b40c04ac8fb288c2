r"""Scaling-law fits in float64: Chinchilla (Hoffmann's Approach 3 and variable projection) and Farseer.

Size (over 500 lines): two law families with their fitting procedures, bootstrap and allocation, each written
out step by step against the papers' formulas.

* **Chinchilla** (Hoffmann et al. 2022, arXiv 2203.15556): L(N, D) = E + A / N^alpha + B / D^beta. Fitted as
  Hoffmann and Epoch do (Besiroglu et al., arXiv 2404.10102): log L_hat = LSE(a - alpha log N, b - beta log D, e)
  with a = log A, b = log B, e = log E; objective = **sum** of Huber(log L - log L_hat; delta = 1e-3); BFGS
  from each of the 4,500 grid starts (alpha, beta in {0, .5, 1, 1.5, 2}, e in {-1, -.5, 0, .5, 1}, a, b in
  {0, 5, ..., 25}), all starts in one ``vmap``, lowest objective kept. A mean-reduced objective is n times
  smaller and stops early under absolute tolerances (Epoch's finding): ``reduction="mean"`` exists to show it.
* **Variable projection** (``fit_chinchilla_vp``): for fixed (alpha, beta) the law is linear in (E, A, B); solve
  the non-negative weighted least squares (weights 1/L) exactly by enumerating the 8 active sets, vmapped over
  an (alpha, beta) grid; refine around the best cell; optionally polish with the Huber objective.
* **Farseer** (Li et al., arXiv 2506.10972): L(N, D) = exp(a3 N^gamma + b3) + exp(a2 N^beta + b2) D^(-exp(a1 N^alpha
  + b1)) (9 parameters). ``method="direct"``: joint Huber fit on log L from a small grid of starts (not the
  authors' procedure). ``method="piecewise"``: differential piecewise fitting — stage 1 fits, per N, the loss
  differences R_N(D) = L(N, D) - L(N, lambda D) = B_N (1 - lambda^-A_N) D^-A_N (exact log-linear regression);
  stages 2-3 (UNVERIFIED order, from the spec's memory of Algorithm 2): log A_N = a1 N^alpha + b1 and
  log B_N = a2 N^beta + b2 by a 1-D exponent search with linear regression, then the remainder
  L - B(N) D^-A(N) by exp(a3 N^gamma + b3); ``refine=True`` (default) then polishes all 9 jointly.
* **Allocation** under C = 6 N D: closed form for Chinchilla, a bounded search over log(D/N) for Farseer.

Everything runs in float64 inside ``jax.enable_x64(True)`` (never flipped globally).

Example:
  >>> p = ChinchillaParams.from_log(a=6.1780, b=7.6427, e=0.5971, alpha=0.3478, beta=0.3658)   # Epoch
  >>> N = np.repeat(np.geomspace(1e7, 3e9, 6), 6); D = np.tile(np.geomspace(1e8, 3e11, 6), 6)
  >>> fit = fit_chinchilla(N, D, chinchilla_predict(p, N, D))
  >>> round(fit.alpha, 3), round(fit.beta, 3)
  (0.348, 0.366)
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.optimize import minimize

HUBER_DELTA = 1e-3


# ------------------------------------------------------------------------------------------------ inputs
def _check_table(N, D, L) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  N, D, L = (np.asarray(x, np.float64).reshape(-1) for x in (N, D, L))
  if not len(N) == len(D) == len(L):
    raise ValueError(f"N, D and L must have equal lengths, got {len(N)}, {len(D)}, {len(L)}")
  if len(N) < 3:
    raise ValueError(f"a scaling-law fit needs at least 3 points, got {len(N)}")
  for name, x in (("N", N), ("D", D), ("L", L)):
    bad = np.flatnonzero(~np.isfinite(x) | (x <= 0))
    if len(bad):
      raise ValueError(f"{name} must be finite and > 0; bad rows {bad[:10].tolist()}")
  return N, D, L


def _check_identifiable(N, D, n_params: int, what: str) -> None:
  """A law of ``n_params`` parameters needs more distinct (N, D) points than parameters (else it interpolates
  and reports a zero error) and at least two values of N and of D (else its exponents are undetermined)."""
  distinct = len(set(zip(N.tolist(), D.tolist())))
  problems = []
  if distinct <= n_params:
    problems.append(f"{distinct} distinct (N, D) points for {n_params} parameters (need at least {n_params + 1})")
  for name, x in (("N", N), ("D", D)):
    if len(np.unique(x)) < 2:
      problems.append(f"every row has the same {name} (the {name} exponent is undetermined)")
  if problems:
    raise ValueError(f"{what}: the data cannot determine the law: " + "; ".join(problems))


def huber(r, delta: float = HUBER_DELTA):
  """Huber loss: r^2 / 2 for |r| <= delta, else delta (|r| - delta / 2)."""
  a = jnp.abs(r)
  return jnp.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


# ------------------------------------------------------------------------------------------------ Chinchilla
@dataclasses.dataclass(frozen=True)
class ChinchillaParams:
  """L = E + A / N^alpha + B / D^beta."""

  E: float
  A: float
  B: float
  alpha: float
  beta: float

  @classmethod
  def from_log(cls, a: float, b: float, e: float, alpha: float, beta: float) -> ChinchillaParams:
    return cls(math.exp(e), math.exp(a), math.exp(b), float(alpha), float(beta))

  @property
  def log_values(self) -> dict[str, float]:
    """(a, b, e, alpha, beta) = (log A, log B, log E, alpha, beta)."""
    return {
      "a": math.log(self.A),
      "b": math.log(self.B),
      "e": math.log(self.E),
      "alpha": self.alpha,
      "beta": self.beta,
    }


HOFFMANN = ChinchillaParams.from_log(6.0073, 6.0179, 0.5267, 0.33917, 0.28491)  # unrounded (TeX source)
HOFFMANN_ROUNDED = ChinchillaParams(1.69, 406.4, 410.7, 0.34, 0.28)  # the paper body: for the rounding test only
EPOCH = ChinchillaParams.from_log(6.1780, 7.6427, 0.5971, 0.3478, 0.3658)


def chinchilla_predict(p: ChinchillaParams, N, D) -> np.ndarray:
  """E + A N^-alpha + B D^-beta (float64)."""
  N, D = np.asarray(N, np.float64), np.asarray(D, np.float64)
  return p.E + p.A * N ** (-p.alpha) + p.B * D ** (-p.beta)


def _chin_logpred(x, logN, logD):
  a, b, e, alpha, beta = x[0], x[1], x[2], x[3], x[4]
  return jax.scipy.special.logsumexp(jnp.stack([a - alpha * logN, b - beta * logD, jnp.full_like(logN, e)]), axis=0)


def hoffmann_starts() -> np.ndarray:
  """The 4,500 grid starts (a, b, e, alpha, beta)."""
  grid = itertools.product(
    range(0, 30, 5), range(0, 30, 5), [-1, -0.5, 0, 0.5, 1], np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5)
  )
  return np.array(list(grid), np.float64)


@dataclasses.dataclass
class ChinchillaFit:
  """A fitted Chinchilla law: ``params`` (also as ``E, A, B, alpha, beta`` and ``log_values``), the objective at
  the optimum, every start's final objective, BFGS iterations of the winning start, its optimizer status (see
  ``status_text``) and the objective decrease a Gauss-Newton step still promises there (checked by the fitter)."""

  params: ChinchillaParams
  objective: float
  all_objectives: np.ndarray
  iterations: int = 0
  status: str = ""
  decrease: float = float("nan")

  def __getattr__(self, name):
    if name in ("E", "A", "B", "alpha", "beta", "log_values"):
      return getattr(self.params, name)
    raise AttributeError(name)

  def predict(self, N, D):
    return chinchilla_predict(self.params, N, D)


def _chin_resid(x, logN, logD, logL):
  return logL - _chin_logpred(x, logN, logD)


def _objective(resid, x, args, delta, mean):
  r = resid(x, *args)
  f = jnp.sum(huber(r, delta))
  return f / r.shape[0] if mean else f


def _irls_normal(resid, x, args, delta: float):
  """Gauss-Newton normal equations of the Huber objective at ``x``: (g = J^T W r, H = J^T W J) with the IRLS
  weights W = min(1, delta / |r|)."""
  r = resid(x, *args)
  J = jax.jacfwd(resid)(x, *args)
  a = jnp.abs(r)
  w = jnp.where(a <= delta, 1.0, delta / jnp.maximum(a, 1e-300))
  return (J * w[:, None]).T @ r, (J * w[:, None]).T @ J


@functools.partial(jax.jit, static_argnames=("resid", "iters", "delta"))
def _lm_many(resid, starts, args, iters: int, delta: float):
  """Levenberg-Marquardt on the Huber objective (IRLS weights min(1, delta/|r|)), a fixed number of steps from
  every start in one vmap; a step is kept only if the summed Huber objective falls. Returns (x [S, P], f [S])."""

  def obj(x):
    return _objective(resid, x, args, delta, False)

  def one(x0):
    eye = jnp.eye(x0.shape[0], dtype=x0.dtype)

    def body(_, st):
      x, f, lam = st
      g, H = _irls_normal(resid, x, args, delta)
      dx = -jnp.linalg.solve(H + lam * (jnp.diag(jnp.diag(H)) + 1e-9 * eye), g)
      xn = x + dx
      fn = obj(xn)
      ok = jnp.isfinite(fn) & (fn < f)
      return jnp.where(ok, xn, x), jnp.where(ok, fn, f), jnp.clip(jnp.where(ok, lam * 0.3, lam * 10.0), 1e-12, 1e12)

    f0 = obj(x0)
    x, f, _ = jax.lax.fori_loop(
      0, iters, body, (x0, jnp.where(jnp.isfinite(f0), f0, jnp.inf), jnp.asarray(1e-2, x0.dtype))
    )
    return x, f

  return jax.vmap(one)(starts)


@functools.partial(jax.jit, static_argnames=("resid", "delta", "mean", "maxiter"))
def _bfgs_many(resid, starts, args, tol, delta: float, mean: bool, maxiter: int):
  """BFGS (jax.scipy) on the Huber objective from every start in one vmap: (x [S, P], f [S], iterations [S],
  status [S]). ``f`` is **recomputed** at the returned ``x``: after a failed line search jax's BFGS returns a point
  whose objective is not the ``fun`` it reports (the step is taken, the value is the line search's)."""

  def one(x0):
    r = minimize(
      lambda x: _objective(resid, x, args, delta, mean), x0, method="BFGS", tol=tol, options={"maxiter": maxiter}
    )
    f = _objective(resid, r.x, args, delta, mean)
    return r.x, jnp.where(jnp.isfinite(f), f, jnp.inf), r.nit, r.status

  return jax.vmap(one)(starts)


# statuses of a start (jax's BFGS codes, plus two of the LM + polish pipeline)
_STATUS = {
  0: "converged",
  1: "max iterations",
  -1: "LM only (not polished)",
  -2: "LM point (the BFGS polish did not lower it)",
}


def status_text(code: int) -> str:
  """A start's end state: BFGS 0 converged, 1 iteration limit, >= 2 line search failed; -1 / -2 LM pipeline."""
  return _STATUS.get(int(code), f"line search failed (code {int(code)})")


def _multistart(resid, starts, args, *, optimizer, delta, mean, tol, maxiter, lm_iters=100, polish=16, restarts=4):
  """Fit from many starts: 'lm' = Levenberg-Marquardt from all, BFGS polish of the ``polish`` best; 'bfgs' =
  BFGS from all (the reference procedure; its stopping depends on the objective's scale). In 'lm', a polish
  whose line search failed is restarted from where it stopped (fresh curvature), up to ``restarts`` times.

  Returns (x [S, P], f [S], iterations [S], status [S]); every ``f`` is the objective recomputed at its ``x``. A
  polish that ends above its LM start (a failed line search can) is rejected and the LM point kept (status -2).
  """
  starts = jnp.asarray(starts)
  if optimizer == "bfgs":
    return _bfgs_many(resid, starts, args, tol, delta, mean, maxiter)
  if optimizer != "lm":
    raise ValueError(f"optimizer must be 'lm' or 'bfgs', got {optimizer!r}")
  x, f = _lm_many(resid, starts, args, lm_iters, delta)
  scale = 1.0 / args[0].shape[0] if mean else 1.0
  f = f * scale
  order = jnp.argsort(f)[:polish]
  xp, fp, nit, st = _bfgs_many(resid, x[order], args, tol, delta, mean, maxiter)
  for _ in range(restarts):  # a failed line search leaves BFGS's curvature useless: restart from the point reached
    if not bool(jnp.any(st >= 2)):
      break
    xr, fr, nr, sr = _bfgs_many(resid, xp, args, tol, delta, mean, maxiter)
    better = (st >= 2) & (fr <= fp)
    xp, fp = jnp.where(better[:, None], xr, xp), jnp.where(better, fr, fp)
    nit, st = jnp.where(better, nit + nr, nit), jnp.where(better, sr, st)
  keep = fp <= f[order]
  f_all = f.at[order].set(jnp.where(keep, fp, f[order]))
  x_all = x.at[order].set(jnp.where(keep[:, None], xp, x[order]))
  nit_all = jnp.full(f.shape, lm_iters, jnp.int32).at[order].add(nit.astype(jnp.int32))
  st_all = jnp.full(f.shape, -1, jnp.int32).at[order].set(jnp.where(keep, st, -2).astype(jnp.int32))
  return x_all, f_all, nit_all, st_all


class FitError(RuntimeError):
  """An optimizer ended somewhere that is not a fit: a non-finite objective, a reported objective that is not
  the objective at the returned point, or a point that is not stationary."""


DECREASE_TOL = 1e-2


def _newton_decrease(resid, x, args, delta: float, mean: bool):
  """The objective decrease a Gauss-Newton step promises from ``x``: g^T H^+ g / 2 with H = J^T W J (W the Huber
  IRLS weights min(1, delta/|r|)) and H^+ its pseudo-inverse. Unlike the gradient norm it is invariant to the
  parameters' scales (Farseer's exponents and coefficients differ by orders of magnitude), and it is ~0 exactly at
  a minimum (and in flat directions the data do not determine)."""
  g, H = _irls_normal(resid, x, args, delta)
  dec = 0.5 * g @ jnp.linalg.pinv(H, rtol=1e-12) @ g
  return dec / args[0].shape[0] if mean else dec


def _verify(
  what: str, resid, x, args, f_claimed: float, *, delta: float, mean: bool, status: int, strict: bool, stationary=True
):
  """Recompute the objective at the chosen point and fail loudly when the point is not a fit.

  Checks: the objective is finite; it equals the one the fitter reports (|diff| <= 1e-9 + 1e-6 |f|); the point
  is a minimum: the decrease a Gauss-Newton step promises (``_newton_decrease``) is <= ``DECREASE_TOL`` x f +
  1e-15. ``strict=False`` turns the stationarity check into a warning; ``stationary=False`` skips it (a staged
  estimate that no optimizer polished). Returns (f, promised decrease)."""
  with jax.enable_x64(True):
    xj = jnp.asarray(x, jnp.float64)
    f = float(_objective(resid, xj, args, delta, mean))
    dec = float(_newton_decrease(resid, xj, args, delta, mean))
  where = f"{what}: optimizer status {status_text(status)}"
  if not np.isfinite(f):
    raise FitError(f"{where}: the objective at the returned point is not finite ({f}); no start produced a fit")
  if abs(f - f_claimed) > 1e-9 + 1e-6 * abs(f):
    raise FitError(f"{where}: reported objective {f_claimed:.6g} but {f:.6g} at the returned point")
  if stationary and not (dec <= DECREASE_TOL * f + 1e-15):
    msg = (
      f"{where}: not a minimum (objective {f:.6g}; a Gauss-Newton step promises a decrease of {dec:.3g} > "
      f"{DECREASE_TOL:g} x objective)"
    )
    if strict:
      raise FitError(msg + "; pass strict=False to accept it with a warning")
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
  return f, dec


def fit_chinchilla(
  N,
  D,
  L,
  *,
  starts: str | np.ndarray = "hoffmann",
  reduction: str = "sum",
  delta: float = HUBER_DELTA,
  tol: float | None = None,
  maxiter: int = 500,
  optimizer: str = "lm",
  strict: bool = True,
) -> ChinchillaFit:
  r"""Fit L = E + A/N^alpha + B/D^beta by Hoffmann's Approach 3 (float64).

  Args:
    N, D, L: 1-D arrays [n] of model sizes, tokens and final losses (all > 0).
    starts: "hoffmann" (the 4,500-point grid) or an array [S, 5] of (a, b, e, alpha, beta).
    reduction: "sum" (default; Epoch) or "mean" (n times smaller: stops early under absolute tolerances).
    delta: Huber threshold on log-loss residuals.
    tol: BFGS gradient-norm tolerance (default 1e-10; scipy's 1e-5 shows the loss-scale pitfall).
    maxiter: BFGS iterations per start.
    optimizer: "lm" (default: 100 Levenberg-Marquardt steps from every start, all vmapped, then BFGS from the
      16 best: seconds for 4,500 starts) or "bfgs" (BFGS from every start, the reference procedure).
    strict: raise ``FitError`` when the best point is not stationary (``False``: warn).

  Returns a ``ChinchillaFit``; ``fit.objective`` is the objective recomputed at the returned point, on the chosen
  reduction. Raises ``ValueError`` on data that cannot determine the law (no more distinct points than its 5
  parameters, one value of N or D) and ``FitError`` when the optimizer ended at no fit (see ``_verify``).
  """
  N, D, L = _check_table(N, D, L)
  _check_identifiable(N, D, 5, "fit_chinchilla")
  if reduction not in ("sum", "mean"):
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
  if isinstance(starts, str) and starts != "hoffmann":
    raise ValueError(f"starts must be 'hoffmann' or an array of (a, b, e, alpha, beta), got {starts!r}")
  with jax.enable_x64(True):
    x0 = hoffmann_starts() if isinstance(starts, str) else np.asarray(starts, np.float64).reshape(-1, 5)
    args = tuple(jnp.log(jnp.asarray(v)) for v in (N, D, L))
    xs, fs, nit, st = (
      np.asarray(v)
      for v in _multistart(
        _chin_resid,
        x0,
        args,
        optimizer=optimizer,
        delta=delta,
        mean=reduction == "mean",
        tol=1e-10 if tol is None else tol,
        maxiter=maxiter,
      )
    )
    best = int(np.argmin(fs))
    f, gn = _verify(
      "fit_chinchilla",
      _chin_resid,
      xs[best],
      args,
      float(fs[best]),
      delta=delta,
      mean=reduction == "mean",
      status=int(st[best]),
      strict=strict,
    )
  a, b, e, alpha, beta = xs[best]
  if max(a, b, e) > 700:  # exp overflows float64: the data leave that term unbounded
    raise FitError(
      f"fit_chinchilla: a degenerate law (log A = {a:.3g}, log B = {b:.3g}, log E = {e:.3g}, alpha = {alpha:.3g}, "
      f"beta = {beta:.3g}): the data do not determine its terms"
    )
  p = ChinchillaParams.from_log(a, b, e, alpha, beta)
  return ChinchillaFit(p, f, fs, int(nit[best]), status_text(int(st[best])), gn)


def _nnls3(X, y, w):
  """min_c sum w (X c - y)^2 s.t. c >= 0 for 3 columns: enumerate the 8 active sets (branch-free)."""
  best_f, best_c = jnp.inf, jnp.zeros(3)
  for mask in itertools.product([0.0, 1.0], repeat=3):
    m = jnp.asarray(mask)
    Xm = X * m
    G = (Xm * w[:, None]).T @ Xm + jnp.diag(1.0 - m)  # free columns' normal equations; fixed ones pinned to 0
    c = jnp.linalg.solve(G, (Xm * w[:, None]).T @ y) * m
    f = jnp.sum(w * (X @ c - y) ** 2)
    ok = jnp.all(c >= -1e-14) & jnp.isfinite(f)
    take = ok & (f < best_f)
    best_f = jnp.where(take, f, best_f)
    best_c = jnp.where(take, c, best_c)
  return best_f, best_c


def fit_chinchilla_vp(
  N,
  D,
  L,
  *,
  alpha_grid: Sequence[float] | None = None,
  beta_grid: Sequence[float] | None = None,
  weights: str = "inv_loss",
  polish: bool = True,
  refine_steps: int = 3,
) -> ChinchillaFit:
  """Variable projection: for each (alpha, beta) on a grid solve the non-negative weighted least squares for
  (E, A, B) exactly (8 active sets, vmapped), refine around the best cell ``refine_steps`` times (10x finer
  each), then optionally polish with the summed-Huber BFGS objective from that point.

  ``weights="inv_loss"``: residuals divided by L (~ error in log L); ``"none"``: plain squared error.
  Default grids: 0.05..2.0 step 0.01 (about 38k cells).
  """
  N, D, L = _check_table(N, D, L)
  _check_identifiable(N, D, 5, "fit_chinchilla_vp")
  if weights not in ("inv_loss", "none"):
    raise ValueError(f"weights must be 'inv_loss' or 'none', got {weights!r}")
  ag = np.arange(0.05, 2.0001, 0.01) if alpha_grid is None else np.asarray(alpha_grid, np.float64)
  bg = np.arange(0.05, 2.0001, 0.01) if beta_grid is None else np.asarray(beta_grid, np.float64)
  with jax.enable_x64(True):
    n, d, y = jnp.asarray(N), jnp.asarray(D), jnp.asarray(L)
    w = 1.0 / y**2 if weights == "inv_loss" else jnp.ones_like(y)

    @jax.jit
    def profile(al, be):
      def one(a_, b_):
        X = jnp.stack([jnp.ones_like(n), n ** (-a_), d ** (-b_)], axis=1)
        return _nnls3(X, y, w)

      return jax.vmap(one)(al, be)

    A_, B_ = np.meshgrid(ag, bg, indexing="ij")
    f, c = (np.asarray(v) for v in profile(jnp.asarray(A_.ravel()), jnp.asarray(B_.ravel())))
    k = int(np.argmin(f))
    al, be = A_.ravel()[k], B_.ravel()[k]
    step_a = float(np.diff(ag).min()) if len(ag) > 1 else 0.01
    step_b = float(np.diff(bg).min()) if len(bg) > 1 else 0.01
    for _ in range(refine_steps):
      fa = np.linspace(al - step_a, al + step_a, 21)
      fb = np.linspace(be - step_b, be + step_b, 21)
      A_, B_ = np.meshgrid(np.clip(fa, 1e-4, None), np.clip(fb, 1e-4, None), indexing="ij")
      f2, c2 = (np.asarray(v) for v in profile(jnp.asarray(A_.ravel()), jnp.asarray(B_.ravel())))
      k = int(np.argmin(f2))
      al, be, c = A_.ravel()[k], B_.ravel()[k], c2
      f = f2
      step_a, step_b = step_a / 10, step_b / 10
    E, A, B = (max(float(v), 1e-300) for v in c[k])
  p = ChinchillaParams(E, A, B, float(al), float(be))
  if not polish:
    return ChinchillaFit(p, float(f[k]), np.asarray(f))
  lv = p.log_values
  return fit_chinchilla(N, D, L, starts=np.array([[lv["a"], lv["b"], lv["e"], lv["alpha"], lv["beta"]]]))


# ------------------------------------------------------------------------------------------------ Farseer
@dataclasses.dataclass(frozen=True)
class FarseerParams:
  """L = exp(a3 N^gamma + b3) + exp(a2 N^beta + b2) D^(-exp(a1 N^alpha + b1)) (N, D raw counts)."""

  a1: float
  b1: float
  alpha: float
  a2: float
  b2: float
  beta: float
  a3: float
  b3: float
  gamma: float

  def vector(self) -> np.ndarray:
    return np.array(dataclasses.astuple(self), np.float64)


CODE_FARSEER = FarseerParams(-0.0209, -0.1826, 0.1943, 62.8936, -14.0414, -0.0614, -0.0047, -0.8188, 0.239)
"""The code law quoted by a third-party note (a test vector, not a claim about code)."""


def _farseer_log(x, N, logD):
  a1, b1, al, a2, b2, be, a3, b3, ga = (x[i] for i in range(9))
  t1 = a3 * N**ga + b3
  t2 = a2 * N**be + b2 - jnp.exp(a1 * N**al + b1) * logD
  return jnp.logaddexp(t1, t2)


def farseer_predict(p: FarseerParams, N, D) -> np.ndarray:
  """Farseer's L(N, D) (float64)."""
  with jax.enable_x64(True):
    return np.exp(
      np.asarray(
        _farseer_log(jnp.asarray(p.vector()), jnp.asarray(N, jnp.float64), jnp.log(jnp.asarray(D, jnp.float64)))
      )
    )


@dataclasses.dataclass
class FarseerFit:
  """A fitted Farseer law; ``stage1`` holds the per-N (N, A_N, B_N) of the piecewise method; ``status`` and
  ``decrease`` as in ``ChinchillaFit`` (``objective`` is recomputed at the returned point)."""

  params: FarseerParams
  objective: float
  method: str
  stage1: dict[str, np.ndarray] | None = None
  status: str = ""
  decrease: float = float("nan")

  def __getattr__(self, name):
    if name in {f.name for f in dataclasses.fields(FarseerParams)}:
      return getattr(self.params, name)
    raise AttributeError(name)

  def predict(self, N, D):
    return farseer_predict(self.params, N, D)


def _exp_power_fit(N: np.ndarray, y: np.ndarray, grid: np.ndarray) -> tuple[float, float, float]:
  """Fit y = a N^g + b by a 1-D search over g with linear least squares for (a, b); returns (a, b, g)."""
  best = None
  for g in grid:
    if abs(g) < 1e-9:
      continue
    X = np.stack([N**g, np.ones_like(N)], 1)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    r = float(np.sum((X @ coef - y) ** 2))
    if best is None or r < best[0]:
      best = (r, float(coef[0]), float(coef[1]), float(g))
  return best[1], best[2], best[3]


def farseer_stage1(N, D, L, lam: float | None = None) -> dict[str, np.ndarray]:
  """Stage 1 of differential piecewise fitting: per model size, log R_N(D) = log(L(N, D) - L(N, lam D)) is
  linear in log D with slope -A_N and intercept log B_N + log(1 - lam^-A_N). Needs, per N, >= 3 values of D on
  a geometric grid of ratio ``lam`` (inferred when None). Returns {"N", "A", "B"} arrays."""
  N, D, L = _check_table(N, D, L)
  Ns, As, Bs = [], [], []
  for n in np.unique(N):
    sel = N == n
    d, l = D[sel], L[sel]
    order = np.argsort(d)
    d, l = d[order], l[order]
    if len(d) < 3:
      raise ValueError(f"piecewise Farseer needs >= 3 values of D per N; N={n:g} has {len(d)}")
    ratios = d[1:] / d[:-1]
    r = float(np.exp(np.mean(np.log(ratios)))) if lam is None else float(lam)
    if not np.allclose(ratios, r, rtol=1e-6):
      raise ValueError(f"piecewise Farseer needs D on a geometric grid (ratio {r:g}) at N={n:g}; got {d.tolist()}")
    R = l[:-1] - l[1:]
    if np.any(R <= 0):
      raise ValueError(f"loss does not decrease with D at N={n:g}: differential fitting is undefined")
    slope, icpt = np.polyfit(np.log(d[:-1]), np.log(R), 1)
    A = -slope
    Ns.append(n)
    As.append(A)
    Bs.append(math.exp(icpt) / (1.0 - r ** (-A)))
  return {"N": np.array(Ns), "A": np.array(As), "B": np.array(Bs)}


def _farseer_resid(x, N, logD, logL):
  return logL - _farseer_log(x, N, logD)


def _fit_farseer_direct(N, D, L, starts: np.ndarray, delta: float, maxiter: int) -> tuple[np.ndarray, float, int]:
  """Joint Huber fit of the 9 parameters from ``starts``: (x, objective recomputed at x, optimizer status)."""
  with jax.enable_x64(True):
    args = (jnp.asarray(N), jnp.log(jnp.asarray(D)), jnp.log(jnp.asarray(L)))
    xs, fs, _, st = (
      np.asarray(v)
      for v in _multistart(
        _farseer_resid,
        np.asarray(starts, np.float64),
        args,
        optimizer="lm",
        delta=delta,
        mean=False,
        tol=1e-12,
        maxiter=maxiter,
        lm_iters=300,
        polish=min(8, len(starts)),
      )
    )
  k = int(np.argmin(fs))
  return xs[k], float(fs[k]), int(st[k])


FARSEER_MIN_SIZES = 5
FARSEER_MIN_POINTS = 27


def _check_farseer_data(N, D) -> None:
  """Farseer's 9 parameters include three exponents of N (each a N^g + b: 3 parameters over the sizes): refuse
  fewer than 4 sizes (each N-function would interpolate), warn below ``FARSEER_MIN_SIZES`` sizes or
  ``FARSEER_MIN_POINTS`` points (3 per parameter), where the exponents are weakly determined and fits of noisy
  data extrapolate wildly."""
  sizes = len(np.unique(N))
  if sizes < 4:
    raise ValueError(
      f"fit_farseer: the data cannot determine the law: {sizes} model sizes for three 3-parameter functions of N "
      f"(need at least 4; {FARSEER_MIN_SIZES}+ recommended)"
    )
  if sizes < FARSEER_MIN_SIZES or len(N) < FARSEER_MIN_POINTS:
    warnings.warn(
      f"fit_farseer: {len(N)} points over {sizes} sizes for 9 parameters (recommended >= {FARSEER_MIN_POINTS} "
      f"points over >= {FARSEER_MIN_SIZES} sizes): the N-exponents are weakly determined",
      UserWarning,
      stacklevel=3,
    )


def fit_farseer(
  N,
  D,
  L,
  *,
  method: str = "piecewise",
  lam: float | None = None,
  refine: bool = True,
  experimental: bool = False,
  delta: float = HUBER_DELTA,
  maxiter: int = 2000,
  strict: bool = True,
) -> FarseerFit:
  """Fit Farseer's 9-parameter law (float64).

  Args:
    N, D, L: 1-D arrays of model sizes, tokens and losses.
    method: "piecewise" (differential piecewise fitting: stage 1 per size, verified; needs a geometric D grid
      with >= 3 D per N) or "direct" (joint Huber fit on log L from a small grid of starts).
    lam: the D-grid ratio for piecewise (inferred when None).
    refine: polish the experimental piecewise result with the joint fit (started there).
    experimental: run the UNVERIFIED stages 2-3 of the piecewise procedure (off by default: the order of the
      stages is reconstructed from memory of Algorithm 2). ``False`` (default) runs the verified stage 1
      (reported in ``fit.stage1``) and fits the 9 parameters jointly from the direct grid.
    delta: Huber threshold on log-loss residuals.
    strict: raise ``FitError`` when the optimizer's point is not stationary (``False``: warn).

  Raises ``ValueError`` on too little data (<= 9 distinct points or < 4 sizes; warns below 27 points or 5 sizes)
  and ``FitError`` when the optimizer ended at no fit: the reported objective is always the one recomputed at
  the returned parameters.

  Example:
    >>> N = np.repeat(np.geomspace(2e8, 4e9, 5), 6); D = np.tile(2e9 * 2.0 ** np.arange(6), 5)
    >>> fit = fit_farseer(N, D, farseer_predict(CODE_FARSEER, N, D))
    >>> bool(mean_relative_error(fit, N, D, farseer_predict(CODE_FARSEER, N, D)) < 1e-3)
    True
  """
  N, D, L = _check_table(N, D, L)
  _check_identifiable(N, D, 9, "fit_farseer")
  _check_farseer_data(N, D)
  if method not in ("piecewise", "direct"):
    raise ValueError(f"method must be 'piecewise' or 'direct', got {method!r}")
  with jax.enable_x64(True):
    args = (jnp.asarray(N), jnp.log(jnp.asarray(D)), jnp.log(jnp.asarray(L)))

  def done(x, f, how, status, stage1=None, stationary=True):
    with jax.enable_x64(True):
      f, gn = _verify(
        f"fit_farseer({how})",
        _farseer_resid,
        x,
        args,
        f,
        delta=delta,
        mean=False,
        status=status,
        strict=strict,
        stationary=stationary,
      )
    return FarseerFit(FarseerParams(*map(float, x)), f, how, stage1, status_text(status), gn)

  if method == "piecewise" and not experimental:
    stage1 = farseer_stage1(N, D, L, lam)
    x, f, st = _fit_farseer_direct(N, D, L, _farseer_starts(L), delta, maxiter)
    return done(x, f, "piecewise-stage1+direct", st, stage1)
  if method == "piecewise":
    stage1 = farseer_stage1(N, D, L, lam)
    grid = np.concatenate([-np.geomspace(2.0, 1e-3, 80), np.geomspace(1e-3, 2.0, 80)])
    a1, b1, al = _exp_power_fit(stage1["N"], np.log(np.maximum(stage1["A"], 1e-12)), grid)
    a2, b2, be = _exp_power_fit(stage1["N"], np.log(np.maximum(stage1["B"], 1e-300)), grid)
    A_N = np.exp(a1 * N**al + b1)
    rem = L - np.exp(a2 * N**be + b2) * D ** (-A_N)
    Nu = np.unique(N)
    rem_N = np.array([max(float(np.mean(rem[N == n])), 1e-12) for n in Nu])
    a3, b3, ga = _exp_power_fit(Nu, np.log(rem_N), grid)
    x = np.array([a1, b1, al, a2, b2, be, a3, b3, ga])
    with jax.enable_x64(True):
      f = float(jnp.sum(huber(_farseer_resid(jnp.asarray(x), *args), delta)))
    if not refine:
      return done(x, f, "piecewise", -1, stage1, stationary=False)
    xr, fr, st = _fit_farseer_direct(N, D, L, x[None], delta, maxiter)
    if not (np.isfinite(fr) and fr <= f):
      return done(x, f, "piecewise", -2, stage1, stationary=False)
    return done(xr, fr, "piecewise", st, stage1)
  x, f, st = _fit_farseer_direct(N, D, L, _farseer_starts(L), delta, maxiter)
  return done(x, f, "direct", st)


def _farseer_starts(L: np.ndarray) -> np.ndarray:
  """The direct fit's starts: a modest grid of exponents, coefficients from a Chinchilla-like start."""
  starts = []
  for al, be, ga in itertools.product([0.1, 0.3], [-0.1, 0.1], [0.1, 0.3]):
    for b2 in (2.0, 6.0):
      starts.append([0.0, math.log(0.3), al, 0.0, b2, be, 0.0, math.log(float(np.min(L))) * 0.9, ga])
  return np.array(starts)


# ------------------------------------------------------------------------------------------------ allocation
@dataclasses.dataclass(frozen=True)
class Allocation:
  """Compute-optimal model size and tokens at budget C = 6 N D."""

  C: float
  N: float
  D: float

  @property
  def tokens_per_param(self) -> float:
    return self.D / self.N


def _as_law(law):
  return getattr(law, "params", law)


def optimal_allocation(law, C: float, *, ratio_bounds: tuple[float, float] = (1.0, 1e4), n_range=None) -> Allocation:
  r"""Compute-optimal (N, D) for budget C = 6 N D.

  Chinchilla (closed form): G = (alpha A / (beta B))^(1/(alpha+beta)), N = G (C/6)^(beta/(alpha+beta)),
  D = (C/6)^(alpha/(alpha+beta)) / G. Farseer: minimise L(sqrt(C/(6r)), sqrt(C r/6)) over r = D/N in
  ``ratio_bounds`` (a log grid, then golden-section refinement); warns when the optimum sits on a bound or N
  leaves ``n_range`` (the fitted sizes: never extrapolate Farseer far).

  Example:
    >>> round(optimal_allocation(HOFFMANN_ROUNDED, 1e20).tokens_per_param, 1)
    40.1
  """
  law = _as_law(law)
  if not C > 0:
    raise ValueError(f"C must be > 0, got {C}")
  if isinstance(law, ChinchillaParams):
    bad = [f"{k}={getattr(law, k):g}" for k in ("A", "B", "alpha", "beta") if not getattr(law, k) > 0]
    if bad:  # the closed form would be complex or negative: the law has no compute-optimal point
      raise ValueError(f"the law has no compute-optimal allocation: {', '.join(bad)} must be > 0")
    s = law.alpha + law.beta
    G = (law.alpha * law.A / (law.beta * law.B)) ** (1.0 / s)
    N = G * (C / 6.0) ** (law.beta / s)
    return Allocation(C, N, C / (6.0 * N))
  if not isinstance(law, FarseerParams):
    raise TypeError(f"unknown law {type(law).__name__}")
  lo, hi = (math.log(x) for x in ratio_bounds)

  def loss(logr):
    r = np.exp(logr)
    N = np.sqrt(C / (6.0 * r))
    return farseer_predict(law, N, N * r)

  grid = np.linspace(lo, hi, 2001)
  vals = loss(grid)
  k = int(np.nanargmin(vals))
  a, b = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
  g = (math.sqrt(5) - 1) / 2
  for _ in range(80):
    c, d = b - g * (b - a), a + g * (b - a)
    if loss(np.array(c)) < loss(np.array(d)):
      b = d
    else:
      a = c
  r = math.exp((a + b) / 2)
  if k in (0, len(grid) - 1):
    warnings.warn(
      f"Farseer optimum at C={C:g} lies on the D/N bound {r:g}: outside the law's valid range", stacklevel=2
    )
  N = math.sqrt(C / (6.0 * r))
  if n_range is not None and not (n_range[0] <= N <= n_range[1]):
    warnings.warn(f"optimal N={N:g} at C={C:g} is outside the fitted sizes {n_range}", stacklevel=2)
  return Allocation(C, N, N * r)


def mean_relative_error(law, N, D, L) -> float:
  """mean_i |L_hat(N_i, D_i) - L_i| / L_i."""
  law = _as_law(law)
  N, D, L = _check_table(N, D, L)
  pred = chinchilla_predict(law, N, D) if isinstance(law, ChinchillaParams) else farseer_predict(law, N, D)
  return float(np.mean(np.abs(pred - L) / L))


def bootstrap(
  fit_fn: Callable[..., Any], data: tuple, n: int = 4000, seed: int = 42, ci=(0.8, 0.95)
) -> dict[str, Any]:
  """Refit on ``n`` resamples (rows with replacement; numpy seed ``seed``) and report parameter percentiles.

  ``fit_fn(N, D, L)`` returns a fit whose ``params`` is a dataclass of floats. A resample the fitter refuses
  (``ValueError``: e.g. too few distinct points) or cannot fit (``FitError``) is skipped and counted. Returns
  {"samples": {name: [kept]}, "intervals": {level: {name: (lo, hi)}}, "failed": count}; raises ``FitError`` when
  fewer than half the resamples fit.
  """
  N, D, L = _check_table(*data)
  rng = np.random.default_rng(seed)
  rows, failed = [], 0
  for _ in range(n):
    idx = rng.integers(0, len(N), len(N))
    try:
      rows.append(dataclasses.asdict(_as_law(fit_fn(N[idx], D[idx], L[idx]))))
    except (ValueError, FitError):
      failed += 1
  if len(rows) < n / 2:
    raise FitError(f"bootstrap: {failed} of {n} resamples could not be fitted")
  samples = {k: np.array([r[k] for r in rows]) for k in rows[0]}
  intervals = {
    lvl: {k: (float(np.quantile(v, (1 - lvl) / 2)), float(np.quantile(v, (1 + lvl) / 2))) for k, v in samples.items()}
    for lvl in ci
  }
  return {"samples": samples, "intervals": intervals, "failed": failed}
